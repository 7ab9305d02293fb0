"""The command lines behind ``training/train.py`` and ``training/evaluate.py``, by their names
of router_ml 0.1: :mod:`~router_ml.cli.train`, :mod:`~router_ml.cli.evaluate` and the reports
they share, :mod:`~router_ml.cli.report`.
"""

from router_ml.cli.evaluate import evaluate_main, evaluate_parser  # noqa: F401
from router_ml.cli.report import *  # noqa: F401,F403
from router_ml.cli.report import (  # noqa: F401
    exit_error,
    plot_curve,
    setup_logging,
)
from router_ml.learn.evaluation import saved_knob as _saved_knob  # noqa: F401 (0.1's name)
from router_ml.cli.train import config_from_args, table_rows, train_main, train_parser  # noqa: F401
