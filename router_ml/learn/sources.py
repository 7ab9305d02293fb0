"""Labelled prompt/outcome data as Hugging Face ``datasets.Dataset`` records.

Every loader returns a Dataset with these columns:

- ``prompt`` (str): the prompt text, never empty.
- ``source`` (str): where the row comes from (``mmlu``, ``gsm8k``, ``arena-hard``, ``dcrouter``,
  ``alpaca-eval`` or the name of a user file).
- ``group`` (str): the subject or task of the prompt (MMLU subject, dcrouter cluster, AlpacaEval
  sub-source, ...).
- ``quality`` (struct): one float in [0, 1] per model, ``None`` where that model has no valid
  outcome for the prompt. Correctness is 1.0/0.0; a 1-10 judge score ``s`` is mapped to
  ``(s - 1) / 9``; a pairwise preference is P(model beats the baseline) (see
  :func:`load_alpaca_eval`) or a mean win score (see :func:`load_preferences`).
- ``cost`` (struct, only from :func:`load_table` and only when the file has per-model cost
  columns ``<model>|total_cost`` or ``<model>|cost``): the observed cost of each model on the
  prompt, a float >= 0 in the file's unit (RouterBench: USD per prompt), ``None`` where unknown.
  Other loaders do not add it; read it with :func:`cost_matrix`.

Model names. The loaders of the shared sources map their raw names explicitly with
:func:`canonical_model` (``mistralai/Mixtral-8x7B-Instruct-v0.1`` becomes
``Mixtral-8x7B-Instruct-v0.1``) so the same model has one name in every shared source. A user's
file (:func:`load_table`, :func:`load_preferences`) keeps its names exactly as written, minus
surrounding white space: ``openai/gpt-4o`` and ``azure/gpt-4o`` are two models.

Bad rows (empty prompt, a score that is missing, not a number or outside its range) are
skipped or left ``None`` per model and counted in the log; they are never invented. A row is
dropped only when it has no valid score at all. A file that is wrong as a whole (missing
column, unreadable, a scale that does not fit its values) raises :class:`DataFormatError`
naming the file and the column.

Duplicate prompts (identical after stripping white space) within one load are merged:
each model's quality becomes the mean of its valid scores over the duplicates, and source
and group come from the first occurrence in file order. The result is the same whatever the
order of the duplicates.

A user's file is read in memory (Python's csv and json, pyarrow for Parquet); nothing is
copied to a cache.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router_ml.core.prices import canonical_model
from router_ml.errors import DataFormatError, DataNotFoundError
from router_ml.learn.rows import (  # noqa: F401 (cost_matrix, models_of, quality_matrix: their home until 0.2)
    Rows,
    cost_matrix,
    models_of,
    quality_matrix,
    to_dataset,
)

logger = logging.getLogger(__name__)


DATA_ENV = "ROUTER_ML_DATA"


STRONG_MODEL = "gpt-4-1106-preview"


WEAK_MODEL = "Mixtral-8x7B-Instruct-v0.1"


_PROJECT_ROOT = Path(__file__).resolve().parents[2]


_SOURCE_DIRS = ("routellm-evals", "arena-hard-v1", "llmrouter-dcrouter", "alpaca-eval-pairs")


def resolve_data_dir(path: str | os.PathLike | None = None) -> Path:
    """Find the folder that holds the data sources.

    Order: ``path`` if given, else the ``ROUTER_ML_DATA`` environment variable, else a local
    mirror: ``data/`` of the project if it holds a source, then ``../shared/data`` next to the
    project or the current directory.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise DataNotFoundError(f"data folder {p} does not exist")
        return p
    env = os.environ.get(DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DataNotFoundError(f"{DATA_ENV}={env} is not a folder")
        return p
    candidates = [
        _PROJECT_ROOT / "data",
        _PROJECT_ROOT.parent / "shared" / "data",
        Path.cwd() / ".." / "shared" / "data",
    ]
    for c in candidates:
        if any((c / name).is_dir() for name in _SOURCE_DIRS):
            return c.resolve()
    raise DataNotFoundError(
        "no data folder found. Pass --data-dir PATH, or set "
        f"{DATA_ENV}=PATH to a folder holding "
        + ", ".join(f"{name}/" for name in _SOURCE_DIRS) + " (looked in: " + ", ".join(str(c) for c in candidates) + ")"
    )


def source_dir(data_dir, name: str) -> Path:
    """The folder of one data source in the data folder (``data_dir``, else
    :func:`resolve_data_dir`'s)."""
    root = resolve_data_dir() if data_dir is None else Path(data_dir).expanduser()
    d = root / name
    if not d.is_dir():
        if not root.is_dir():
            raise DataNotFoundError(f"data folder {root} does not exist")
        raise DataNotFoundError(f"data source {name!r} not found: {d} does not exist")
    return d


def parse_score(value, *, scale: str = "unit") -> float | None:
    """One score as a float in [0, 1], or None when it is missing or invalid.

    scale: ``"unit"`` takes booleans, ``True``/``False`` strings and numbers in [0, 1];
    ``"judge10"`` takes a 1-10 judge score and maps it to ``(s - 1) / 9``.
    """
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):  # bool is an int
        x = float(value)
    elif isinstance(value, str):
        s = value.strip()
        low = s.lower()
        if low in ("true", "yes"):
            x = 1.0
        elif low in ("false", "no"):
            x = 0.0
        else:
            try:
                x = float(s)
            except ValueError:
                return None
    else:
        return None
    if not math.isfinite(x):
        return None
    if scale == "judge10":
        if not 1.0 <= x <= 10.0:
            return None
        return (x - 1.0) / 9.0
    if not 0.0 <= x <= 1.0:
        return None
    return x


