"""``router-ml keys``: makes a client key for ``serve --keys`` (its secret printed once, its entry
for the keys file) or hashes a secret (:mod:`router_ml.serve.keys`)."""

from __future__ import annotations

import argparse
import sys

from router_ml.errors import KeysFileError
from router_ml.serve.keys import (
    DEFAULT_MAX_CONCURRENT,
    LIMITS,
    entry_text,
    hash_secret,
    new_secret,
    parse_keys,
)


def keys_parser(prog: str = "router-ml keys") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Client keys for router-ml serve --keys.")
    sub = p.add_subparsers(dest="action", required=True)
    n = sub.add_parser("new", help="make a key: print its secret once and its keys file entry")
    n.add_argument("name", help="the client's name (logged with each of its requests)")
    n.add_argument("--format", choices=["toml", "json", "yaml"], default="toml",
                   help="format of the entry to paste (default %(default)s)")
    n.add_argument("--usd-per-day", type=float, help="budget in USD per UTC day")
    n.add_argument("--usd-per-month", type=float, help="budget in USD per UTC month")
    n.add_argument("--requests-per-minute", type=int)
    n.add_argument("--max-concurrent", type=int, default=DEFAULT_MAX_CONCURRENT,
                   help="requests in flight at once (default %(default)s)")
    sub.add_parser("hash", help="print the sha256 of a secret read from standard input")
    return p


def keys_main(argv=None, prog: str = "router-ml keys") -> int:
    args = keys_parser(prog).parse_args(argv)
    if args.action == "hash":
        secret = sys.stdin.readline().strip()
        if not secret:
            print("error: give the secret on standard input", file=sys.stderr)
            return 2
        print(hash_secret(secret))
        return 0
    secret = new_secret()
    entry = {"name": args.name, "sha256": hash_secret(secret)}
    entry.update({f: getattr(args, f) for f in LIMITS if getattr(args, f) is not None})
    try:  # the same checks as loading the file
        key = parse_keys({"keys": [entry]}, "the new key").keys[0]
    except KeysFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # the secret goes to stdout only: the client's copy; the file keeps its sha256
    print(f"secret (give it to {key.name}; it is not shown again and not stored):\n{secret}\n")
    print(f"keys file entry ({args.format}):\n{entry_text(key, args.format)}", end="")
    return 0


__all__ = ['keys_main', 'keys_parser']
