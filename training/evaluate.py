"""Evaluate a router or a baseline on a protocol; see --help."""

import sys

from router_ml.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
