"""Labelled prompt/outcome data as Hugging Face ``datasets.Dataset`` records.

Every loader returns a Dataset with these columns:

- ``prompt`` (str): the prompt text, never empty.
- ``source`` (str): where the row comes from (``mmlu``, ``gsm8k``, ``arena-hard``, ``dcrouter``
  or the name of a user file).
- ``group`` (str): the subject or task of the prompt (MMLU subject, dcrouter cluster, ...).
- ``quality`` (struct): one float in [0, 1] per model, ``None`` where that model has no valid
  outcome for the prompt. Correctness is 1.0/0.0; a 1-10 judge score ``s`` is mapped to
  ``(s - 1) / 9``.

Model names drop an organisation prefix (``mistralai/Mixtral-8x7B-Instruct-v0.1`` becomes
``Mixtral-8x7B-Instruct-v0.1``) so the same model has one name in every source.

Bad rows (empty prompt, a score that is missing, not a number or outside its range) are
skipped or left ``None`` per model and counted in the log; they are never invented. A row is
dropped only when it has no valid score at all. A file that is wrong as a whole (missing
column, unreadable) raises :class:`DataFormatError` naming the file and the column.

Duplicate prompts (identical after stripping white space) within one load are merged:
each model's quality becomes the mean of its valid scores over the duplicates, and source
and group come from the first occurrence in file order. The result is the same whatever the
order of the duplicates.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router_ml.errors import DataFormatError, DataNotFoundError, UnknownModelError

logger = logging.getLogger(__name__)

DATA_ENV = "ROUTER_ML_DATA"
STRONG_MODEL = "gpt-4-1106-preview"
WEAK_MODEL = "Mixtral-8x7B-Instruct-v0.1"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def canonical_model(name: str) -> str:
    """The model name without an organisation prefix (text after the last ``/``)."""
    return str(name).strip().rsplit("/", 1)[-1]


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
        if (c / "routellm-evals").is_dir() or (c / "arena-hard-v1").is_dir() or (
            c / "llmrouter-dcrouter"
        ).is_dir():
            return c.resolve()
    raise DataNotFoundError(
        "no data folder found. Pass --data-dir PATH, or set "
        f"{DATA_ENV}=PATH to a folder holding routellm-evals/, arena-hard-v1/ or "
        "llmrouter-dcrouter/ (looked in: " + ", ".join(str(c) for c in candidates) + ")"
    )


def _source_dir(data_dir, name: str) -> Path:
    d = resolve_data_dir(data_dir) / name
    if not d.is_dir():
        raise DataNotFoundError(f"data source {name!r} not found: {d} does not exist")
    return d


# ---------------------------------------------------------------- parsing helpers


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


class _Builder:
    """Collects rows, merges duplicate prompts and counts what was skipped."""

    def __init__(self, what: str):
        self.what = what
        self.rows: dict[str, dict] = {}
        self.sums: dict[str, dict[str, list[float]]] = {}
        self.skipped: dict[str, int] = {}
        self.bad_scores = 0
        self.duplicates = 0

    def skip(self, reason: str):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add(self, prompt, source: str, group: str, scores: dict[str, float | None]):
        if not isinstance(prompt, str) or not prompt.strip():
            self.skip("empty or missing prompt")
            return
        self.bad_scores += sum(v is None for v in scores.values())
        valid = {m: v for m, v in scores.items() if v is not None}
        if not valid:
            self.skip("no valid score")
            return
        key = prompt.strip()
        if key in self.rows:
            self.duplicates += 1
            acc = self.sums[key]
        else:
            self.rows[key] = {"prompt": prompt, "source": source, "group": str(group)}
            acc = self.sums[key] = {}
        for m, v in valid.items():
            acc.setdefault(m, []).append(v)

    def build(self, models: Sequence[str]):
        import datasets

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
        records = {"prompt": [], "source": [], "group": [], "quality": []}
        for key, row in self.rows.items():
            acc = self.sums[key]
            records["prompt"].append(row["prompt"])
            records["source"].append(row["source"])
            records["group"].append(row["group"])
            records["quality"].append(
                {m: (None if m not in acc else acc[m][0] if len(acc[m]) == 1
                     else float(np.mean(acc[m]))) for m in models}
            )
        features = datasets.Features(
            {
                "prompt": datasets.Value("string"),
                "source": datasets.Value("string"),
                "group": datasets.Value("string"),
                "quality": {m: datasets.Value("float64") for m in models},
            }
        )
        ds = datasets.Dataset.from_dict(records, features=features)
        logger.info("%s: %d records, models: %s", self.what, len(ds), ", ".join(models))
        return ds


def models_of(ds) -> list[str]:
    """The model names of a records Dataset."""
    return list(ds.features["quality"].keys())


def quality_matrix(ds, models: Sequence[str] | None = None) -> np.ndarray:
    """(n_records, n_models) float64 array of qualities in [0, 1], NaN where missing."""
    known = models_of(ds)
    models = list(models) if models is not None else known
    for m in models:
        if m not in known:
            raise UnknownModelError(f"unknown model {m!r}; known models: {', '.join(known)}")
    # The arrow view honours a selection of rows; pyarrow turns nulls into NaN for floats.
    quality = ds.with_format("arrow")["quality"].combine_chunks()
    cols = [quality.field(m).to_numpy(zero_copy_only=False).astype(np.float64) for m in models]
    return np.stack(cols, axis=1) if cols else np.zeros((len(ds), 0))


# ---------------------------------------------------------------- routellm-evals


def _read_jsonl(path: Path) -> list[dict]:
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
    return {str(o["eval_prompt"]).strip() for o in _read_jsonl(path) if "eval_prompt" in o}


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
    root = _source_dir(data_dir, "routellm-evals")
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
    b = _Builder(f"routellm-evals/{task}")
    for path in files:
        group = path.stem[len("mmlu_"):] if task == "mmlu" else "gsm8k"
        for prompt, raw in _read_wide_csv(path, raw_models):
            if isinstance(prompt, str) and prompt.strip() in contaminated:
                b.skip("contaminated")
                continue
            b.add(prompt, task, group,
                  {canonical_model(m): parse_score(v) for m, v in raw.items()})
    return b.build(models)


# ---------------------------------------------------------------- arena-hard-v1


def load_arena_hard(data_dir=None):
    """Arena-Hard v1: GPT-4 judge scores (1-10, mapped to (s-1)/9) of 15 models, 300 prompts.

    The model name comes from each row's ``model`` field, not the file name.
    """
    root = _source_dir(data_dir, "arena-hard-v1")
    qpath = root / "question.jsonl"
    questions = {}
    for i, q in enumerate(_read_jsonl(qpath), 1):
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
        for i, row in enumerate(_read_jsonl(path), 1):
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
    b = _Builder("arena-hard-v1")
    for qid, (prompt, category) in questions.items():
        b.add(prompt, "arena-hard", category, {m: scores[qid].get(m) for m in models})
    return b.build(models)


# ---------------------------------------------------------------- llmrouter-dcrouter


def load_dcrouter(split: str = "train", data_dir=None):
    """LLMRouter's dcrouter data: 0/1 outcomes of 9 open models; ``group`` is the cluster id.

    split: ``train``, ``test`` or ``all``.
    """
    root = _source_dir(data_dir, "llmrouter-dcrouter")
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
    b = _Builder(f"llmrouter-dcrouter/{split}")
    for item in items:
        sc = item["scores"] if isinstance(item["scores"], dict) else {}
        b.add(item["question"], "dcrouter", str(item.get("cluster_id", "")),
              {m: parse_score(sc.get(m)) for m in models})
    return b.build(models)


def load_dcrouter_prices(data_dir=None) -> dict[str, dict[str, float]]:
    """Per-model prices of the dcrouter source: {model: {"input": $/Mtok, "output": $/Mtok}}."""
    path = _source_dir(data_dir, "llmrouter-dcrouter") / "llm_candidates.json"
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


# ---------------------------------------------------------------- the user's own logs


def load_table(
    path,
    *,
    prompt_column: str = "prompt",
    model_columns: Sequence[str] | None = None,
    group_column: str | None = None,
    scale: str = "unit",
    source: str | None = None,
    cache_dir=None,
):
    """A user's CSV, JSONL or Parquet file: a prompt column and one score column per model.

    model_columns: the score columns; by default every column except the prompt and group.
    scale: ``unit`` (0/1, booleans or fractions in [0, 1]) or ``judge10`` (1-10 scores).
    A file with no rows, or whose rows all lack a prompt or a valid score, raises
    :class:`DataFormatError`.
    cache_dir: where ``datasets`` may keep its Arrow copy of the file; by default none is kept
    (it is read through a temporary folder, removed at once, and held in memory).
    """
    import tempfile

    import datasets

    if scale not in ("unit", "judge10"):
        raise ValueError(f"scale must be 'unit' or 'judge10', got {scale!r}")
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    builders = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
    if suffix not in builders:
        raise DataFormatError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl or .parquet")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty; expected a {prompt_column!r} column "
                              "and one score column per model")
    try:
        # keep_default_na=False keeps an empty prompt "" rather than NaN; we decide what is missing
        kwargs = {"keep_default_na": False} if suffix == ".csv" else {}
        # never a silent copy of the user's data in ~/.cache/huggingface
        with tempfile.TemporaryDirectory(prefix="router_ml-table-") as tmp:
            raw = datasets.load_dataset(builders[suffix], data_files=str(path), split="train",
                                        cache_dir=str(cache_dir or tmp),
                                        keep_in_memory=cache_dir is None, **kwargs)
    except Exception as e:  # datasets raises many types for unreadable files
        # datasets wraps the parser's error; its innermost cause says what is wrong
        cause = e
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        what = f"{type(cause).__name__}: {str(cause).strip()}" if str(cause).strip() \
            else type(cause).__name__
        if "corresponds to no data" in str(e):
            what = "no data rows"
        raise DataFormatError(f"{path}: cannot read as {builders[suffix]} ({what})") from None
    columns = raw.column_names
    needed = [prompt_column] + ([group_column] if group_column else [])
    if model_columns is None:
        model_columns = [c for c in columns if c not in needed]
    for col in [*needed, *model_columns]:
        if col not in columns:
            raise DataFormatError(f"{path}: missing column {col!r} (columns: {', '.join(columns)})")
    if not model_columns:
        raise DataFormatError(f"{path}: no model score columns besides {prompt_column!r}")
    names = [canonical_model(m) for m in model_columns]
    b = _Builder(str(path))
    src = source or path.stem
    for row in raw:
        b.add(row[prompt_column], src, row[group_column] if group_column else src,
              {n: parse_score(row[c], scale=scale) for n, c in zip(names, model_columns)})
    if not b.rows:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(b.skipped.items())) or "no rows"
        raise DataFormatError(f"{path}: no usable row ({skipped}); every row needs a non-empty "
                              f"{prompt_column!r} and a valid score for at least one model")
    return b.build(names)


def load_source(name: str, data_dir=None):
    """Load a named source: ``mmlu``, ``gsm8k``, ``arena-hard``, ``dcrouter`` (its train and
    test files)."""
    loaders = {
        "mmlu": lambda: load_routellm("mmlu", data_dir),
        "gsm8k": lambda: load_routellm("gsm8k", data_dir),
        "arena-hard": lambda: load_arena_hard(data_dir),
        "dcrouter": lambda: load_dcrouter("all", data_dir),
    }
    if name not in loaders:
        raise ValueError(f"unknown source {name!r}; choose from {', '.join(loaders)}")
    return loaders[name]()


def fingerprint(prompts: Sequence[str], *arrays: np.ndarray) -> str:
    """A short sha256 of prompts and label arrays, to record what a router was trained on."""
    import hashlib

    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]