class RecordsBuilder:
    """Collects a source's records, merges duplicate prompts and counts what was skipped;
    :meth:`rows` gives them as :class:`~router_ml.learn.rows.Rows`, :meth:`build` as the
    records Dataset of the public loaders."""

    def __init__(self, what: str):
        self.what = what
        self.records: dict[str, dict] = {}
        self.sums: dict[str, dict[str, list[float]]] = {}
        self.costs: dict[str, dict[str, list[float]]] = {}
        self.skipped: dict[str, int] = {}
        self.bad_scores = 0
        self.duplicates = 0

    def skip(self, reason: str):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add(self, prompt, source: str, group: str, scores: dict[str, float | None],
            costs: dict[str, float | None] | None = None):
        if not isinstance(prompt, str) or not prompt.strip():
            self.skip("empty or missing prompt")
            return
        try:  # a JSON escape can decode to a lone surrogate, which no UTF-8 table can hold
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            self.skip("prompt not valid Unicode (a lone surrogate)")
            return
        self.bad_scores += sum(v is None for v in scores.values())
        valid = {m: v for m, v in scores.items() if v is not None}
        if not valid:
            self.skip("no valid score")
            return
        key = prompt.strip()
        if key in self.records:
            self.duplicates += 1
            acc = self.sums[key]
        else:
            self.records[key] = {"prompt": prompt, "source": source, "group": str(group)}
            acc = self.sums[key] = {}
            self.costs[key] = {}
        for m, v in valid.items():
            acc.setdefault(m, []).append(v)
        for m, c in (costs or {}).items():
            if c is not None:
                self.costs[key].setdefault(m, []).append(c)

    def rows(self, models: Sequence[str], *, with_cost: bool = False) -> Rows:
        """The records as rows, one column per model (its mean over merged duplicates, NaN
        where it has none); ``with_cost`` adds the observed costs the same way."""
        skipped = sum(self.skipped.values())
        bad = skipped - self.skipped.get("contaminated", 0) + self.bad_scores
        if skipped or self.bad_scores or self.duplicates:
            # Expected removals (contaminated prompts, merged duplicates) are info; dirt is a warning.
            logger.log(
                logging.WARNING if bad else logging.INFO,
                "%s: skipped %d rows (%s); %d missing or invalid scores left empty; "
                "%d duplicate prompts merged",
                self.what,
                skipped,
                ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none",
                self.bad_scores,
                self.duplicates,
            )

        def matrix(accs) -> np.ndarray:
            M = np.full((len(accs), len(models)), np.nan)
            for i, acc in enumerate(accs):
                for j, m in enumerate(models):
                    v = acc.get(m)
                    if v:
                        M[i, j] = v[0] if len(v) == 1 else float(np.mean(v))
            return M

        keys = list(self.records)
        out = Rows([self.records[k]["prompt"] for k in keys],
                   matrix([self.sums[k] for k in keys]), tuple(models),
                   np.array([self.records[k]["group"] for k in keys], dtype=object),
                   np.array([self.records[k]["source"] for k in keys], dtype=object),
                   matrix([self.costs[k] for k in keys]) if with_cost else None)
        logger.info("%s: %d records, models: %s", self.what, len(out), ", ".join(models))
        return out

    def build(self, models: Sequence[str], *, with_cost: bool = False):
        """The records Dataset; ``with_cost`` adds the ``cost`` struct (one entry per model)."""
        return to_dataset(self.rows(models, with_cost=with_cost))


def read_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}: line {i} is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}: line {i} is not a JSON object")
            out.append(obj)
    return out


