"""The module paths of router_ml 0.1 before the package was laid out in layers, kept importable
for one release: ``import router_ml.router`` still works and warns with a DeprecationWarning
that names the new place. Remove this module (and its finder) in the next release.

Each old module maps to the new modules that took its contents; an old path is a small module
that looks names up in them, in order.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED = {
    "router_ml.router": ("router_ml.core.router", "router_ml.core.prompts", "router_ml.core.heads"),
    "router_ml.persistence": ("router_ml.core.router", "router_ml.core.artifact"),
    "router_ml.encoders": ("router_ml.core.features", "router_ml.core.encoders",
                           "router_ml.core.static", "router_ml.core.transformer"),
    "router_ml.calibration": ("router_ml.core.calibration",),
    "router_ml.coverage": ("router_ml.core.coverage",),
    "router_ml.prior": ("router_ml.core.prior",),
    "router_ml.mlmodel": ("router_ml.core._mlmodel",),
    "router_ml.costs": ("router_ml.core.prices", "router_ml.learn.budget"),
    "router_ml.data": ("router_ml.learn.sources", "router_ml.learn.tables",
                       "router_ml.core.prices", "router_ml.core.prompts"),
    "router_ml.evaluation": ("router_ml.learn.evaluation", "router_ml.core.metrics"),
    "router_ml.labels": ("router_ml.learn.rows",),
    "router_ml.learn.labels": ("router_ml.learn.rows",),
    "router_ml.protocols": ("router_ml.learn.protocols",),
    "router_ml.estimator": ("router_ml.learn.estimator",),
    "router_ml.training": ("router_ml.learn.training",),
    "router_ml.tracking": ("router_ml.learn.tracking",),
    "router_ml.fetch": ("router_ml.learn.fetch",),
    "router_ml.fetch_registry": ("router_ml.learn._fetch_registry",),
    "router_ml.clients": ("router_ml.loop.clients",),
    "router_ml.validators": ("router_ml.loop.validators",),
    "router_ml.policy": ("router_ml.loop.policy",),
    "router_ml.monitoring": ("router_ml.loop.monitoring",),
    "router_ml.labeling": ("router_ml.loop.labeling",),
    "router_ml.serving": ("router_ml.serve.endpoint",),
    "router_ml.scoring": ("router_ml.serve.batch",),
    "router_ml.spark": ("router_ml.serve.spark",),
    "router_ml.mlflow_flavor": ("router_ml.serve.mlflow_flavor",),
    "router_ml.console": ("router_ml.cli.main",),
}


class _Forward(types.ModuleType):
    """An old module path: attribute look-ups go to the new modules, in order."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name, f"Moved to {', '.join(targets)}.")
        self.__targets = targets

    def __getattr__(self, attr: str):
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} (moved to "
                             f"{', '.join(self.__targets)}) has no attribute {attr!r}")

    def __dir__(self):
        return sorted({n for t in self.__targets for n in dir(importlib.import_module(t))})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        targets = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {' and '.join(targets)}; the old path goes away "
                      "in the next release", DeprecationWarning, stacklevel=2)
        if len(targets) == 1:  # the same module object, so patches and isinstance still agree
            return importlib.import_module(targets[0])
        return _Forward(spec.name, targets)

    def exec_module(self, module):
        pass


def install() -> None:
    """Make the old paths importable (called once by ``router_ml/__init__``)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
