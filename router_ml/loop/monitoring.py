"""Watching routed traffic: the decision log, quality sampling, the report and its dashboard.

**Decision log** (:class:`DecisionLog`): SQLite files in WAL mode in one folder, one row per
request in table ``decisions``. Rotation: a new file per period (``rotate`` = ``day``, ``hour``,
``month`` of the request's UTC time, or ``none``) named ``decisions-<period>.sqlite``; a file
that reaches ``max_bytes`` continues in ``decisions-<period>.<k>.sqlite``; only the newest
``keep`` files are kept. Writes are buffered and inserted in batches, each in one
``BEGIN IMMEDIATE`` transaction, so threads sharing a log and processes sharing a folder do
not lose rows (SQLite's lock, ``busy_timeout`` 30 s). Schema (times UTC, money USD):

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
coverage            REAL    the router's coverage, when it gives one
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
judge               TEXT    the judge's raw verdict or error; sample_cost_usd: sampling's cost
=================== ======= ==============================================================

**Report** (:func:`report`, ``router-ml report``): share per model, escalation rate and its
trend, estimated spend against always-strongest, rule/learned coverage, drift of the score
distribution (PSI against reference scores, alert when PSI > 0.2; two-sample KS test) and the
quality given up measured by sampling (Wilson 95 % interval) with its monthly cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import sqlite3
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from router_ml.errors import RouterMLError, UnknownModelError

PSI_ALERT = 0.2  # population stability index above which the score distribution has drifted
COLUMNS = ("ts", "request_id", "prompt_sha256", "prompt", "route", "route_reason", "model",
           "reason", "rule", "score", "threshold", "qualities", "coverage", "cost_usd",
           "strongest_cost_usd", "input_tokens", "output_tokens", "decision_ms", "latency_ms",
           "escalations", "steps", "validator", "validator_message", "error", "feedback",
           "sampled", "answer", "sample_model", "sample_answer", "strong_better", "judge",
           "sample_cost_usd")
_TYPES = {"ts": "REAL NOT NULL", "input_tokens": "INTEGER", "output_tokens": "INTEGER",
          "escalations": "INTEGER", "sampled": "INTEGER"}
_REAL = {"score", "threshold", "coverage", "cost_usd", "strongest_cost_usd", "decision_ms",
         "latency_ms", "feedback", "strong_better", "sample_cost_usd"}
SCHEMA = ("CREATE TABLE IF NOT EXISTS decisions (" + ", ".join(
    f"{c} {_TYPES.get(c, 'REAL' if c in _REAL else 'TEXT')}" for c in COLUMNS) + ");"
    "CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);"
    "CREATE INDEX IF NOT EXISTS decisions_request ON decisions (request_id);")
_PERIODS = {"day": "%Y%m%d", "hour": "%Y%m%d%H", "month": "%Y%m", "none": ""}
_FILE = re.compile(r"^decisions(?:-(\d+))?(?:\.(\d+))?\.sqlite$")


class MonitoringError(RouterMLError):
    """A decision log cannot be read or a report cannot be made."""


def _row(d, store_prompts) -> tuple:
    s = d.sample or {}
    keep_text = store_prompts is True or (store_prompts == "sampled" and bool(s))
    return (d.time, d.request_id, d.prompt_sha256, d.prompt if keep_text else None, d.route,
            d.route_reason, d.model, d.reason, d.rule, d.score, d.threshold,
            json.dumps(d.qualities) if d.qualities is not None else None, d.coverage,
            d.cost_usd, d.strongest_cost_usd, d.input_tokens, d.output_tokens, d.decision_ms,
            d.latency_ms, d.escalations,
            json.dumps([[x.from_model, x.to_model, x.kind, x.message] for x in d.steps]),
            d.validator, d.validator_message, d.error, None, int(bool(s)),
            d.answer if (s or store_prompts is True) else None, s.get("model"), s.get("answer"),
            s.get("strong_better"), s.get("judge"), s.get("cost_usd"))


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
    requests, needed by ``router-ml label --from-log``) or True (every prompt and answer).
    """

    def __init__(self, path, *, rotate: str = "day", max_bytes: int | None = None,
                 keep: int = 30, batch_size: int = 500, store_prompts=False):
        if rotate not in _PERIODS:
            raise ValueError(f"rotate must be one of {', '.join(_PERIODS)}, got {rotate!r}")
        if store_prompts not in (False, True, "sampled"):
            raise ValueError("store_prompts must be False, True or 'sampled'")
        self.path, self.rotate, self.max_bytes = Path(path), rotate, max_bytes
        self.keep, self.batch_size, self.store_prompts = int(keep), int(batch_size), store_prompts
        self._buffer: list = []
        self._lock, self._write_lock = threading.Lock(), threading.Lock()
        self._conns: dict[Path, sqlite3.Connection] = {}

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
            self.flush()

    def flush(self) -> None:
        """Insert every buffered row (one transaction per file)."""
        with self._write_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
            by_file: dict = {}
            for r in rows:
                by_file.setdefault(self._period(r[0]), []).append(r)
            for period, batch in by_file.items():
                con = self._connection(self._current_file(period))
                con.execute("BEGIN IMMEDIATE")
                con.executemany(f"INSERT INTO decisions VALUES ({', '.join('?' * len(COLUMNS))})",
                                batch)
                con.execute("COMMIT")

    def close(self) -> None:
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
            for f in reversed(self.files()):
                con = self._connection(f)
                if con.execute("UPDATE decisions SET feedback = ? WHERE request_id = ?",
                               (float(value), request_id)).rowcount:
                    return True
        return False

    def files(self) -> list[Path]:
        """The log's files, oldest first."""
        found = [(m.group(1) or "", int(m.group(2) or 0), p) for p in self.path.glob("*.sqlite")
                 if (m := _FILE.match(p.name))]
        return [p for *_, p in sorted(found)]

    def read(self, since=None, until=None) -> list[dict]:
        """Rows with since <= ts < until (datetimes, ISO strings or Unix seconds), by time."""
        self.flush()
        lo, hi = _time(since, -np.inf), _time(until, np.inf)
        out = []
        for f in self.files():
            con = sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=30)
            con.row_factory = sqlite3.Row
            try:
                out += [dict(r) for r in con.execute(
                    "SELECT * FROM decisions WHERE ts >= ? AND ts < ? ORDER BY ts", (lo, hi))]
            except sqlite3.DatabaseError as e:
                raise MonitoringError(f"{f}: not a readable decision log ({e})") from None
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
            self.path.mkdir(parents=True, exist_ok=True)
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


