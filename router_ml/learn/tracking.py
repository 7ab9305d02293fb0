"""Logging training runs to mlflow: parameters, metrics, the curve plot and the saved router.

Where runs go, first match wins:

1. ``Tracker(tracking_uri=...)``;
2. the ``MLFLOW_TRACKING_URI`` environment variable (a tracking server such as
   ``http://127.0.0.1:5000``, or any other URI mlflow accepts);
3. an embedded store inside the project, git-ignored: ``<project>/mlruns/mlflow.db`` (sqlite)
   with artifacts under ``<project>/mlruns/artifacts``. ``<project>`` is the directory holding
   the ``router_ml`` package when that is a source checkout (it has ``pyproject.toml``), else
   the current directory. Browse it with
   ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`` from the project directory.

For any ``sqlite:///<dir>/<file>.db`` store the artifacts of a new experiment go to
``<dir>/artifacts`` (mlflow's own default would be ``./mlruns`` of whatever directory the script
runs in).

Usage (the training script)::

    tracker = Tracker(experiment="router_ml", enabled=not args.no_tracking)
    tracker.check()                       # TrackingError now, not after an hour of training
    with tracker.run("mmlu", params) as run:
        ...train, evaluate, save...
        run.log_metrics(report)           # None and NaN values are skipped
        run.log_artifact("models/mmlu/curve.png")
        run.log_dir("models/mmlu", "router")

A run whose block raises is marked FAILED (KILLED on Ctrl-C) and the exception propagates.
``Tracker(enabled=False)`` turns every call into a no-op that imports nothing and writes nothing.

Nothing happens at import: mlflow (slow to import) is imported by the first call that needs
it, and the environment is never changed for good. Around each of its own mlflow calls the
tracker sets, only where the user has not set them, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and
``MLFLOW_HTTP_REQUEST_TIMEOUT`` (mlflow's defaults, 7 retries with exponential back-off and 120 s
per request, make a dead server hang a run for minutes), ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``
(the run's address is :attr:`TrackedRun.url`; printing is the script's business) and
``MLFLOW_DISABLE_TELEMETRY`` (no usage reports to mlflow.org from a training run), and it hides
mlflow's deprecation warnings and its database-migration log lines. These settings are
process-wide while a call lasts, so use one thread per tracker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import re
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

from router_ml.errors import TrackingError

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent
_HTTP = ("http://", "https://")
_SQLITE = re.compile(r"^sqlite(?:\+\w+)?:///(?P<path>[^?]*)")
# mlflow accepts these characters in metric and parameter names; anything else becomes "_".
_BAD_KEY_CHARS = re.compile(r"[^\w./\- :]+")
_MAX_KEY = 250
_MAX_PARAM_VALUE = 6000
_HEALTH_TIMEOUT = 5  # seconds for GET <uri>/health
# (retries, timeout in s) of mlflow's HTTP requests: in check(), fail fast; in a run, ride out a
# short blip (back-off 2 + 4 + 8 s) and allow slow artifact uploads.
_CHECK_HTTP = ("0", "10")
_RUN_HTTP = ("3", "60")
_QUIET_LOGGERS = ("alembic", "mlflow.store.db.utils")


def project_root() -> Path:
    """The source checkout holding the ``router_ml`` package, else the current directory."""
    root = _PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def default_tracking_uri() -> str:
    """``sqlite:///<project>/mlruns/mlflow.db``: the embedded store used without a server."""
    return f"sqlite:///{(project_root() / 'mlruns' / 'mlflow.db').as_posix()}"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The explicit URI, else ``MLFLOW_TRACKING_URI`` (if set and not empty), else
    :func:`default_tracking_uri`."""
    if tracking_uri:
        return tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or default_tracking_uri()


class Tracker:
    """Logs training runs to one mlflow experiment.

    Parameters
    ----------
    experiment : name of the mlflow experiment, created when missing.
    enabled : False makes every method a no-op (``--no-tracking``).
    tracking_uri : where to log; None means ``MLFLOW_TRACKING_URI`` or the project's store
        (see the module docstring).
    """

    def __init__(self, experiment: str = "router_ml", enabled: bool = True,
                 tracking_uri: str | None = None):
        self.experiment = experiment
        self.enabled = enabled
        self.tracking_uri = tracking_uri
        self._client = None
        self._experiment_id: str | None = None

    def __repr__(self):
        state = f"uri={self.uri!r}" if self.enabled else "disabled"
        return f"Tracker(experiment={self.experiment!r}, {state})"

    @property
    def uri(self) -> str:
        """The tracking URI in use (resolved now; see :func:`resolve_tracking_uri`)."""
        return resolve_tracking_uri(self.tracking_uri)

    def check(self) -> None:
        """Make sure runs can be logged, before any training work: the server answers (a GET
        of ``<uri>/health`` with a 5 s timeout for http(s) URIs), the store opens (the sqlite
        file is created if needed) and the experiment exists or is created.

        Raises TrackingError with what to do otherwise; returns within about 15 s even when
        the server does not answer. A no-op when the tracker is disabled.
        """
        if not self.enabled:
            return
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise ValueError(f"experiment must be a non-empty name, got {self.experiment!r}")
        uri = self.uri
        with _mlflow_scope(*_CHECK_HTTP):
            if uri.startswith(_HTTP):
                self._check_health(uri)
            artifact_root = _sqlite_artifact_root(uri)
            if artifact_root is not None:
                try:
                    artifact_root.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise TrackingError(f"cannot create the mlflow store directory "
                                        f"{artifact_root.parent}: {e}; {_WHAT_TO_DO}") from e
            try:
                from mlflow import MlflowClient

                client = MlflowClient(tracking_uri=uri)
                self._experiment_id = self._get_or_create_experiment(client, artifact_root)
            except TrackingError:
                raise
            except Exception as e:
                raise TrackingError(f"cannot use the mlflow tracking store {_show(uri)} "
                                    f"(experiment {self.experiment!r}): {_first_line(e)}; "
                                    f"{_WHAT_TO_DO}") from e
            self._client = client

    @contextlib.contextmanager
    def run(self, name: str, params: Mapping | None = None) -> Iterator[TrackedRun]:
        """A context manager around one mlflow run named ``name`` that logs ``params`` first
        (see :meth:`TrackedRun.log_params`) and yields the :class:`TrackedRun`.

        The run ends FINISHED when the block completes, FAILED when it raises (KILLED on
        KeyboardInterrupt); the exception propagates. Calls :meth:`check` first if it has not
        succeeded yet, so an unusable store raises TrackingError before the block runs.
        Disabled: yields a TrackedRun whose methods do nothing and whose ``run_id`` is None.
        """
        if not self.enabled:
            yield TrackedRun(None, None, None, None, None)
            return
        if self._client is None:
            self.check()
        uri = self.uri
        with _mlflow_scope(*_RUN_HTTP):
            try:
                info = self._client.create_run(self._experiment_id, run_name=name,
                                               tags=_run_tags()).info
            except Exception as e:
                raise TrackingError(f"cannot start an mlflow run in {_show(uri)}: "
                                    f"{_first_line(e)}; {_WHAT_TO_DO}") from e
        url = (f"{uri.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{info.run_id}"
               if uri.startswith(_HTTP) else None)
        run = TrackedRun(self._client, uri, info.run_id, info.experiment_id, url)
        try:
            if params:
                run.log_params(params)
            yield run
        except BaseException as e:
            run._end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED", strict=False)
            raise
        run._end("FINISHED", strict=True)

    # ------------------------------------------------------------------------- internals

    def _check_health(self, uri: str) -> None:
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        # mlflow's request helper, so TLS and auth settings (MLFLOW_TRACKING_*) apply as they
        # will for the run itself.
        try:
            response = http_request(get_default_host_creds(uri.rstrip("/")), "/health", "GET",
                                    max_retries=0, timeout=_HEALTH_TIMEOUT,
                                    raise_on_status=False)
        except Exception as e:
            raise TrackingError(f"the mlflow tracking server {_show(uri)} is not reachable: "
                                f"{_first_line(e)}; {_WHAT_TO_DO}") from e
        # 4xx (say, a proxy without /health) is left to the API call that follows.
        if response.status_code >= 500:
            raise TrackingError(f"the mlflow tracking server {_show(uri)} answered /health with "
                                f"HTTP {response.status_code}; {_WHAT_TO_DO}")

    def _get_or_create_experiment(self, client, artifact_root: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = artifact_root.as_uri() if artifact_root is not None else None
            try:
                return client.create_experiment(self.experiment, artifact_location=location)
            except MlflowException:
                # Another process created it in between (parallel fold runs).
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise TrackingError(
                f"the mlflow experiment {self.experiment!r} in {_show(self.uri)} is deleted; "
                f"restore it (mlflow experiments restore --experiment-id {exp.experiment_id}) "
                f"or choose another experiment name")
        return exp.experiment_id


class TrackedRun:
    """One mlflow run, as yielded by :meth:`Tracker.run`.

    Attributes: ``run_id`` and ``experiment_id`` (None when tracking is disabled) and ``url``
    (the run's page on a tracking server, None for a local store).
    """

    def __init__(self, client, uri: str | None, run_id: str | None, experiment_id: str | None,
                 url: str | None):
        self._client = client
        self._uri = uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.url = url

    def __repr__(self):
        return f"TrackedRun(run_id={self.run_id!r})"

    def log_params(self, params: Mapping) -> None:
        """Log parameters. Nested mappings are flattened to ``outer.inner`` names; values are
        logged as text (lists and tuples as ``a,b``; None as ``None``), cut to 6,000 characters.
        Names with characters mlflow refuses are cleaned (see :meth:`log_metrics`)."""
        if self._client is None:
            return
        from mlflow.entities import Param

        flat = _flatten(params, "")
        items = [Param(k, _param_text(v)) for k, v in _clean_keys(flat).items()]
        self._call("log parameters", lambda: self._client.log_batch(
            self.run_id, params=items, synchronous=True))

    def log_metrics(self, metrics: Mapping, prefix: str = "", step: int | None = None) -> None:
        """Log numbers (float, int, bool, numpy scalars) under ``prefix + name``.

        None and NaN values are skipped (a metric that does not exist, e.g. CPT(80%) never
        reached); nested mappings are flattened to ``outer.inner``; any other value is a
        TypeError. Characters mlflow refuses in a name become ``_`` (``CPT(50%)`` is logged as
        ``CPT_50``). ``step``: an integer index such as the fold (default 0).
        """
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {}
        for key, v in _flatten(metrics, prefix).items():
            if v is None:
                continue
            if isinstance(v, (str, bytes)) or not (isinstance(v, numbers.Real)
                                                   or getattr(v, "ndim", None) == 0):
                raise TypeError(f"metric {key!r} must be a number (or None), got "
                                f"{type(v).__name__}: {v!r:.80}; log text with log_params")
            f = float(v)
            if not math.isnan(f):
                values[key] = f
        items = [Metric(k, f, now, int(step or 0)) for k, f in _clean_keys(values).items()]
        if items:
            self._call("log metrics", lambda: self._client.log_batch(
                self.run_id, metrics=items, synchronous=True))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload one file (e.g. the curve's PNG) to the run, into folder ``artifact_path``
        (default: the run's artifact root)."""
        if self._client is None:
            return
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"artifact {p} is not a file")
        self._call(f"upload {p}",
                   lambda: self._client.log_artifact(self.run_id, str(p), artifact_path))

    def log_dir(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a directory's contents (e.g. the saved router) to the run, under folder
        ``artifact_path`` (default: the directory's name)."""
        if self._client is None:
            return
        p = Path(path)
        if not p.is_dir():
            raise NotADirectoryError(f"artifact directory {p} is not a directory")
        dest = p.resolve().name if artifact_path is None else artifact_path
        self._call(f"upload {p}",
                   lambda: self._client.log_artifacts(self.run_id, str(p), dest or None))

    # ------------------------------------------------------------------------- internals

    def _call(self, what: str, fn):
        with _mlflow_scope(*_RUN_HTTP):
            try:
                return fn()
            except Exception as e:
                raise TrackingError(f"mlflow could not {what} for run {self.run_id} in "
                                    f"{_show(self._uri)}: {_first_line(e)}") from e

    def _end(self, status: str, strict: bool) -> None:
        try:
            self._call(f"mark the run {status}",
                       lambda: self._client.set_terminated(self.run_id, status=status))
        except TrackingError:
            if strict:
                raise
            # Already failing: do not hide the original exception behind this one.
            logger.warning("could not mark mlflow run %s %s", self.run_id, status, exc_info=True)


# ----------------------------------------------------------------------------- helpers

_WHAT_TO_DO = ("start the server, point MLFLOW_TRACKING_URI at a working one (unset it for the "
               "project's local store), or train with --no-tracking")


@contextlib.contextmanager
def _mlflow_scope(max_retries: str, timeout: str):
    """While mlflow is called: bounded HTTP retries, no URL printing, no telemetry, no
    deprecation warnings or migration log lines from mlflow. User-set variables win; all is
    restored afterwards."""
    defaults = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": max_retries,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": timeout,
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    added = [k for k in defaults if k not in os.environ]
    for k in added:
        os.environ[k] = defaults[k]
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() < logging.WARNING:
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category,
                                        module=r"(mlflow|sqlalchemy|alembic)(\.|$)")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for k in added:
            os.environ.pop(k, None)


def _sqlite_artifact_root(uri: str) -> Path | None:
    """``<dir>/artifacts`` for ``sqlite:///<dir>/<file>``; None for other stores."""
    m = _SQLITE.match(uri)
    if not m or m["path"] in ("", ":memory:"):
        return None
    return Path(m["path"]).resolve().parent / "artifacts"


def _run_tags() -> dict:
    """mlflow's usual source tags (user, script, git commit when it can tell) plus the
    router_ml version, and the project's git commit if mlflow did not find one."""
    tags = {}
    try:
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags({})
    except Exception:  # context tags are a nicety; never fail a run over them
        logger.debug("mlflow context tags unavailable", exc_info=True)
    from router_ml._version import __version__

    tags["router_ml.version"] = __version__
    if "mlflow.source.git.commit" not in tags and (project_root() / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(project_root()), "rev-parse", "HEAD"],
                                 capture_output=True, text=True, timeout=5, check=True)
            tags["mlflow.source.git.commit"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return tags


def _flatten(d: Mapping, prefix: str) -> dict:
    if not isinstance(d, Mapping):
        raise TypeError(f"expected a mapping of names to values, got {type(d).__name__}")
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _clean_keys(d: dict) -> dict:
    out = {}
    for key, v in d.items():
        clean = _BAD_KEY_CHARS.sub("_", key)
        if clean != key:
            clean = clean.strip("_") or "_"
        clean = clean[:_MAX_KEY]
        if clean in out:
            raise ValueError(f"names {key!r} and another one both become {clean!r} in mlflow; "
                             f"rename one")
        out[clean] = v
    return out


def _param_text(v) -> str:
    if isinstance(v, (list, tuple)):
        v = ",".join(str(x) for x in v)
    s = str(v)
    return s if len(s) <= _MAX_PARAM_VALUE else s[: _MAX_PARAM_VALUE - 3] + "..."


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return _show(text.splitlines()[0][:500])


def _show(uri: str | None) -> str:
    """Text with URL passwords masked (``http://user:secret@host`` -> ``http://user:***@host``)."""
    return re.sub(r"(://[^/:@\s]*:)[^/@\s]*@", r"\1***@", uri or "")


__all__ = ["TrackedRun", "Tracker", "default_tracking_uri", "project_root",
           "resolve_tracking_uri"]