def _contaminated(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {str(o["eval_prompt"]).strip() for o in read_jsonl(path) if "eval_prompt" in o}


def _read_wide_csv(path: Path, models: Sequence[str], prompt_column: str = "prompt"):
    """Yield (prompt, {model: raw value}) from a CSV with a prompt column and model columns."""
    try:
        f = open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for col in [prompt_column, *models]:
            if col not in header:
                raise DataFormatError(
                    f"{path}: missing column {col!r} (columns: {', '.join(header) or 'none'})"
                )
        for row in reader:
            yield row.get(prompt_column), {m: row.get(m) for m in models}


def load_routellm(task: str = "mmlu", data_dir=None):
    """RouteLLM's MMLU or GSM8K correctness of gpt-4-1106-preview and Mixtral-8x7B.

    ``group`` is the MMLU subject (file name without ``mmlu_`` and ``.csv``) or ``gsm8k``.
    Prompts listed in the task's ``contaminated_prompts.jsonl`` are dropped.
    """
    return to_dataset(_routellm(task, source_dir(data_dir, "routellm-evals")))


def _routellm(task: str, folder: Path) -> Rows:
    """:func:`load_routellm`'s records as rows, read from the source's folder."""
    root = folder
    raw_models = ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
    models = [canonical_model(m) for m in raw_models]
    if task == "mmlu":
        files = sorted((root / "mmlu" / "responses").glob("mmlu_*.csv"))
        if not files:
            raise DataNotFoundError(f"no mmlu_*.csv files in {root / 'mmlu' / 'responses'}")
    elif task == "gsm8k":
        files = [root / "gsm8k" / "gsm8k_responses.csv"]
    else:
        raise ValueError(f"task must be 'mmlu' or 'gsm8k', got {task!r}")
    contaminated = _contaminated(root / task / "contaminated_prompts.jsonl")
    b = RecordsBuilder(f"routellm-evals/{task}")
    for path in files:
        group = path.stem[len("mmlu_"):] if task == "mmlu" else "gsm8k"
        for prompt, raw in _read_wide_csv(path, raw_models):
            if isinstance(prompt, str) and prompt.strip() in contaminated:
                b.skip("contaminated")
                continue
            b.add(prompt, task, group,
                  {canonical_model(m): parse_score(v) for m, v in raw.items()})
    return b.rows(models)


def load_arena_hard(data_dir=None):
    """Arena-Hard v1: GPT-4 judge scores (1-10, mapped to (s-1)/9) of 15 models, 300 prompts.

    The model name comes from each row's ``model`` field, not the file name.
    """
    return to_dataset(_arena_hard(source_dir(data_dir, "arena-hard-v1")))


def _arena_hard(folder: Path) -> Rows:
    """:func:`load_arena_hard`'s records as rows, read from the source's folder."""
    root = folder
    qpath = root / "question.jsonl"
    questions = {}
    for i, q in enumerate(read_jsonl(qpath), 1):
        if "question_id" not in q or "turns" not in q:
            raise DataFormatError(f"{qpath}: line {i} lacks 'question_id' or 'turns'")
        turns = q["turns"]
        prompt = turns[0] if isinstance(turns, list) and turns else None
        if isinstance(prompt, dict):  # some releases store {"content": ...}
            prompt = prompt.get("content")
        questions[q["question_id"]] = (prompt, q.get("category", "arena-hard"))
    scores: dict[str, dict[str, float | None]] = {qid: {} for qid in questions}
    models: list[str] = []
    unknown_q = 0
    for path in sorted((root / "model_judgment").glob("*.jsonl")):
        for i, row in enumerate(read_jsonl(path), 1):
            for col in ("question_id", "model"):
                if col not in row:
                    raise DataFormatError(f"{path}: line {i} has no column {col!r}")
            m = canonical_model(row["model"])
            if m not in models:
                models.append(m)
            if row["question_id"] not in scores:
                unknown_q += 1
                continue
            scores[row["question_id"]][m] = parse_score(row.get("score"), scale="judge10")
    if unknown_q:
        logger.warning("arena-hard-v1: %d judgments name an unknown question_id", unknown_q)
    b = RecordsBuilder("arena-hard-v1")
    for qid, (prompt, category) in questions.items():
        b.add(prompt, "arena-hard", category, {m: scores[qid].get(m) for m in models})
    return b.rows(models)


def load_dcrouter(split: str = "train", data_dir=None):
    """LLMRouter's dcrouter data: 0/1 outcomes of 9 open models; ``group`` is the cluster id.

    split: ``train``, ``test`` or ``all``.
    """
    return to_dataset(_dcrouter(split, source_dir(data_dir, "llmrouter-dcrouter")))


def _dcrouter(split: str, folder: Path) -> Rows:
    """:func:`load_dcrouter`'s records as rows, read from the source's folder."""
    root = folder
    splits = {"train": ["train"], "test": ["test"], "all": ["train", "test"]}
    if split not in splits:
        raise ValueError(f"split must be one of {sorted(splits)}, got {split!r}")
    items = []
    for name in splits[split]:
        path = root / f"{name}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataNotFoundError(f"{path} does not exist") from None
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: expected a JSON list of items")
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "question" not in item or "scores" not in item:
                raise DataFormatError(f"{path}: item {i} lacks 'question' or 'scores'")
            items.append(item)
    models: list[str] = []
    for item in items:
        if isinstance(item["scores"], dict):
            for m in item["scores"]:
                if m not in models:
                    models.append(m)
    b = RecordsBuilder(f"llmrouter-dcrouter/{split}")
    for item in items:
        sc = item["scores"] if isinstance(item["scores"], dict) else {}
        b.add(item["question"], "dcrouter", str(item.get("cluster_id", "")),
              {m: parse_score(sc.get(m)) for m in models})
    return b.rows(models)


def load_dcrouter_prices(data_dir=None) -> dict[str, dict[str, float]]:
    """Per-model prices of the dcrouter source: {model: {"input": $/Mtok, "output": $/Mtok}}."""
    path = source_dir(data_dir, "llmrouter-dcrouter") / "llm_candidates.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for name, spec in data.items():
        try:
            out[name] = {"input": float(spec["input_price"]), "output": float(spec["output_price"])}
        except (KeyError, TypeError, ValueError):
            raise DataFormatError(
                f"{path}: model {name!r} lacks a numeric 'input_price' or 'output_price'"
            ) from None
    return out


def load_alpaca_eval(data_dir=None, *, view: str = "tiers"):
    """AlpacaEval: GPT-4-Turbo judge preferences of 66 models against gpt-4-1106-preview.

    801 instructions; ``source`` is ``alpaca-eval`` and ``group`` the AlpacaEval sub-source
    (``dataset`` of ``instructions.jsonl``: selfinstruct, oasst, koala, helpful_base, vicuna).
    Rows of ``preferences.csv`` are matched to ``instructions.jsonl`` on the exact instruction
    text. Each cell is p = P(the column's model beats gpt-4-1106-preview) in [0, 1]; an empty
    cell is a missing quality.

    view:

    - ``"tiers"`` (the ``alpaca-tiers`` protocol): one model per CSV column, named exactly as
      the column (``gpt4`` stays ``gpt4``), quality p; plus the baseline ``gpt-4-1106-preview``
      with quality 0.5 on every row (judged against itself, by construction).
    - ``"pair"`` (the ``alpaca-eval`` pair protocol, docs/protocols.md): only gpt-4-1106-preview
      (strong) and Mixtral-8x7B-Instruct-v0.1 (weak), with quality(strong) = 1 - p and
      quality(weak) = p, p = P(Mixtral better).

    The two views give the same ``strong_better`` labels for the pair but not the same
    qualities (0.5 against 1 - p): use ``"pair"`` for pair protocols. The judge is the strong
    model itself and favours long answers (read the source's README).
    """
    return to_dataset(_alpaca_eval(source_dir(data_dir, "alpaca-eval-pairs"), view))


def _alpaca_eval(folder: Path, view: str) -> Rows:
    """:func:`load_alpaca_eval`'s records as rows, read from the source's folder."""
    if view not in ("tiers", "pair"):
        raise ValueError(f"view must be 'tiers' or 'pair', got {view!r}")
    root = folder
    ipath, ppath = root / "instructions.jsonl", root / "preferences.csv"
    groups: dict[str, str] = {}
    for i, o in enumerate(read_jsonl(ipath), 1):
        if "instruction" not in o or "dataset" not in o:
            raise DataFormatError(f"{ipath}: line {i} lacks 'instruction' or 'dataset'")
        groups.setdefault(str(o["instruction"]), str(o["dataset"]))
    try:
        with open(ppath, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataNotFoundError(f"{ppath}: cannot read ({e.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise DataFormatError(f"{ppath}: cannot read as csv ({e})") from None
    header = [h.strip() for h in rows[0]] if rows else []
    if not header or header[0] != "instruction":
        raise DataFormatError(f"{ppath}: the first column must be 'instruction', found "
                              f"{header[0] if header else 'no header'!r}")
    columns = header[1:]
    if STRONG_MODEL in columns:
        raise DataFormatError(f"{ppath}: column {STRONG_MODEL!r} is the baseline every column "
                              "is judged against; remove it (its quality is 0.5 by construction)")
    if view == "pair" and WEAK_MODEL not in columns:
        raise DataFormatError(f"{ppath}: missing column {WEAK_MODEL!r}, the weak model of the "
                              "pair (use view='tiers' for the other models)")
    models = [STRONG_MODEL, WEAK_MODEL] if view == "pair" else [STRONG_MODEL, *columns]
    b = RecordsBuilder(f"alpaca-eval-pairs/{view}")
    matched, seen = 0, set()
    for row in rows[1:]:
        if not row:
            continue
        if len(row) != len(header):
            b.skip("row with a wrong number of fields")
            continue
        if row[0] not in groups:
            b.skip("instruction not in instructions.jsonl")
            continue
        matched += 1
        seen.add(row[0])
        cells = dict(zip(columns, row[1:]))
        if view == "pair":
            p = parse_score(cells[WEAK_MODEL])
            scores = {STRONG_MODEL: None if p is None else 1.0 - p, WEAK_MODEL: p}
        else:
            scores = {STRONG_MODEL: 0.5, **{m: parse_score(cells[m]) for m in columns}}
        b.add(row[0], "alpaca-eval", groups[row[0]], scores)
    n = max(len(rows) - 1, 0)
    if matched == 0 or matched < n / 2:
        raise DataFormatError(
            f"{ppath}: column 'instruction': only {matched} of {n} rows match an instruction "
            f"of {ipath} exactly; the two files do not line up (restore both from the source)")
    if len(seen) < len(groups):
        logger.warning("alpaca-eval-pairs: %d instructions of %s have no row in %s",
                       len(groups) - len(seen), ipath.name, ppath.name)
    return b.rows(models)


# the sources a protocol reads, by name, each read once per process and data folder
SOURCE_ROWS = ("mmlu", "gsm8k", "arena-hard", "dcrouter", "dcrouter/train", "dcrouter/test",
               "alpaca-eval", "alpaca-tiers")


@functools.lru_cache(maxsize=None)
def read_source(name: str, root: Path) -> Rows:
    """:func:`source_rows` in a data folder already resolved (:func:`resolve_data_dir`):
    read on the first call, the same rows after (shared: the arrays are read-only; the
    prompts are not to be changed, :func:`source_rows` gives its caller a copy)."""
    if name not in SOURCE_ROWS:
        raise ValueError(f"unknown source {name!r}; choose from {', '.join(SOURCE_ROWS)}")
    folder = root / ("routellm-evals" if name in ("mmlu", "gsm8k") else "arena-hard-v1"
                     if name == "arena-hard" else "llmrouter-dcrouter"
                     if name.startswith("dcrouter") else "alpaca-eval-pairs")
    if not folder.is_dir():
        raise DataNotFoundError(f"data source {folder.name!r} not found: {folder} does not exist")
    if name in ("mmlu", "gsm8k"):
        rows = _routellm(name, folder)
    elif name == "arena-hard":
        rows = _arena_hard(folder)
    elif name.startswith("dcrouter"):
        rows = _dcrouter(name.partition("/")[2] or "all", folder)
    else:
        rows = _alpaca_eval(folder, "pair" if name == "alpaca-eval" else "tiers")
    for a in (rows.quality, rows.groups, rows.sources, rows.costs):
        if a is not None:
            a.flags.writeable = False  # shared by every caller of this process
    return rows


def source_rows(name: str, data_dir=None) -> Rows:
    """A named source as :class:`~router_ml.learn.rows.Rows`, every model it has: the names
    of :func:`load_source`, and ``dcrouter/train`` and ``dcrouter/test`` for the dcrouter
    files apart. Read once per process and data folder; the arrays are read-only (``subset``
    and ``select`` give copies), the list of prompts is the caller's own."""
    rows = read_source(name, resolve_data_dir(data_dir).resolve())
    return dataclasses.replace(rows, prompts=list(rows.prompts))


def load_source(name: str, data_dir=None):
    """Load a named source: ``mmlu``, ``gsm8k``, ``arena-hard``, ``dcrouter`` (its train and
    test files), ``alpaca-eval`` (the pair view of :func:`load_alpaca_eval`, for pair
    protocols and extra training rows) or ``alpaca-tiers`` (its tiers view)."""
    names = ("mmlu", "gsm8k", "arena-hard", "dcrouter", "alpaca-eval", "alpaca-tiers")
    if name not in names:
        raise ValueError(f"unknown source {name!r}; choose from {', '.join(names)}")
    return to_dataset(source_rows(name, data_dir))