def _time(t, default) -> float:
    if t is None:
        return default
    if isinstance(t, (int, float)):
        return float(t)
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t)
    if isinstance(t, dt.datetime):
        return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()
    raise TypeError(f"a time must be a datetime, an ISO string or Unix seconds, got {t!r}")


# ---------------------------------------------------------------------------- quality sampling


class QualitySampler:
    """Sends a share ``rate`` (default 3 %) of the requests answered below the strongest model
    to the strongest one too, and asks ``judge(messages, cheap_answer, strong_answer)`` which
    is better: it returns 1 (strong better), 0.5 (tie) or 0, or a dict with ``strong_better``,
    ``verdict`` and ``cost_usd`` (e.g. :class:`router_ml.loop.labeling.PairwiseJudge`). A failing
    call or judge is recorded on the Decision, never raised. seed: for a reproducible draw."""

    def __init__(self, judge, *, rate: float = 0.03, seed: int | None = None):
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"rate must be a fraction in [0, 1], got {rate!r}")
        self.judge, self.rate = judge, float(rate)
        self._rng, self._lock = random.Random(seed), threading.Lock()

    def maybe_sample(self, decision, messages, call, strongest: str, cost) -> bool:
        with self._lock:
            if self._rng.random() >= self.rate:
                return False
        s = {"model": strongest}
        try:
            c = call(strongest, messages)
            s["answer"], s["cost_usd"] = c.text, cost(strongest, c)
            v = self.judge(messages, decision.answer or "", c.text)
            v = v if isinstance(v, dict) else {"strong_better": float(v)}
            s["strong_better"] = v.get("strong_better")
            s["judge"] = str(v.get("verdict", s["strong_better"]))
            if v.get("cost_usd") is not None:
                s["cost_usd"] = (s["cost_usd"] or 0.0) + v["cost_usd"]
        except Exception as e:  # sampling must never break the request it rides on
            s["judge"] = f"error: {type(e).__name__}: {str(e)[:200]}"
        decision.sample = s
        return True


