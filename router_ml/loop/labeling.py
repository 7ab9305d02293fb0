"""Labels for your own traffic, and retraining on them.

- :func:`label_prompts` (``router-ml label``): the candidate models answer each prompt and a
  judge grades the answers, either one at a time on 1-10 (``mode="single"``, columns in the
  ``judge10`` scale) or against a baseline model (``mode="pairwise"``: 1 better, 0.5 tie, 0
  worse; the baseline's column is 0.5). Rows are appended to a CSV or JSONL table with a
  ``key`` (sha256 of the prompt), so an interrupted run continues where it stopped and nothing
  is labelled twice; requests are rate-limited and the run stops before a USD budget would be
  passed (cost from the responses' token counts times the prices).
- :func:`rows_from_log` (``router-ml label --from-log``): the quality-sampled requests of a
  decision log as rows (quality of the strongest model = the judge's verdict, of the cheaper
  one = 1 - verdict); the log must keep their prompts (``store_prompts="sampled"``).
- :func:`retrain`: base rows plus labelled rows -> a new router, compared with the current one
  on held-out logged traffic (APGR), both registered in mlflow, alias ``champion`` on the
  winner: the new router only when it is better.

Either table trains a router with ``training/train.py --table FILE --prompt-column prompt
--model-columns a,b --strong a --weak b`` (add ``--scale judge10`` for single grading).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from router_ml.errors import LabelingError, UnparsedVerdictError  # noqa: F401
from router_ml.loop.clients import Completion, Pricer, as_completion
from router_ml.loop.policy import as_messages, conversation_text

SINGLE_PROMPT = """You are grading an assistant's answer to a user's request.
Judge correctness first, then helpfulness, relevance, depth and clarity. Length is not a merit
by itself. Write one or two sentences of reasoning, then the grade on the last line exactly as
"Rating: [[N]]", N an integer from 1 (wrong or useless) to 10 (correct and complete).

[Request]
{question}

[Answer]
{answer}"""

PAIRWISE_PROMPT = """You are comparing two assistants' answers to the same user request.
Judge correctness first, then helpfulness, relevance and clarity. Neither the order of the
answers nor their length may decide. Write one or two sentences of reasoning, then the verdict
on the last line exactly as "[[A]]" if answer A is better, "[[B]]" if answer B is better, or
"[[C]]" for a tie.

[Request]
{question}

[Answer A]
{a}

[Answer B]
{b}"""


def prompt_key(prompt: str) -> str:
    """The row key: sha256 of the stripped prompt (as the evaluation folds use)."""
    return hashlib.sha256(prompt.strip().encode("utf-8")).hexdigest()


class SingleJudge:
    """Grades one answer 1-10 with ``judge_model`` through ``client``: returns (grade, USD)."""

    def __init__(self, client, judge_model: str, prices=None):
        self.client, self.model, self._pricer = client, judge_model, Pricer(prices)

    def __call__(self, messages, answer: str) -> tuple[float, float]:
        c = as_completion(self.client(self.model, [{"role": "user", "content": SINGLE_PROMPT.format(
            question=conversation_text(messages), answer=answer)}]))
        found = re.findall(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]", c.text)
        if not found:
            raise UnparsedVerdictError(f"judge {self.model} gave no 'Rating: [[N]]': {c.text[:200]!r}")
        return min(10.0, max(1.0, float(found[-1]))), self._pricer(self.model, c) or 0.0


class PairwiseJudge:
    """Compares a cheaper answer with the strongest model's: ``judge(messages, cheap, strong)``
    returns {"strong_better": 1 | 0.5 | 0, "verdict", "cost_usd"}. The two answers are shown
    in a random order (``seed``) so the judge's position bias averages out."""

    def __init__(self, client, judge_model: str, prices=None, seed: int | None = 0):
        self.client, self.model, self._pricer = client, judge_model, Pricer(prices)
        self._rng, self._lock = random.Random(seed), threading.Lock()

    def __call__(self, messages, cheap: str, strong: str) -> dict:
        with self._lock:
            swap = self._rng.random() < 0.5
        a, b = (strong, cheap) if swap else (cheap, strong)
        c = as_completion(self.client(self.model, [{"role": "user", "content": PAIRWISE_PROMPT.format(
            question=conversation_text(messages), a=a, b=b)}]))
        found = re.findall(r"\[\[\s*([ABC])\s*\]\]", c.text)
        if not found:
            raise UnparsedVerdictError(f"judge {self.model} gave no [[A]], [[B]] or [[C]]: {c.text[:200]!r}")
        v = found[-1]
        strong_pos = "A" if swap else "B"
        return {"strong_better": 0.5 if v == "C" else float(v == strong_pos),
                "verdict": f"{v} (strong={strong_pos})", "cost_usd": self._pricer(self.model, c)}


