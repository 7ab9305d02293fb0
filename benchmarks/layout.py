"""The package's shape, in numbers a reader can check: how many modules, the longest, the
private names (a leading underscore) that one module imports from another, and which files a
prompt passes through in ``load_router(...).route(prompt)``.

    python benchmarks/layout.py            # this checkout
    python benchmarks/layout.py --list     # and every private name that crosses modules

Run it on another checkout by putting that checkout first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def modules(pkg: Path) -> dict[str, Path]:
    return {".".join(p.relative_to(pkg.parent).with_suffix("").parts): p
            for p in sorted(pkg.rglob("*.py"))}


def private_crossings(pkg: Path) -> list[tuple[str, str, str]]:
    """(importing file, module, name) for every ``from router_ml... import _name``."""
    out = []
    for p in sorted(pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("router_ml"):
                out += [(str(p.relative_to(pkg.parent)), node.module, a.name) for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def route_files(pkg: Path, model: Path) -> list[str]:
    """The package's files that run while one prompt is routed (after loading)."""
    from router_ml import load_router

    router = load_router(model)
    router.route("warm up the caches")
    seen = []

    def profile(frame, event, arg):
        f = frame.f_code.co_filename
        if event == "call" and f.startswith(str(pkg)) and f not in seen:
            seen.append(f)

    sys.setprofile(profile)
    try:
        router.route("Prove that there are infinitely many primes.")
    finally:
        sys.setprofile(None)
    return [str(Path(f).relative_to(pkg.parent)) for f in seen]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the private names that cross")
    ap.add_argument("--model", type=Path, default=Path(__file__).resolve().parent.parent
                    / "models" / "default")
    args = ap.parse_args(argv)
    import router_ml

    pkg = Path(router_ml.__file__).resolve().parent
    mods = modules(pkg)
    lines = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in mods.items()}
    longest = max(lines, key=lines.get)
    crossings = private_crossings(pkg)
    files = route_files(pkg, args.model)
    print(f"package: {pkg}")
    print(f"modules: {len(mods)}")
    print(f"longest module: {longest} ({lines[longest]} lines)")
    print(f"private names imported across modules: {len(crossings)}")
    if args.list:
        for f, m, n in crossings:
            print(f"  {f}: from {m} import {n}")
    print(f"files entered by route(): {len(files)}: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
