"""router_ml: a learned LLM router that sends each prompt to the cheapest model that will do.

    from router_ml import load_router
    router = load_router("models/default")
    router.route("What is 2+2?")   # RoutingDecision(model=..., score=..., threshold=...)
"""

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
from router_ml.persistence import load_router
from router_ml.router import Router, RoutingDecision

__version__ = "0.1.0"

__all__ = [
    "ArtifactError", "ArtifactIntegrityError", "ArtifactVersionError", "CalibrationError",
    "DataFormatError", "DataNotFoundError", "RouterMLError", "Router", "RoutingDecision",
    "TrackingError", "UnknownModelError", "UntrustedTypeError", "load_router", "__version__",
]
