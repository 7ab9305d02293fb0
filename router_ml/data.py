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
_SOURCE_DIRS = ("routellm-evals", "arena-hard-v1", "llmrouter-dcrouter", "alpaca-eval-pairs")


def canonical_model(name: str) -> str:
    """The model name without an organisation prefix (text after the last ``/``).

    For the raw names of the shared sources only; a user's model names are kept as written.
    """
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
        if any((c / name).is_dir() for name in _SOURCE_DIRS):
            return c.resolve()
    raise DataNotFoundError(
        "no data folder found. Pass --data-dir PATH, or set "
        f"{DATA_ENV}=PATH to a folder holding "
        + ", ".join(f"{name}/" for name in _SOURCE_DIRS) + " (looked in: " + ", ".join(str(c) for c in candidates) + ")"
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
            self.costs[key] = {}
        for m, v in valid.items():
            acc.setdefault(m, []).append(v)
        for m, c in (costs or {}).items():
            if c is not None:
                self.costs[key].setdefault(m, []).append(c)

    def build(self, models: Sequence[str], *, with_cost: bool = False):
        """The Dataset; ``with_cost`` adds the ``cost`` struct (one entry per model)."""
        import datasets

        def mean(acc, m):
            return None if m not in acc else acc[m][0] if len(acc[m]) == 1 else float(
                np.mean(acc[m]))

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
        if with_cost:
            records["cost"] = []
        for key, row in self.rows.items():
            records["prompt"].append(row["prompt"])
            records["source"].append(row["source"])
            records["group"].append(row["group"])
            records["quality"].append({m: mean(self.sums[key], m) for m in models})
            if with_cost:
                records["cost"].append({m: mean(self.costs[key], m) for m in models})
        spec = {
            "prompt": datasets.Value("string"),
            "source": datasets.Value("string"),
            "group": datasets.Value("string"),
            "quality": {m: datasets.Value("float64") for m in models},
        }
        if with_cost:
            spec["cost"] = {m: datasets.Value("float64") for m in models}
        features = datasets.Features(spec)
        ds = datasets.Dataset.from_dict(records, features=features)
        logger.info("%s: %d records, models: %s", self.what, len(ds), ", ".join(models))
        return ds


def models_of(ds) -> list[str]:
    """The model names of a records Dataset."""
    return list(ds.features["quality"].keys())


def _struct_matrix(ds, column: str, models: Sequence[str] | None) -> np.ndarray:
    known = models_of(ds)
    models = list(models) if models is not None else known
    for m in models:
        if m not in known:
            raise UnknownModelError(f"unknown model {m!r}; known models: {', '.join(known)}")
    # The arrow view honours a selection of rows; pyarrow turns nulls into NaN for floats.
    struct = ds.with_format("arrow")[column].combine_chunks()
    cols = [struct.field(m).to_numpy(zero_copy_only=False).astype(np.float64) for m in models]
    return np.stack(cols, axis=1) if cols else np.zeros((len(ds), 0))


def quality_matrix(ds, models: Sequence[str] | None = None) -> np.ndarray:
    """(n_records, n_models) float64 array of qualities in [0, 1], NaN where missing."""
    return _struct_matrix(ds, "quality", models)


def cost_matrix(ds, models: Sequence[str] | None = None) -> np.ndarray | None:
    """(n_records, n_models) float64 array of observed costs (>= 0, the file's unit, e.g. USD
    per prompt), NaN where unknown; ``None`` when ``ds`` has no ``cost`` column (only
    :func:`load_table` adds one, from ``<model>|total_cost`` or ``<model>|cost`` columns)."""
    if "cost" not in ds.column_names:
        return None
    return _struct_matrix(ds, "cost", models)


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


# ---------------------------------------------------------------- alpaca-eval-pairs


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
    - ``"pair"`` (the ``alpaca-eval`` pair protocol, DESIGN.md): only gpt-4-1106-preview
      (strong) and Mixtral-8x7B-Instruct-v0.1 (weak), with quality(strong) = 1 - p and
      quality(weak) = p, p = P(Mixtral better).

    The two views give the same ``strong_better`` labels for the pair but not the same
    qualities (0.5 against 1 - p): use ``"pair"`` for pair protocols. The judge is the strong
    model itself and favours long answers (read the source's README).
    """
    if view not in ("tiers", "pair"):
        raise ValueError(f"view must be 'tiers' or 'pair', got {view!r}")
    root = _source_dir(data_dir, "alpaca-eval-pairs")
    ipath, ppath = root / "instructions.jsonl", root / "preferences.csv"
    groups: dict[str, str] = {}
    for i, o in enumerate(_read_jsonl(ipath), 1):
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
    b = _Builder(f"alpaca-eval-pairs/{view}")
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
    return b.build(models)


# ---------------------------------------------------------------- the user's own logs

_FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _read_table(path, prompt_column: str) -> tuple[Path, list[str], list[dict], int]:
    """(path, column names in file order, rows as dicts, malformed rows) of a user's file.

    Read in memory: the file is never copied (no ``datasets`` cache). CSV cells are strings
    (an empty cell is ``""``); a missing JSON key or CSV field is ``None``. Malformed rows (a
    CSV row with more fields than the header, a JSON line that is not an object) are counted,
    not fatal; a file with no readable row is.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise DataFormatError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl or .parquet")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty; expected a {prompt_column!r} column "
                              "and one score column per model")
    fmt = _FORMATS[suffix]
    try:
        columns, rows, bad = {"csv": _read_csv, "json": _read_json, "parquet": _read_parquet}[
            fmt](path)
    except DataFormatError:
        raise
    except Exception as e:  # csv.Error, UnicodeDecodeError, pyarrow's errors, ...
        what = f"{type(e).__name__}: {str(e).strip()}" if str(e).strip() else type(e).__name__
        raise DataFormatError(f"{path}: cannot read as {fmt} ({what})") from None
    if not rows:
        raise DataFormatError(f"{path}: cannot read as {fmt} (no data rows)")
    names = [c for c in columns if c != ""]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DataFormatError(f"{path}: more than one column is named {dup[0]!r}; rename them "
                              "so that every column has its own name")
    return path, columns, rows, bad


def _read_csv(path: Path):
    # Prompts of long-context logs exceed the csv module's default field limit (128 KiB).
    limit = csv.field_size_limit(2**31 - 1)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: drop an Excel BOM
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return [], [], 0
            rows, bad = [], 0
            for cells in reader:
                if not cells:  # a blank line
                    continue
                if len(cells) > len(header):
                    bad += 1
                    continue
                rows.append(dict(zip(header, cells + [None] * (len(header) - len(cells)))))
    finally:
        csv.field_size_limit(limit)
    return header, rows, bad


def _read_json(path: Path):
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        items = json.loads(text)
        objs = [o for o in items if isinstance(o, dict)]
        bad = len(items) - len(objs)
    else:  # JSON Lines
        objs, bad = [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                o = json.loads(line)
            except json.JSONDecodeError:
                o = None
            if isinstance(o, dict):
                objs.append(o)
            else:
                bad += 1
        if not objs and bad:
            raise DataFormatError(f"{path}: cannot read as json (no line is a JSON object; "
                                  "expected one object per line)")
    columns = list(dict.fromkeys(k for o in objs for k in o))
    return columns, objs, bad


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.column_names, table.to_pylist(), 0


def _non_quality(name: str, columns: Sequence[str]) -> str | None:
    """``"cost"``, ``"tokens"`` or ``"field"`` for a column recognised by its name as not a
    quality, else None. ``field``: ``<model>|<anything>`` where ``<model>`` is a column too
    (RouterBench's ``<model>|model_response``)."""
    low = name.strip().lower()
    if low in ("cost", "total_cost") or low.endswith(("|total_cost", "|cost", "_cost")):
        return "cost"
    if low == "tokens" or low.endswith(("_tokens", "|tokens")):
        return "tokens"
    if "|" in name and name.rsplit("|", 1)[0] in columns:
        return "field"
    return None


def _number(value) -> float | None:
    """A finite number read from a cell (booleans and ``true``/``false`` as 1/0), else None."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    x = value
    if isinstance(x, str):
        low = x.strip().lower()
        if low in ("true", "yes", "false", "no"):
            return 1.0 if low in ("true", "yes") else 0.0
        try:
            x = float(low)
        except ValueError:
            return None
    if not isinstance(x, (int, float, np.integer, np.floating)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _check_scale(path: Path, column: str, values, scale: str) -> None:
    """DataFormatError when a column's numbers do not fit ``scale`` as a whole.

    ``unit``: more than half of the column's finite numbers are above 1. ``judge10``: more
    than half are above 10, or every number is in [0, 1] with at least one below 1. Fewer
    misfits are bad cells, left empty and counted.
    """
    nums = [x for x in map(_number, values) if x is not None]
    if not nums:
        return
    top = max(nums)
    if scale == "unit" and sum(x > 1 for x in nums) > len(nums) / 2:
        raise DataFormatError(
            f"{path}: column {column!r} does not look like a quality in [0, 1]: "
            f"{sum(x > 1 for x in nums)} of {len(nums)} numbers are above 1 (max {top:g}). "
            "For 1-10 judge scores pass --scale judge10 (scale='judge10'); map other scales "
            "to [0, 1] first")
    if scale == "judge10":
        if sum(x > 10 for x in nums) > len(nums) / 2:
            raise DataFormatError(
                f"{path}: column {column!r} does not look like a 1-10 judge score: "
                f"{sum(x > 10 for x in nums)} of {len(nums)} numbers are above 10 "
                f"(max {top:g}); map the scores to [0, 1] and pass --scale unit")
        if all(0.0 <= x <= 1.0 for x in nums) and min(nums) < 1.0:
            raise DataFormatError(
                f"{path}: column {column!r} holds only values in [0, 1] (max {top:g}), not "
                "1-10 judge scores; pass --scale unit (scale='unit')")


def _model_names(path: Path, model_columns: Sequence[str]) -> list[str]:
    """The model name of each column: the column name without surrounding white space."""
    names, first = [], {}
    for c in model_columns:
        n = str(c).strip()
        if not n:
            raise DataFormatError(f"{path}: column {c!r} has no name; give it the model's name")
        if n in first:
            raise DataFormatError(f"{path}: columns {first[n]!r} and {c!r} both give the model "
                                  f"name {n!r}; rename one of them")
        first[n] = c
        names.append(n)
    return names


def _cost(value) -> float | None:
    x = None if isinstance(value, (bool, np.bool_)) else _number(value)
    return x if x is not None and x >= 0 else None


def load_table(
    path,
    *,
    prompt_column: str = "prompt",
    model_columns: Sequence[str] | None = None,
    group_column: str | None = None,
    scale: str = "unit",
    source: str | None = None,
):
    """A user's CSV, JSONL or Parquet file: a prompt column and one score column per model.

    model_columns: the score columns; by default every column except the prompt and group,
    unnamed columns (an index written by pandas) and the columns recognised by their name as
    cost or token counts (``<model>|total_cost``, ``<model>|cost``, ``cost``, names ending in
    ``_cost``, ``_tokens`` or ``|tokens``, ``tokens``) or as another field of a model
    (``<model>|<field>`` where ``<model>`` is a column); those are listed in the log. A given
    column that looks like one of them is a :class:`DataFormatError`.
    Model names are the column names as written (surrounding white space removed); two
    columns giving one name is an error naming both.
    scale: ``unit`` (0/1, booleans or fractions in [0, 1]) or ``judge10`` (1-10 scores,
    mapped to (s - 1) / 9). A column that does not fit the scale as a whole is an error (unit:
    more than half of its numbers above 1; judge10: more than half above 10, or every number
    in [0, 1] with one below 1); fewer misfits are bad cells, left empty and counted.
    Observed cost: when a model column ``m`` has a ``m|total_cost`` or ``m|cost`` column, the
    Dataset gets a ``cost`` struct ({model: float >= 0 or None}, read with
    :func:`cost_matrix`); negative or non-numeric costs are left empty and counted.
    A file with no rows, or whose rows all lack a prompt or a valid score, raises
    :class:`DataFormatError`. The file is read in memory and never copied to a cache.
    """
    if scale not in ("unit", "judge10"):
        raise ValueError(f"scale must be 'unit' or 'judge10', got {scale!r}")
    path, columns, rows, malformed = _read_table(path, prompt_column)
    needed = [prompt_column] + ([group_column] if group_column else [])
    for col in needed:
        if col not in columns:
            raise DataFormatError(f"{path}: missing column {col!r} (columns: {', '.join(columns)})")
    if model_columns is None:
        excluded: dict[str, list[str]] = {}
        model_columns = []
        for c in columns:
            if c in needed:
                continue
            kind = "unnamed" if not str(c).strip() else _non_quality(c, columns)
            if kind:
                excluded.setdefault(kind, []).append(c)
            else:
                model_columns.append(c)
        if excluded:
            logger.info("%s: not read as qualities: %s", path, "; ".join(
                f"{kind} columns {', '.join(map(repr, cols))}" for kind, cols in excluded.items()))
    else:
        model_columns = list(model_columns)
        for col in model_columns:
            if col not in columns:
                raise DataFormatError(
                    f"{path}: missing column {col!r} (columns: {', '.join(columns)})")
            kind = _non_quality(col, columns)
            if kind:
                raise DataFormatError(
                    f"{path}: column {col!r} looks like a {kind} column, not a quality; drop "
                    "it from the model columns (a <model>|total_cost or <model>|cost column is "
                    "read as that model's observed cost)")
    if not model_columns:
        raise DataFormatError(f"{path}: no model score columns besides {prompt_column!r}")
    names = _model_names(path, model_columns)
    cost_columns = {}
    for n, c in zip(names, model_columns):
        found = [f"{c}{suffix}" for suffix in ("|total_cost", "|cost") if f"{c}{suffix}" in columns]
        if len(found) > 1:
            raise DataFormatError(f"{path}: columns {found[0]!r} and {found[1]!r} both hold the "
                                  f"cost of {n!r}; keep one of them")
        if found:
            cost_columns[n] = found[0]
    for c in model_columns:
        _check_scale(path, c, (r.get(c) for r in rows), scale)
    b = _Builder(str(path))
    if malformed:
        b.skipped["malformed row"] = malformed
    src = source or path.stem
    bad_costs = 0
    for row in rows:
        costs = {n: _cost(row.get(c)) for n, c in cost_columns.items()}
        bad_costs += sum(v is None for v in costs.values())
        b.add(row.get(prompt_column), src, row.get(group_column) if group_column else src,
              {n: parse_score(row.get(c), scale=scale) for n, c in zip(names, model_columns)},
              costs)
    if not b.rows:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(b.skipped.items())) or "no rows"
        raise DataFormatError(f"{path}: no usable row ({skipped}); every row needs a non-empty "
                              f"{prompt_column!r} and a valid score for at least one model")
    if bad_costs:
        logger.warning("%s: %d missing, negative or non-numeric costs left empty", path, bad_costs)
    return b.build(names, with_cost=bool(cost_columns))


_WINNERS = {"model_a": "a", "a": "a", "model_b": "b", "b": "b", "tie": "tie",
            "tie (bothbad)": "bothbad", "tie(bothbad)": "bothbad"}


def load_preferences(
    path,
    *,
    prompt_column: str = "prompt",
    model_a: str = "model_a",
    model_b: str = "model_b",
    winner: str = "winner",
    prob: str | None = None,
    group_column: str | None = None,
    tie_bothbad: float = 0.0,
    source: str | None = None,
):
    """Pairwise-preference logs (Chatbot Arena style): one row per comparison of two models.

    Each row holds the prompt, the two model names (columns ``model_a``, ``model_b``; names
    kept as written, surrounding white space removed) and the outcome: either the ``winner``
    column (``model_a``/``a``, ``model_b``/``b``, ``tie``, ``tie (bothbad)``; case and outer
    white space ignored) or, when ``prob`` names a column, P(a better) in [0, 1].
    A model's quality on a prompt is its mean score over the comparisons it is in on that
    prompt (prompts identical after stripping white space are one prompt): win 1, loss 0,
    tie 0.5 each, ``tie (bothbad)`` ``tie_bothbad`` each (default 0.0: both answers were bad,
    an absolute statement; the two still tie, so a pair's labels do not depend on it), and
    p / 1 - p with a probability. ``None`` where the model was not compared on the prompt.
    Rows with an unknown winner, an invalid probability, a missing model name or the same
    model on both sides are skipped and counted in the log. CSV, JSONL or Parquet, read in
    memory like :func:`load_table`; a missing column is a :class:`DataFormatError`.
    """
    if not 0.0 <= float(tie_bothbad) <= 1.0:
        raise ValueError(f"tie_bothbad must be in [0, 1], got {tie_bothbad!r}")
    path, columns, rows, malformed = _read_table(path, prompt_column)
    outcome = prob if prob is not None else winner
    needed = [prompt_column, model_a, model_b, outcome] + ([group_column] if group_column else [])
    for col in needed:
        if col not in columns:
            hint = "; pass prob=NAME for a probability column" if col == winner else ""
            raise DataFormatError(
                f"{path}: missing column {col!r} (columns: {', '.join(columns)}){hint}")
    skipped = {"malformed row": malformed} if malformed else {}
    unknown: dict[str, int] = {}
    first: dict[str, tuple] = {}
    acc: dict[str, dict[str, list[float]]] = {}
    models: dict[str, None] = {}
    used = 0

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    for row in rows:
        prompt = row.get(prompt_column)
        a, b = (v.strip() if isinstance(v, str) else "" for v in (row.get(model_a),
                                                                  row.get(model_b)))
        if not isinstance(prompt, str) or not prompt.strip():
            skip("empty or missing prompt")
            continue
        if not a or not b:
            skip("missing model name")
            continue
        if a == b:
            skip("same model on both sides")
            continue
        if prob is not None:
            p = parse_score(row.get(prob))
            if p is None:
                skip("invalid probability")
                continue
            sa, sb = p, 1.0 - p
        else:
            w = row.get(winner)
            kind = _WINNERS.get(w.strip().lower()) if isinstance(w, str) else None
            if kind is None:
                skip("unknown winner")
                unknown[repr(w)] = unknown.get(repr(w), 0) + 1
                continue
            sa, sb = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (0.5, 0.5),
                      "bothbad": (float(tie_bothbad),) * 2}[kind]
        key = prompt.strip()
        if key not in first:
            first[key] = (prompt, row.get(group_column) if group_column else None)
            acc[key] = {}
        acc[key].setdefault(a, []).append(sa)
        acc[key].setdefault(b, []).append(sb)
        models.setdefault(a)
        models.setdefault(b)
        used += 1
    if skipped:
        logger.warning("%s: skipped %d of %d comparisons (%s)%s", path, sum(skipped.values()),
                       len(rows) + malformed,
                       ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())),
                       f"; unknown winner values: {', '.join(sorted(unknown))}" if unknown else "")
    if not used:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "no rows"
        raise DataFormatError(
            f"{path}: no usable comparison ({counts}); "
            f"every row needs a non-empty {prompt_column!r}, two different models in "
            f"{model_a!r} and {model_b!r} and a valid {outcome!r}")
    src = source or path.stem
    bld = _Builder(f"{path} ({used} comparisons)")
    for key, (prompt, group) in first.items():
        bld.add(prompt, src, src if group is None else group,
                {m: float(np.mean(v)) for m, v in acc[key].items()})
    return bld.build(list(models))


def load_source(name: str, data_dir=None):
    """Load a named source: ``mmlu``, ``gsm8k``, ``arena-hard``, ``dcrouter`` (its train and
    test files), ``alpaca-eval`` (the pair view of :func:`load_alpaca_eval`, for pair
    protocols and extra training rows) or ``alpaca-tiers`` (its tiers view)."""
    loaders = {
        "mmlu": lambda: load_routellm("mmlu", data_dir),
        "gsm8k": lambda: load_routellm("gsm8k", data_dir),
        "arena-hard": lambda: load_arena_hard(data_dir),
        "dcrouter": lambda: load_dcrouter("all", data_dir),
        "alpaca-eval": lambda: load_alpaca_eval(data_dir, view="pair"),
        "alpaca-tiers": lambda: load_alpaca_eval(data_dir, view="tiers"),
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