# ---------------------------------------------------------------------------- report


def psi(reference, current, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's
    quantile bins: sum (c - r) ln(c / r). Below 0.1 stable, 0.1-0.2 moderate, above 0.2 drift."""
    ref, cur = np.asarray(reference, float), np.asarray(current, float)
    inner = _inner_edges(ref, bins)
    r, c = _shares(ref, inner), _shares(cur, inner)
    r, c = np.clip(r, 1e-4, None), np.clip(c, 1e-4, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _inner_edges(ref, bins: int) -> np.ndarray:
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def _shares(x, inner) -> np.ndarray:
    return np.bincount(np.searchsorted(inner, x, side="right"), minlength=len(inner) + 1) / len(x)


def _rows(log, since, until) -> list[dict]:
    if isinstance(log, DecisionLog):
        return log.read(since, until)
    if isinstance(log, (str, Path)):
        if not Path(log).is_dir():
            raise MonitoringError(f"decision log folder {log} does not exist")
        return DecisionLog(log).read(since, until)
    lo, hi = _time(since, -np.inf), _time(until, np.inf)
    return sorted((r for r in log if lo <= r["ts"] < hi), key=lambda r: r["ts"])


def _escalation(ts, esc, buckets: int) -> dict:
    edges = np.linspace(ts[0], ts[-1], buckets + 1) if len(ts) > 1 else np.array([ts[0]] * 2)
    idx = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, buckets - 1)
    out = []
    for b in range(buckets):
        m = idx == b
        out.append({"start": float(edges[b]), "n": int(m.sum()),
                    "rate": float(esc[m].mean()) if m.any() else None})
    last, before = idx == buckets - 1, idx < buckets - 1
    rising = False
    if last.sum() >= 20 and before.sum() >= 20:
        base, now = float(esc[before].mean()), float(esc[last].mean())
        # a rise beyond 5 points and 3 binomial standard errors of the earlier rate
        rising = now - base > max(0.05, 3 * np.sqrt(max(base * (1 - base), 1e-4) / last.sum()))
    return {"rate": float(esc.mean()), "buckets": out, "rising": bool(rising)}


def report(log, since=None, until=None, reference_scores=None, *, prices=None,
           buckets: int = 10, psi_alert: float = PSI_ALERT, requests_per_month=None,
           sample_rate: float | None = None) -> dict:
    """What the decision log says about [since, until): a dict (see the README's example).

    log: a DecisionLog, its folder, or rows as :meth:`DecisionLog.read` returns them.
    reference_scores: the router's scores on its training or calibration prompts; the scores
    of learned decisions are compared with them (PSI over reference deciles, alert above
    ``psi_alert``; KS test). buckets: time buckets of the escalation trend; a last bucket whose
    rate exceeds the earlier ones' by 5 points and 3 standard errors is flagged.
    requests_per_month: traffic for the monthly sampling cost (default: the log's own rate);
    sample_rate: the sampler's rate (default: the share sampled among cheaper answers).
    """
    from scipy import stats

    from router_ml.learn.budget import TrafficProfile, quality_sampling_cost

    rows = _rows(log, since, until)
    n = len(rows)
    if n == 0:
        raise MonitoringError("the decision log holds no decisions in this period")
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    ts = np.array(col("ts"), float)
    share = lambda xs: {k: v / n for k, v in Counter(xs).most_common()}  # noqa: E731
    out = {"n": n, "since": float(ts[0]), "until": float(ts[-1]), "models": share(col("model")),
           "routes": share(col("route")), "reasons": share(col("reason")), "alerts": []}
    cov = [r["coverage"] for r in rows if r["coverage"] is not None]
    out["coverage"] = {"rule": sum(r["route_reason"] == "rule" for r in rows) / n,
                       "learned": sum(r["route_reason"] == "learned" for r in rows) / n,
                       "mean_router_coverage": float(np.mean(cov)) if cov else None}
    esc = np.array([(r["escalations"] or 0) > 0 for r in rows], float)
    out["escalation"] = _escalation(ts, esc, buckets)
    out["escalation"]["fallback_rate"] = sum(r["reason"] == "fallback" for r in rows) / n
    if out["escalation"]["rising"]:
        b = out["escalation"]["buckets"]
        out["alerts"].append(
            f"escalations rose: {100 * b[-1]['rate']:.1f} % of requests in the last period "
            f"against {100 * float(esc[:-b[-1]['n']].mean()):.1f} % before; check the cheap "
            "models' answers and the validators")
    spent = sum(r["cost_usd"] or 0.0 for r in rows)
    strong = sum(r["strongest_cost_usd"] or 0.0 for r in rows)
    out["spend"] = {"usd": spent, "always_strongest_usd": strong, "saving_usd": strong - spent,
                    "saving_pct": 100 * (strong - spent) / strong if strong else None}
    out["drift"] = None
    scores = np.array([r["score"] for r in rows if r["score"] is not None], float)
    if reference_scores is not None and len(scores):
        ref = np.asarray(reference_scores, float)
        inner = _inner_edges(ref, 10)
        ks = stats.ks_2samp(ref, scores)
        value = psi(ref, scores)
        out["drift"] = {"n": len(scores), "psi": value, "psi_alert": psi_alert,
                        "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
                        "drifted": value > psi_alert,
                        "bins": {"inner_edges": inner.tolist(),
                                 "reference": _shares(ref, inner).tolist(),
                                 "current": _shares(scores, inner).tolist()},
                        "mean_score": float(scores.mean()), "mean_reference": float(ref.mean())}
        if value > psi_alert:
            out["alerts"].append(
                f"score drift: PSI {value:.2f} > {psi_alert} against the reference scores "
                f"(mean score {scores.mean():.3f} vs {ref.mean():.3f}; KS p = {ks.pvalue:.2g}); "
                "the traffic no longer looks like the training data: label it and retrain")
    sampled = [r for r in rows if r["sampled"]]
    judged = [r["strong_better"] for r in sampled if r["strong_better"] is not None]
    top = sampled[0]["sample_model"] if sampled else None
    cheaper = sum(r["model"] != top for r in rows) if top else 0
    q = {"n_sampled": len(sampled), "n_judged": len(judged), "strongest": top,
         "strong_better": None, "ci95": None,
         "sampling_usd": sum(r["sample_cost_usd"] or 0.0 for r in sampled),
         "rate": sample_rate if sample_rate is not None else (len(sampled) / cheaper if cheaper else 0.0),
         "sampling_usd_per_month": None}
    if judged:
        k = sum(v == 1.0 for v in judged)
        ci = stats.binomtest(k, len(judged)).proportion_ci(0.95, method="wilson")
        q.update(strong_better=k / len(judged), mean_preference=float(np.mean(judged)),
                 ci95=[float(ci.low), float(ci.high)])
    span = ts[-1] - ts[0]
    rpm = requests_per_month if requests_per_month is not None else (
        n / span * 30 * 86400 if span > 0 else None)
    if top and rpm:
        tin = float(np.mean([r["input_tokens"] or 0 for r in rows]))
        tout = float(np.mean([r["output_tokens"] or 0 for r in rows]))
        try:
            c = quality_sampling_cost(1 - cheaper / n, q["rate"], TrafficProfile(rpm, tin, tout),
                                      prices, strong=top)
            q["sampling_usd_per_month"], q["requests_per_month"] = c.usd_per_month, rpm
        except UnknownModelError as e:
            out["alerts"].append(f"no monthly sampling cost: {e}")
    out["quality"] = q
    return out


def dashboard(rep: dict, path) -> Path:
    """A PNG of a :func:`report`: share per model, escalation rate per time bucket, the score
    distribution against the reference, spend against always-strongest. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), layout="constrained")
    FigureCanvasAgg(fig)
    (a, b), (c, d) = fig.subplots(2, 2)
    names = list(rep["models"])
    a.barh(names, [100 * rep["models"][m] for m in names], color="tab:blue")
    a.set(title=f"share per model ({rep['n']} requests)", xlabel="% of requests")
    bk = [x for x in rep["escalation"]["buckets"] if x["rate"] is not None]
    when = [dt.datetime.fromtimestamp(x["start"], dt.timezone.utc) for x in bk]
    b.plot(when, [100 * x["rate"] for x in bk], marker="o", color="tab:red")
    b.set(title="escalation rate" + (" (RISING)" if rep["escalation"]["rising"] else ""),
          ylabel="% of requests")
    b.tick_params(axis="x", labelrotation=30)
    dr = rep.get("drift")
    if dr:
        x = np.arange(len(dr["bins"]["reference"]))
        c.bar(x - 0.2, dr["bins"]["reference"], 0.4, label="reference")
        c.bar(x + 0.2, dr["bins"]["current"], 0.4, label="logged")
        c.legend()
        c.set(title=f"score deciles of the reference: PSI {dr['psi']:.2f}"
                    + (" (DRIFT)" if dr["drifted"] else ""), xlabel="reference decile",
              ylabel="share")
    else:
        c.text(0.5, 0.5, "no reference scores", ha="center", va="center")
        c.set_axis_off()
    sp = rep["spend"]
    d.bar(["routed", "always strongest"], [sp["usd"], sp["always_strongest_usd"]],
          color=["tab:green", "tab:gray"])
    d.set(title="estimated spend (USD)" + (f", saving {sp['saving_pct']:.0f} %"
                                          if sp["saving_pct"] is not None else ""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def format_report(rep: dict) -> str:
    """The report as text, alerts first."""
    pct = lambda x: "-" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    lines = [f"ALERT: {a}" for a in rep["alerts"]] or ["no alerts"]
    lines += [f"requests          {rep['n']}",
              "models            " + ", ".join(f"{m} {pct(v)}" for m, v in rep["models"].items()),
              f"rules / learned   {pct(rep['coverage']['rule'])} / {pct(rep['coverage']['learned'])}",
              f"escalation rate   {pct(rep['escalation']['rate'])} (fallback "
              f"{pct(rep['escalation']['fallback_rate'])})",
              f"spend             ${rep['spend']['usd']:.4f} vs ${rep['spend']['always_strongest_usd']:.4f} "
              "always strongest"]
    if rep["drift"]:
        lines.append(f"score drift       PSI {rep['drift']['psi']:.3f} (alert > {rep['drift']['psi_alert']}), "
                     f"KS p = {rep['drift']['ks_pvalue']:.3g}")
    q = rep["quality"]
    if q["n_judged"]:
        lines.append(f"quality given up  strongest better on {pct(q['strong_better'])} of "
                     f"{q['n_judged']} sampled requests (95 % CI {pct(q['ci95'][0])} - {pct(q['ci95'][1])})")
    if q["sampling_usd_per_month"] is not None:
        lines.append(f"sampling cost     ${q['sampling_usd_per_month']:,.2f}/month at rate {pct(q['rate'])}")
    return "\n".join(lines)


def _read_scores(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".json":
        return np.asarray(json.loads(path.read_text()), float)
    return np.loadtxt(path, dtype=float, ndmin=1)


def report_main(argv=None) -> int:
    """``router-ml report LOG_DIR``: print the report; --json and --dashboard write it."""
    p = argparse.ArgumentParser(prog="router-ml report", description="Report on a decision "
                                "log: share per model, escalations, spend, drift, sampled quality.")
    p.add_argument("log", type=Path, help="the decision log folder")
    p.add_argument("--since", help="ISO time or Unix seconds (UTC)")
    p.add_argument("--until", help="ISO time or Unix seconds (UTC)")
    p.add_argument("--reference", type=Path, help="reference scores (.npy, .json or text, one "
                   "per line), e.g. the router's scores on its training prompts")
    p.add_argument("--psi-alert", type=float, default=PSI_ALERT)
    p.add_argument("--buckets", type=int, default=10, help="time buckets of the escalation trend")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--dashboard", type=Path, help="write a PNG dashboard here")
    p.add_argument("--fail-on-alert", action="store_true", help="exit 2 when there is an alert")
    args = p.parse_args(argv)
    num = lambda t: float(t) if t and re.fullmatch(r"[\d.]+", t) else t  # noqa: E731
    try:
        ref = _read_scores(args.reference) if args.reference else None
        rep = report(args.log, num(args.since), num(args.until), ref, buckets=args.buckets,
                     psi_alert=args.psi_alert)
    except (RouterMLError, OSError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(format_report(rep))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2) + "\n")
    if args.dashboard:
        print(f"dashboard: {dashboard(rep, args.dashboard)}")
    return 2 if args.fail_on_alert and rep["alerts"] else 0