class RateLimiter:
    """At most ``rate`` calls per second across threads (None: no limit)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next, self._lock = 0.0, threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


class _Table:
    """An append-only CSV or JSONL table keyed by ``key``; knows the keys already written."""

    def __init__(self, path, columns: list[str]):
        self.path, self.columns = Path(path), ["key", "prompt", *columns]
        if self.path.suffix.lower() not in (".csv", ".jsonl"):
            raise LabelingError(f"{self.path}: write labels to a .csv or .jsonl file")
        self.done: set[str] = set()
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="", encoding="utf-8") as f:
                if self.path.suffix.lower() == ".csv":
                    reader = csv.DictReader(f)
                    if reader.fieldnames != self.columns:
                        raise LabelingError(
                            f"{self.path}: its columns {reader.fieldnames} differ from "
                            f"{self.columns}; resume with the same models or write a new file")
                    self.done = {r["key"] for r in reader}
                else:
                    self.done = {json.loads(line)["key"] for line in f if line.strip()}

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or not self.path.stat().st_size
        with self.path.open("a", newline="", encoding="utf-8") as f:
            if self.path.suffix.lower() == ".csv":
                w = csv.DictWriter(f, self.columns)
                if new:
                    w.writeheader()
                w.writerow({c: "" if row.get(c) is None else row[c] for c in self.columns})
            else:
                f.write(json.dumps({c: row.get(c) for c in self.columns}) + "\n")
        self.done.add(row["key"])


@dataclass(frozen=True)
class LabelSummary:
    """labelled: rows written now; skipped: already in the table; failed: prompts whose calls or
    judge failed (not written, so a rerun tries them again); cost_usd: spent now; stopped:
    why the run ended early (the budget), else None; scale: of the model columns."""

    path: Path
    labelled: int
    skipped: int
    failed: int
    cost_usd: float
    stopped: str | None
    scale: str


def label_prompts(prompts, models, client, judge_model: str, out, *, mode: str = "single",
                  baseline: str | None = None, rate: float | None = None,
                  budget_usd: float | None = None, prices=None, progress: bool = True) -> LabelSummary:
    """Answer each prompt with every model of ``models``, grade with ``judge_model``, append
    rows to ``out`` (.csv or .jsonl). rate: requests per second; budget_usd: stop before the
    next prompt would pass it (at the mean cost per prompt so far)."""
    from tqdm.auto import tqdm

    models = list(models)
    if mode not in ("single", "pairwise"):
        raise ValueError(f"mode must be 'single' or 'pairwise', got {mode!r}")
    if mode == "pairwise" and baseline not in models:
        raise ValueError(f"pairwise labelling needs baseline= one of the models {models}")
    table, limiter, pricer = _Table(out, [*models, "cost_usd"]), RateLimiter(rate), Pricer(prices)
    single = SingleJudge(client, judge_model, prices)
    pair = PairwiseJudge(client, judge_model, prices)
    labelled = skipped = failed = 0
    spent, stopped = 0.0, None
    bar = tqdm(list(prompts), desc="labelling", unit="prompt", disable=not progress)
    for prompt in bar:
        key = prompt_key(prompt)
        if key in table.done:
            skipped += 1
            continue
        if budget_usd is not None and labelled and spent + spent / labelled > budget_usd:
            stopped = f"budget: ${spent:.4f} spent of ${budget_usd:.4f}"
            break
        msgs, cost = as_messages(prompt), 0.0
        try:
            answers = {}
            for m in models:
                limiter.wait()
                c = as_completion(client(m, msgs))
                answers[m], cost = c.text, cost + (pricer(m, c) or 0.0)
            row = {"key": key, "prompt": prompt}
            for m in models:
                limiter.wait()
                if mode == "single":
                    row[m], usd = single(msgs, answers[m])
                elif m == baseline:
                    row[m], usd = 0.5, 0.0
                else:
                    v = pair(msgs, answers[baseline], answers[m])
                    row[m], usd = v["strong_better"], v["cost_usd"] or 0.0
                cost += usd
        except Exception as e:  # one bad prompt must not end a long run; rerun retries it
            failed += 1
            spent += cost
            bar.write(f"failed: {type(e).__name__}: {str(e)[:200]}")
            continue
        row["cost_usd"] = round(cost, 8)
        table.append(row)
        labelled, spent = labelled + 1, spent + cost
        bar.set_postfix_str(f"${spent:.4f}")
    bar.close()
    return LabelSummary(Path(out), labelled, skipped, failed, spent, stopped,
                        "judge10" if mode == "single" else "unit")


def rows_from_log(log, out, since=None, until=None) -> LabelSummary:
    """Quality-sampled, judged requests of a decision log (a DecisionLog or its folder) as rows
    of ``out``: a column per model, the strongest = verdict, the cheaper = 1 - verdict."""
    from router_ml.loop.monitoring import DecisionLog

    log = log if isinstance(log, DecisionLog) else DecisionLog(log)
    rows = [r for r in log.read(since, until) if r["sampled"] and r["strong_better"] is not None]
    with_text = [r for r in rows if r["prompt"]]
    if rows and not with_text:
        raise LabelingError(f"{log.path}: the {len(rows)} sampled requests have no prompt text; "
                            "log with DecisionLog(..., store_prompts='sampled')")
    models = sorted({r["model"] for r in with_text} | {r["sample_model"] for r in with_text})
    table, written = _Table(out, models), 0
    for r in with_text:
        key = prompt_key(r["prompt"])
        if key in table.done:
            continue
        table.append({"key": key, "prompt": r["prompt"], r["sample_model"]: r["strong_better"],
                      r["model"]: 1.0 - r["strong_better"]})
        written += 1
    return LabelSummary(Path(out), written, len(rows) - written, 0, 0.0, None, "unit")


# ---------------------------------------------------------------------------- retraining


@dataclass(frozen=True)
class RetrainResult:
    """APGR of both routers on the same held-out logged rows; mlflow model versions (str);
    promoted: whether alias ``champion`` moved to the new router."""

    promoted: bool
    apgr_new: float
    apgr_current: float
    n_train: int
    n_heldout: int
    new_version: str
    current_version: str
    champion_version: str
    router_dir: Path


def _concat(a, b):
    from router_ml.learn.rows import concat

    return b if a is None else concat([a, b])


def _no_telemetry():
    import contextlib

    @contextlib.contextmanager
    def scope():
        added = "MLFLOW_DISABLE_TELEMETRY" not in os.environ
        if added:
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        try:
            yield
        finally:
            if added:
                os.environ.pop("MLFLOW_DISABLE_TELEMETRY", None)

    return scope()


def retrain(table, *, current, strong: str, weak: str, out, base=None, heldout=None,
            scale: str = "unit", config=None, tracking_uri: str | None = None,
            experiment: str = "router_ml-retrain", model_name: str = "router_ml",
            min_gain: float = 0.0) -> RetrainResult:
    """Train on ``base`` (``labels.Rows`` of the pair, strong first, or None) plus the rows of ``table`` (from
    :func:`label_prompts` or :func:`rows_from_log`), save to ``out``, compare with the router
    directory ``current`` on ``heldout`` (Rows; default: the table's rows with
    fold(prompt) == 0, which are then not trained on) by APGR, log both to mlflow
    (``tracking_uri``; the router directory as artifact ``router``), register them as versions
    of ``model_name`` (the current one only when no ``champion`` exists yet) and point alias
    ``champion`` at the new version only if its APGR beats the current one's by > min_gain."""
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from router_ml.core.router import load_router
    from router_ml.core.metrics import apgr
    from router_ml.learn.rows import pair_data
    from router_ml.learn.tables import load_table
    from router_ml.learn.tracking import Tracker
    from router_ml.learn.training import TrainConfig, fit_router

    rows = pair_data(load_table(table, prompt_column="prompt", model_columns=[strong, weak],
                                scale=scale), strong, weak)
    if heldout is None:
        fold0 = np.array([int(prompt_key(p), 16) % 5 == 0 for p in rows.prompts])
        heldout, rows = rows.subset(fold0), rows.subset(~fold0)
    train = _concat(base, rows)
    router = fit_router(train, config or TrainConfig(extra=()))
    router.save(out)
    old = load_router(current)
    scores = {"new": router.score(heldout.prompts), "current": old.score(heldout.prompts)}
    result = {k: apgr(s, heldout.q_strong, heldout.q_weak) for k, s in scores.items()}
    tracker = Tracker(experiment, tracking_uri=tracking_uri)
    with _no_telemetry():
        client = MlflowClient(tracking_uri=tracker.uri)
        try:
            client.create_registered_model(model_name)
        except MlflowException:  # it exists already
            pass
        try:
            champion = client.get_model_version_by_alias(model_name, "champion").version
        except MlflowException:
            champion = None
    versions = {}
    for name, folder in (("current", Path(current)), ("new", Path(out))):
        if name == "current" and champion is not None:
            versions[name] = str(champion)
            continue
        with tracker.run(f"retrain-{name}", {"role": name, "strong": strong, "weak": weak,
                                             "n_train": len(train), "n_heldout": len(heldout)}) as run:
            run.log_metrics({"heldout_apgr": result[name]})
            run.log_dir(folder, "router")
        with _no_telemetry():
            versions[name] = str(client.create_model_version(
                model_name, source=f"runs:/{run.run_id}/router", run_id=run.run_id).version)
    promoted = result["new"] > result["current"] + min_gain
    winner = versions["new"] if promoted else versions["current"]
    with _no_telemetry():
        client.set_registered_model_alias(model_name, "champion", winner)
    return RetrainResult(promoted, result["new"], result["current"], len(train), len(heldout),
                         versions["new"], versions["current"], winner, Path(out))


# ---------------------------------------------------------------------------- CLI






__all__ = ["Completion", "LabelSummary", "LabelingError", "PAIRWISE_PROMPT", "PairwiseJudge",
           "RateLimiter", "RetrainResult", "SINGLE_PROMPT", "SingleJudge",
           "label_prompts", "prompt_key", "retrain", "rows_from_log"]
