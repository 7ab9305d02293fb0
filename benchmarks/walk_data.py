"""Follow the data through training: what building a protocol's folds costs in Python calls.

    python benchmarks/walk_data.py [--data-dir DIR] [--outcomes] [PROTOCOL ...]

For each protocol, in a fresh process (so no cache is warm), ``protocol_folds`` (and with
``--outcomes`` also ``with_outcomes``, every model's outcomes as the difficulty estimator
takes them) runs under ``sys.setprofile``, which sees every Python function return. Printed:
the returns of all Python functions (router_ml's and the libraries' it calls), router_ml's own,
the returns of the functions called with the data folder (as given or resolved), the
files of router_ml entered, how often control came back to ``protocols.py``, and each data
file opened with how often. Counts, not times: they do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def walk(protocol: str, data_dir: str | None, outcomes: bool) -> dict:
    from router_ml.learn.protocols import protocol_folds, with_outcomes

    pkg = str(ROOT / "router_ml")
    # the data folder as given and as resolved: a function called with it is a stop
    folder = {str(data_dir), str(Path(data_dir).resolve())} if data_dir else set()
    if not folder:
        from router_ml.learn.sources import resolve_data_dir

        folder = {str(resolve_data_dir()), str(resolve_data_dir().resolve())}
    returns, own, files, back, stops = 0, 0, Counter(), 0, Counter()
    opened = Counter()

    def profile(frame, event, arg):
        nonlocal returns, own, back
        if event != "return":
            return
        returns += 1
        name = frame.f_code.co_filename
        if name.startswith(pkg):
            own += 1
            files[name] += 1
            code = frame.f_code
            args = [frame.f_locals.get(v) for v in code.co_varnames[:code.co_argcount]]
            if any(isinstance(a, (str, Path)) and str(a) in folder for a in args):
                stops[f"{Path(name).name}:{code.co_name}"] += 1
            caller = frame.f_back.f_code.co_filename if frame.f_back else None
            if caller and caller.endswith("protocols.py") and not name.endswith("protocols.py"):
                back += 1

    real_open = builtins.open

    def counting_open(file, *a, **k):
        if isinstance(file, (str, Path)) and "data" in str(file):
            opened[str(file)] += 1
        return real_open(file, *a, **k)

    builtins.open = io.open = counting_open
    sys.setprofile(profile)
    try:
        folds = protocol_folds(protocol, data_dir)
        if outcomes:
            folds = with_outcomes(folds, data_dir=data_dir)
    finally:
        sys.setprofile(None)
        builtins.open = io.open = real_open
    root = str(ROOT) + "/"
    return {"protocol": protocol + (" + outcomes" if outcomes else ""), "returns": returns,
            "router_ml returns": own, "router_ml files": len(files),
            "returns to protocols.py": back,
            "data_dir stops": sum(stops.values()), "stops": dict(stops),
            "data files opened": len(opened),
            "opened more than once": {k.split("/data/")[-1]: v for k, v in opened.items() if v > 1},
            "files": sorted(f.replace(root, "") for f in files)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("protocols", nargs="*", default=["mmlu", "arena-rated"])
    p.add_argument("--data-dir")
    p.add_argument("--outcomes", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)  # the child process's protocol
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(walk(args.one, args.data_dir, args.outcomes)))
        return 0
    for name in args.protocols:
        cmd = [sys.executable, __file__, "--one", name]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        cmd += ["--outcomes"] if args.outcomes else []
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                      cwd=ROOT).stdout.strip().splitlines()[-1])
        print(f"{r['protocol']}: {r['data_dir stops']} returns of the functions called with the "
              f"data folder ({', '.join(f'{k} {v}' for k, v in sorted(r['stops'].items()))})")
        print(f"    {r['returns']:,} returns ({r['router_ml returns']:,} in "
              f"router_ml, {r['router_ml files']} files, {r['returns to protocols.py']} back to "
              f"protocols.py); {r['data files opened']} data files opened, "
              f"{len(r['opened more than once'])} of them more than once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
