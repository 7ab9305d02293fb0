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


class KeysFileError(RouterMLError, ValueError):
    """A client keys file (``router-ml serve --keys``) cannot be read or has a bad entry; the
    message names the file and the entry."""


class FetchError(RouterMLError):
    """A data file could not be downloaded or did not match its pinned sha256."""


class RequestError(RouterMLError, ValueError):
    """A request the endpoint refuses with a 400; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class UpstreamError(RouterMLError):
    """An upstream call that failed, described without the upstream's own text (which may echo
    a key or an internal service's reply). ``kind``: ``timeout``, ``connect``, ``server``
    (5xx, 408, 429), ``client`` (other 4xx: the request's fault), ``too_large`` (the answer
    passed the size cap) or ``empty`` (no answer text); ``status``: the HTTP status or None.
    ``counts``: whether it counts against the model's circuit breaker."""

    def __init__(self, kind: str, status: int | None = None, *, counts: bool = True):
        self.kind, self.status, self.counts = kind, status, counts
        super().__init__(f"upstream {kind}" + (f" (HTTP {status})" if status else ""))


class PolicyError(RouterMLError):
    """The policy cannot route or answer a request."""


class RuleConfigError(PolicyError, ValueError):
    """A rules file is malformed; the message names the file and the key."""


class NoCapableModelError(PolicyError, ValueError):
    """No model the policy may call can take the request (its context, tools, images or
    response format): the client's to change."""


class AllModelsFailedError(PolicyError):
    """Every model tried for a request failed; ``decision`` (a
    :class:`router_ml.loop.policy.Decision`) holds the attempts."""

    def __init__(self, message: str, decision):
        super().__init__(message)
        self.decision = decision


class MonitoringError(RouterMLError):
    """A decision log cannot be read or a report cannot be made."""


class LabelingError(RouterMLError):
    """Labels cannot be made or read (a judge's reply without a verdict, a log without prompts)."""


class UnparsedVerdictError(LabelingError, VerdictError):
    """The judge answered without a verdict in the expected form."""


class ResponseTooLargeError(RouterMLError):
    """An upstream answer passed the endpoint's size cap (raised inside the transport, while
    the answer is read; the client gets a 502 and the model's circuit is untouched)."""
