"""Install size and time of router_ml's core and of each extra, each in a clean virtualenv.

    python benchmarks/bench_install.py [--extras core,train,embeddings,track,serve,spark]
        [--python python3.11] [--json reports/install.json]

For each target a new venv is created in a temporary folder and ``pip install <project>`` (or
``<project>[extra]``) is run with an empty pip cache, so the time includes downloads (from the
configured index) and the wheel build. Size is the venv's ``site-packages`` after the install
minus that of an empty venv (pip and setuptools themselves are not counted). Prints one row per
target. Needs an index to install from; not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
TARGETS = ("core", "train", "embeddings", "track", "serve", "spark")


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def measure(target: str, python: str, work: Path) -> dict:
    venv = work / f"venv-{target}"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    empty = tree_bytes(site_packages(venv))
    spec = str(PROJECT) if target == "core" else f"{PROJECT}[{target}]"
    env = {**os.environ, "PIP_CACHE_DIR": str(work / f"cache-{target}"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", spec],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"target": target, "error": proc.stderr.strip().splitlines()[-1:]}
    size = tree_bytes(site_packages(venv)) - empty
    listing = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list",
                              "--format=json"], capture_output=True, text=True, check=True)
    n = len(json.loads(listing.stdout))
    # the core promise: loading and routing work with what the core install brings
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import router_ml, sys; r = router_ml.load_router(sys.argv[1]); "
                            "print(r.route('hi').model)", str(PROJECT / "models" / "default")],
                           capture_output=True, text=True, cwd=work)
    return {"target": target, "seconds": round(seconds, 1), "mb": round(size / 1e6, 1),
            "packages": n, "route_ok": check.returncode == 0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--extras", default=",".join(TARGETS))
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = []
    print(f"{'target':<12} {'MB':>8} {'seconds':>8} {'packages':>9}  route works", flush=True)
    with tempfile.TemporaryDirectory(prefix="router-ml-install-") as tmp:
        for target in args.extras.split(","):
            r = measure(target, args.python, Path(tmp))
            rows.append(r)
            if "error" in r:
                print(f"{target:<12} failed: {r['error']}", flush=True)
            else:
                print(f"{target:<12} {r['mb']:>8.1f} {r['seconds']:>8.1f} {r['packages']:>9}  "
                      f"{'yes' if r['route_ok'] else 'NO'}", flush=True)
            subprocess.run(["rm", "-rf", str(Path(tmp) / f"venv-{target}"),
                            str(Path(tmp) / f"cache-{target}")])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
