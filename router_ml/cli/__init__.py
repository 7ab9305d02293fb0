"""The ``router-ml`` command: :mod:`~router_ml.cli.main` dispatches; :mod:`~router_ml.cli.train`
and :mod:`~router_ml.cli.evaluate` parse their options and print, with the reports of
:mod:`~router_ml.cli.report`; the work is done in the layers below."""

import warnings


def __getattr__(name):
    # router_ml.cli was one module before the package was laid out in layers; its names stay
    # reachable for one release
    import importlib

    commands = importlib.import_module("router_ml.cli.commands")

    if name.startswith("__") or not hasattr(commands, name):
        raise AttributeError(f"module 'router_ml.cli' has no attribute {name!r}")
    warnings.warn(f"router_ml.cli.{name} moved to router_ml.cli.commands.{name}; the old path "
                  "goes away in the next release", DeprecationWarning, stacklevel=2)
    return getattr(commands, name)
