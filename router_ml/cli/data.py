"""``router-ml data``: downloads the public data sources (pinned, sha256-checked) or lists them
(:mod:`router_ml.learn.fetch`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router_ml.errors import FetchError
from router_ml.learn.fetch import default_dest, fetch, instructions, missing, registry


def data_parser(prog: str = "router-ml data") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="The public data sources: download them "
                                "(pinned commits, sha256-checked) or list them.")
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help="download the sources into --dest")
    f.add_argument("--dest", type=Path, help="folder to download into (default: the user "
                   "cache, ~/.cache/router_ml/data on Linux)")
    f.add_argument("--source", help="comma-separated sources (default: all)")
    f.add_argument("--check", action="store_true", help="only report what is missing")
    ls = sub.add_parser("list", help="list the sources, licences and files")
    ls.add_argument("--files", action="store_true", help="also each file's URL and sha256")
    return p


def data_main(argv=None, prog: str = "router-ml data") -> int:
    from router_ml.learn._fetch_registry import SOURCES

    args = data_parser(prog).parse_args(argv)
    entries = registry()
    if args.action == "list":
        for name, s in SOURCES.items():
            n = sum(e.source == name for e in entries)
            print(f"{name}: {n} files from {s['repo']}@{s['commit']} ({s['license']})")
            if args.files:
                for e in entries:
                    if e.source == name:
                        print(f"  {e.path}  {e.url}  sha256:{e.sha256}")
        return 0
    try:
        dest = args.dest or default_dest()
        sources = args.source.split(",") if args.source else None
        chosen = [e for e in entries if not sources or e.source in sources]
        if args.check:
            todo = missing(dest, chosen)
            print(f"{dest}: {len(chosen) - len(todo)} of {len(chosen)} files present")
            if todo:
                print(instructions(dest, todo))
            return 1 if todo else 0
        paths = fetch(dest, sources, progress=sys.stderr.isatty())
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(paths)} files in {dest} (use --data-dir {dest} or ROUTER_ML_DATA={dest})")
    return 0


__all__ = ['data_main', 'data_parser']
