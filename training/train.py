"""Train a router; see --help."""

import sys

from router_ml.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
