"""``python -m router_ml.cli``: the ``router-ml`` command."""

import sys

from router_ml.cli.main import main

sys.exit(main())
