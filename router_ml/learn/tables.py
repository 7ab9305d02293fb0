"""A team's own logs: :func:`load_table` (a prompt column and one quality column per model, in
CSV, JSONL or Parquet) and :func:`load_preferences` (pairwise votes, Chatbot-Arena style), as
the Dataset records of :mod:`router_ml.learn.sources`. Names are kept exactly as written.

A user's file is read in memory (Python's csv and json, pyarrow for Parquet); nothing is
copied to a cache.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router_ml.errors import DataFormatError, DataNotFoundError
from router_ml.learn._columns import table_columns
from router_ml.learn.sources import RecordsBuilder, parse_score

logger = logging.getLogger(__name__)


_FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def empty_file_error(path, expected: str, prompt_column: str = "prompt") -> DataFormatError:
    """The error for a 0-byte file (``train --table`` and ``score`` give the same one)."""
    return DataFormatError(f"{path}: the file is empty; expected a {prompt_column!r} column "
                           f"{expected}")


def unreadable_error(path, fmt: str, error: Exception) -> DataFormatError:
    """The error for a file that its reader rejects (bad encoding, not Parquet, ...), with the
    reader's own words; ``fmt`` is ``csv``, ``json`` or ``parquet``."""
    what = str(error).strip()
    what = f"{type(error).__name__}: {what}" if what else type(error).__name__
    return DataFormatError(f"{path}: cannot read as {fmt} ({what})")


def read_table(path, prompt_column: str) -> tuple[Path, list[str], list[dict], int]:
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
        raise empty_file_error(path, "and one score column per model", prompt_column)
    fmt = _FORMATS[suffix]
    try:
        columns, rows, bad = {"csv": _read_csv, "json": _read_json, "parquet": _read_parquet}[
            fmt](path)
    except DataFormatError:
        raise
    except Exception as e:  # csv.Error, UnicodeDecodeError, pyarrow's errors, ...
        raise unreadable_error(path, fmt, e) from None
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
    path, columns, rows, malformed = read_table(path, prompt_column)
    roles = table_columns(path, columns, prompt_column, model_columns, group_column)
    if roles.other:
        logger.info("%s: not read as qualities: %s", path, "; ".join(
            f"{kind} columns {', '.join(map(repr, cols))}" for kind, cols in roles.other.items()))
    model_columns = roles.models
    names = _model_names(path, model_columns)
    cost_columns = {n: roles.costs[c] for n, c in zip(names, model_columns) if c in roles.costs}
    for c in model_columns:
        _check_scale(path, c, (r.get(c) for r in rows), scale)
    b = RecordsBuilder(str(path))
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
    if not b.records:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(b.skipped.items())) or "no rows"
        raise DataFormatError(f"{path}: no usable row ({skipped}); every row needs a non-empty "
                              f"{prompt_column!r} and a valid score for at least one model")
    if bad_costs:
        logger.warning("%s: %d missing, negative or non-numeric costs left empty", path, bad_costs)
    if b.duplicates:  # rows a user counts on vanish here: say so without -v
        logger.warning("%s: %d of %d rows repeat the prompt of an earlier row (same text after "
                       "stripping white space); they are merged, each model's scores averaged, "
                       "into %d distinct prompts", path, b.duplicates,
                       len(b.records) + b.duplicates, len(b.records))
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
    path, columns, rows, malformed = read_table(path, prompt_column)
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
    bld = RecordsBuilder(f"{path} ({used} comparisons)")
    for key, (prompt, group) in first.items():
        bld.add(prompt, src, src if group is None else group,
                {m: float(np.mean(v)) for m, v in acc[key].items()})
    return bld.build(list(models))
