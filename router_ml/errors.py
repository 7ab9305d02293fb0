"""Exception classes. Every error router_ml raises on bad input is one of these (or a
TypeError/ValueError from argument checks) and its message says what to do."""


class RouterMLError(Exception):
    """Base class of router_ml's errors."""


class DataNotFoundError(RouterMLError, FileNotFoundError):
    """A data source could not be located."""


class DataFormatError(RouterMLError, ValueError):
    """A data file is wrong as a whole (missing column, unknown model, unreadable)."""


class UnknownModelError(RouterMLError, KeyError):
    """A model name is not in the data or the price table."""

    def __str__(self):  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class OutputPathError(RouterMLError, ValueError):
    """An output cannot go where it was asked to: its folder is missing, or the path holds
    something that is not the kind of output that may be replaced."""


class CalibrationError(RouterMLError, ValueError):
    """A threshold target cannot be met or is malformed."""


class ArtifactError(RouterMLError):
    """A saved router cannot be loaded safely."""


class ArtifactIntegrityError(ArtifactError):
    """A file of the artifact is missing, changed, truncated or outside the directory."""


class ArtifactVersionError(ArtifactError):
    """The artifact's format version is not one this router_ml can read."""


class UntrustedTypeError(ArtifactError):
    """A fitted part holds a type that is not on router_ml's allow-list."""


class TrackingError(RouterMLError):
    """The mlflow tracking server cannot be used."""


class VerdictError(RouterMLError, ValueError):
    """A judge's reply holds no verdict that can be parsed (e.g. ``Sure: answer.``); quality
    sampling records it as ``unparsed`` and the report counts it."""


class ServingError(RouterMLError):
    """The routing endpoint cannot start (no router, no upstream)."""


class FetchError(RouterMLError):
    """A data file could not be downloaded or did not match its pinned sha256."""
