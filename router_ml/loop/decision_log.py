"""The decision log: one row per routed request, in rotated SQLite files.

**Decision log** (:class:`DecisionLog`): SQLite files in WAL mode in one folder, one row per
request in table ``decisions``. Rotation: a new file per period (``rotate`` = ``day``, ``hour``,
``month`` of the request's UTC time, or ``none``) named ``decisions-<period>.sqlite``; a file
that reaches ``max_bytes`` continues in ``decisions-<period>.<k>.sqlite``; only the newest
``keep`` files are kept. Writes are buffered and inserted in batches, each in one
``BEGIN IMMEDIATE`` transaction, so threads sharing a log and processes sharing a folder do
not lose rows (SQLite's lock, ``busy_timeout`` 30 s). With ``flush_seconds`` a background
thread inserts the buffer every that many seconds (or as soon as ``batch_size`` rows wait)
and ``write`` never touches the disk, so a hard kill loses at most the rows of the last
``flush_seconds`` (and never more than one batch plus what arrived during its insert).
Files written by an older version get the newer columns on first use. Schema (times UTC,
money USD):

=================== ======= ==============================================================
column              type    meaning
=================== ======= ==============================================================
ts                  REAL    request time, Unix seconds
request_id          TEXT    the Decision's id (for :meth:`DecisionLog.feedback`)
prompt_sha256       TEXT    sha256 of the routed text (the prompt itself only when asked)
prompt              TEXT    the routed text if ``store_prompts`` (True, or "sampled"), else NULL
route, route_reason TEXT    first choice and why: ``rule`` or ``learned``
model, reason       TEXT    the model that answered; ``rule``/``learned``/``escalated``/``fallback``
rule                TEXT    the matching rule's name
score, threshold    REAL    the learned router's score in [0, 1] and its threshold
qualities           TEXT    JSON {model: predicted quality} when the router gives them
coverage            REAL    1.0 the router counts the prompt as covered, 0.0 not, NULL no signal
cost_usd            REAL    estimated cost of every call made for the request
strongest_cost_usd  REAL    the final answer's tokens priced at the strongest model
input_tokens        INTEGER summed over the calls (output_tokens likewise)
decision_ms         REAL    time to decide (rules + router), latency_ms: the whole request
escalations         INTEGER validator failures that moved the request up; steps: JSON list
validator           TEXT    ``passed``, ``failed`` or ``none``; validator_message: why
error               TEXT    the last provider error (fallback), else NULL
feedback            REAL    the user's feedback, set later by :meth:`DecisionLog.feedback`
sampled             INTEGER 1 when quality sampling sent the request to the strongest model
answer              TEXT    the answer, kept for sampled rows (or with ``store_prompts=True``)
sample_model        TEXT    the strongest model; sample_answer its answer
strong_better       REAL    judge verdict: 1 the strongest model's answer is better, 0.5 tie, 0 worse
judge               TEXT    the judge's raw verdict, ``unparsed: <reply>`` or ``error: ...``;
                            sample_cost_usd: sampling's cost
cost_estimated      INTEGER 1 when a call gave no token counts and its cost is the router's
                            estimate (ceil(characters / 4) input, 256 output tokens)
conversation        TEXT    the conversation's id (the ``x-router-conversation`` header, or a
                            hash of the request's user, system prompt and first user turn)
sticky              INTEGER 1 when the conversation mode overrode the learned choice
capability          TEXT    why the first choice could not take the request (its limits)
client              TEXT    the caller's key's name (``router-ml serve --keys``), else NULL
task                TEXT    the request's task type; task_source ``given`` (its metadata) or
                            ``detected`` (task_similarity: the detector's similarity)
=================== ======= ==============================================================
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sqlite3
import threading
from pathlib import Path

import numpy as np

from router_ml.errors import MonitoringError  # noqa: F401 (raised here, imported from here)
from router_ml.loop.clients import redact

logger = logging.getLogger(__name__)

COLUMNS = ("ts", "request_id", "prompt_sha256", "prompt", "route", "route_reason", "model",
           "reason", "rule", "score", "threshold", "qualities", "coverage", "cost_usd",
           "strongest_cost_usd", "input_tokens", "output_tokens", "decision_ms", "latency_ms",
           "escalations", "steps", "validator", "validator_message", "error", "feedback",
           "sampled", "answer", "sample_model", "sample_answer", "strong_better", "judge",
           "sample_cost_usd", "cost_estimated", "conversation", "sticky", "capability",
           "client", "task", "task_source",
           "task_similarity")  # new columns go last (older files get them added)
_TYPES = {"ts": "REAL NOT NULL", "input_tokens": "INTEGER", "output_tokens": "INTEGER",
          "escalations": "INTEGER", "sampled": "INTEGER", "cost_estimated": "INTEGER",
          "sticky": "INTEGER"}
_REAL = {"score", "threshold", "coverage", "cost_usd", "strongest_cost_usd", "decision_ms",
         "latency_ms", "feedback", "strong_better", "sample_cost_usd", "task_similarity"}
_TYPE = {c: _TYPES.get(c, "REAL" if c in _REAL else "TEXT") for c in COLUMNS}
SCHEMA = ("CREATE TABLE IF NOT EXISTS decisions (" + ", ".join(
    f"{c} {_TYPE[c]}" for c in COLUMNS) + ");"
    "CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);"
    "CREATE INDEX IF NOT EXISTS decisions_request ON decisions (request_id);")
_INSERT = f"INSERT INTO decisions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
SAMPLE_COLUMNS = ("sample_answer", "strong_better", "judge", "sample_cost_usd")
_PERIODS = {"day": "%Y%m%d", "hour": "%Y%m%d%H", "month": "%Y%m", "none": ""}
_FILE = re.compile(r"^decisions(?:-(\d+))?(?:\.(\d+))?\.sqlite$")


def _row(d, store_prompts) -> tuple:
    s = d.sample or {}
    keep_text = store_prompts is True or (store_prompts == "sampled" and bool(s))
    return (d.time, d.request_id, d.prompt_sha256, d.prompt if keep_text else None, d.route,
            d.route_reason, d.model, d.reason, d.rule, d.score, d.threshold,
            json.dumps(d.qualities) if d.qualities is not None else None, d.coverage,
            d.cost_usd, d.strongest_cost_usd, d.input_tokens, d.output_tokens, d.decision_ms,
            d.latency_ms, d.escalations,
            redact(json.dumps([[x.from_model, x.to_model, x.kind, x.message] for x in d.steps])),
            d.validator, redact(d.validator_message), redact(d.error), None, int(bool(s)),
            d.answer if (s or store_prompts is True) else None, s.get("model"), s.get("answer"),
            s.get("strong_better"), s.get("judge"), s.get("cost_usd"),
            int(bool(getattr(d, "cost_estimated", False))), getattr(d, "conversation", None),
            int(bool(getattr(d, "sticky", False))), getattr(d, "capability", None),
            getattr(d, "client", None), getattr(d, "task", None),
            getattr(d, "task_source", None), getattr(d, "task_similarity", None))


def _setup(con: sqlite3.Connection, seconds: float = 30.0) -> None:
    """WAL mode and the schema. Writers opening a new file at once can get "database is
    locked" at once here (SQLite skips the busy handler while the journal mode changes), so
    the setup is retried for up to ``seconds``."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(SCHEMA)
            have = {r[1] for r in con.execute("PRAGMA table_info(decisions)")}
            for c in COLUMNS:
                if c not in have:  # a file of an older version
                    con.execute(f"ALTER TABLE decisions ADD COLUMN {c} {_TYPE[c]}")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class DecisionLog:
    """Decisions in rotated SQLite files under folder ``path`` (see the module docstring).

    rotate: ``day`` (default), ``hour``, ``month`` or ``none``; max_bytes: also start a new
    file when the current one is this large; keep: how many files to keep (oldest deleted);
    batch_size: rows buffered before an insert (``flush``/``close`` write the rest);
    store_prompts: False (only the sha256), ``"sampled"`` (the text of quality-sampled
    requests, needed by ``router-ml label --from-log``) or True (every prompt and answer);
    flush_seconds: None (inserts happen in ``write`` when a batch is full) or seconds > 0
    between inserts by a background thread (``close`` stops it).
    """

    def __init__(self, path, *, rotate: str = "day", max_bytes: int | None = None,
                 keep: int = 30, batch_size: int = 500, store_prompts=False,
                 flush_seconds: float | None = None):
        if rotate not in _PERIODS:
            raise ValueError(f"rotate must be one of {', '.join(_PERIODS)}, got {rotate!r}")
        if store_prompts not in (False, True, "sampled"):
            raise ValueError("store_prompts must be False, True or 'sampled'")
        self.path, self.rotate, self.max_bytes = Path(path), rotate, max_bytes
        self.keep, self.batch_size, self.store_prompts = int(keep), int(batch_size), store_prompts
        if flush_seconds is not None and not float(flush_seconds) > 0:
            raise ValueError(f"flush_seconds must be None or > 0, got {flush_seconds!r}")
        self._buffer: list = []
        self._updates: list = []
        self._lock, self._write_lock = threading.Lock(), threading.Lock()
        self._conns: dict[Path, sqlite3.Connection] = {}
        self.unreadable: list[str] = []
        self.flush_seconds, self._flusher = flush_seconds, None
        self._wake, self._stop = threading.Event(), threading.Event()
        if flush_seconds is not None:
            self._flusher = threading.Thread(target=self._flush_loop, name="decision-log",
                                             daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a full disk must not kill the thread; the next flush retries
                import logging

                logging.getLogger(__name__).exception("decision log flush failed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write(self, decision) -> None:
        """Buffer one Decision; inserts a batch when ``batch_size`` rows are waiting."""
        row = _row(decision, self.store_prompts)
        with self._lock:
            self._buffer.append(row)
            full = len(self._buffer) >= self.batch_size
        if full:
            if self._flusher is not None:
                self._wake.set()
            else:
                self.flush()

    def update(self, request_id: str, values: dict) -> None:
        """Buffer a change of a logged row's columns (e.g. a quality sample's verdict that
        arrives after the row): applied after the next inserts, in the newest file holding
        the row; a row no file holds is left alone."""
        bad = set(values) - set(COLUMNS)
        if bad:
            raise ValueError(f"unknown decision log columns: {', '.join(sorted(bad))}")
        with self._lock:
            self._updates.append((request_id, dict(values)))

    def flush(self) -> None:
        """Insert every buffered row (one transaction per file)."""
        with self._write_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
                updates, self._updates = self._updates, []
            by_file: dict = {}
            for r in rows:
                by_file.setdefault(self._period(r[0]), []).append(r)
            for period, batch in by_file.items():
                con = self._connection(self._current_file(period))
                con.execute("BEGIN IMMEDIATE")
                con.executemany(_INSERT, batch)
                con.execute("COMMIT")
            for request_id, values in updates:
                self._update(request_id, values)

    def _update(self, request_id: str, values: dict) -> bool:
        sets = ", ".join(f"{c} = ?" for c in values)
        for f in reversed(self.files()):
            con = self._connection(f)
            if con.execute(f"UPDATE decisions SET {sets} WHERE request_id = ?",
                           (*values.values(), request_id)).rowcount:
                return True
        return False

    def close(self) -> None:
        """Stop the background flusher (if any), insert what is buffered, close the files."""
        if self._flusher is not None:
            self._stop.set()
            self._wake.set()
            self._flusher.join()
            self._flusher = None
        self.flush()
        with self._write_lock:
            for con in self._conns.values():
                con.close()
            self._conns.clear()

    def feedback(self, request_id: str, value: float) -> bool:
        """Record the user's feedback (a number, e.g. 1 good / 0 bad) on a logged request;
        False when no file holds it."""
        self.flush()
        with self._write_lock:
            return self._update(request_id, {"feedback": float(value)})

    def files(self) -> list[Path]:
        """The log's files, oldest first."""
        found = [(m.group(1) or "", int(m.group(2) or 0), p) for p in self.path.glob("*.sqlite")
                 if (m := _FILE.match(p.name))]
        return [p for *_, p in sorted(found)]

    def read(self, since=None, until=None) -> list[dict]:
        """Rows with since <= ts < until (datetimes, ISO strings or Unix seconds), by time. A
        file that cannot be read is skipped with a warning and named in ``self.unreadable``."""
        self.flush()
        lo, hi = log_time(since, -np.inf), log_time(until, np.inf)
        out = []
        self.unreadable = []
        for f in self.files():
            con = sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=30)
            con.row_factory = sqlite3.Row
            try:
                out += [dict(r) for r in con.execute(
                    "SELECT * FROM decisions WHERE ts >= ? AND ts < ? ORDER BY ts", (lo, hi))]
            except sqlite3.DatabaseError as e:
                if "no such table: decisions" in str(e):
                    continue  # a writer has just created the file and not yet its table
                # a truncated or foreign file loses its own rows, not the folder's
                logger.warning("skipped %s: not a readable decision log (%s)", f, e)
                self.unreadable.append(str(f))
            finally:
                con.close()
        return sorted(out, key=lambda r: r["ts"])

    # ------------------------------------------------------------------ files
    def _period(self, ts: float) -> str:
        fmt = _PERIODS[self.rotate]
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime(fmt) if fmt else ""

    def _current_file(self, period: str) -> Path:
        base = f"decisions-{period}" if period else "decisions"
        ks = [int(m.group(2) or 0) for p in self.path.glob(f"{base}*.sqlite")
              if (m := _FILE.match(p.name)) and (m.group(1) or "") == period]
        k = max(ks, default=0)
        f = self.path / (f"{base}.{k}.sqlite" if k else f"{base}.sqlite")
        if self.max_bytes and f.exists() and _size(f) >= self.max_bytes:
            f = self.path / f"{base}.{k + 1}.sqlite"
        return f

    def _connection(self, f: Path) -> sqlite3.Connection:
        con = self._conns.get(f)
        if con is None:
            new = not f.exists()
            if not self.path.exists():
                # prompts, answers and costs: readable by the service's user only
                self.path.mkdir(parents=True, exist_ok=True)
                os.chmod(self.path, 0o700)
            if new:  # SQLite gives its -wal and -shm files the database file's mode
                os.close(os.open(f, os.O_CREAT | os.O_WRONLY, 0o600))
            con = sqlite3.connect(f, timeout=30, isolation_level=None, check_same_thread=False)
            _setup(con)
            self._conns[f] = con
            if new:
                self._prune()
        return con

    def _prune(self) -> None:
        for f in self.files()[:-self.keep] if self.keep > 0 else []:
            if f in self._conns:
                self._conns.pop(f).close()
            for p in (f, Path(f"{f}-wal"), Path(f"{f}-shm")):
                p.unlink(missing_ok=True)


def _size(f: Path) -> int:
    """Bytes of a database with its write-ahead log (rows sit there until a checkpoint)."""
    wal = Path(f"{f}-wal")
    return f.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def log_time(t, default) -> float:
    if t is None:
        return default
    if isinstance(t, (int, float)):
        return float(t)
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t)
    if isinstance(t, dt.datetime):
        return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()
    raise TypeError(f"a time must be a datetime, an ISO string or Unix seconds, got {t!r}")


__all__ = ["COLUMNS", "SAMPLE_COLUMNS", "SCHEMA", "DecisionLog", "MonitoringError"]
