"""router_ml: a learned LLM router that sends each prompt to the cheapest model that will do.

    from router_ml import load_router
    router = load_router("models/default")
    router.route("What is 2+2?")   # RoutingDecision(model=..., score=..., threshold=...)

The package in layers, each importing only those below it (``tests/test_layout.py``):

- ``core``: what a service loads, numpy only: prompts, features (encoders), the fitted heads,
  prices, the knob (calibration), coverage, the router and its saved artifact;
- ``learn``: data sources and a team's tables, labels, protocols, the scikit-learn estimator,
  training, evaluation, the monthly bill, experiment tracking;
- ``loop``: the production loop: model clients, validators, the policy (rules, escalation,
  fallback), monitoring and labelling;
- ``serve``: ways to run it: the OpenAI-compatible endpoint, batch and Spark scoring, the
  mlflow flavour;
- ``cli``: the ``router-ml`` command.
"""

from router_ml import _moved
from router_ml._version import __version__
from router_ml.core.router import load_router
from router_ml.core.router import Router, RoutingDecision
from router_ml.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    CalibrationError,
    DataFormatError,
    DataNotFoundError,
    RouterMLError,
    TrackingError,
    UnknownModelError,
    UntrustedTypeError,
)

_moved.install()

# saved estimators name these classes under the package (see router_ml.learn.estimator)
_LAZY = {"QualityEstimator": "router_ml.learn.estimator", "ConstantHead": "router_ml.learn.estimator"}


def __getattr__(name):
    if name in _LAZY:  # training classes: scikit-learn is imported only when they are asked for
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'router_ml' has no attribute {name!r}")


def _load_pyfunc(path, model_config=None):
    """mlflow's entry point (an artifact's MLmodel names ``loader_module: router_ml``): the
    router in ``path`` as an mlflow pyfunc model (router_ml.serve.mlflow_flavor)."""
    from router_ml.serve.mlflow_flavor import RouterPyfunc

    return RouterPyfunc(load_router(path))

__all__ = [
    "ArtifactError", "ArtifactIntegrityError", "ArtifactVersionError", "CalibrationError",
    "DataFormatError", "DataNotFoundError", "RouterMLError", "Router", "RoutingDecision",
    "TrackingError", "UnknownModelError", "UntrustedTypeError", "load_router", "__version__",
]
