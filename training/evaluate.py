"""Evaluate a router or a baseline on a protocol; see --help."""

import sys
from pathlib import Path

# run from a source checkout: use its router_ml (outputs default to the checkout's folders)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router_ml.cli.evaluate import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main(root=ROOT))
