"""What each column of a team's table is: the prompt, one quality column per model, and the
columns recognised by name as something else (observed costs, token counts, other fields of a
model), for :func:`router_ml.learn.tables.load_table` and for reporting them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from router_ml.errors import DataFormatError

COST_SUFFIXES = ("|total_cost", "|cost")


def column_kind(name: str, columns: Sequence[str]) -> str | None:
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


@dataclass(frozen=True)
class TableColumns:
    """The roles of a table's columns. models: the quality columns, in file order (or as
    given); costs: {quality column: its observed-cost column (USD per request)}; other:
    {kind ("cost", "tokens", "field", "unnamed"): columns not read as qualities}, found when
    the model columns were not given."""

    models: list[str]
    costs: dict[str, str] = field(default_factory=dict)
    other: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line per recognised kind of column, for printing."""
        lines = []
        if self.costs:
            lines.append("observed costs (USD per request): " + ", ".join(
                f"{m} <- {c!r}" for m, c in self.costs.items()))
        used = set(self.costs.values())
        for kind, cols in self.other.items():
            rest = [c for c in cols if c not in used]
            if rest:
                lines.append(f"{kind} columns not read as qualities"
                             + (" (not used)" if kind != "field" else "") + ": "
                             + ", ".join(map(repr, rest)))
        return "\n".join(lines)


def table_columns(path, columns: Sequence[str], prompt_column: str = "prompt",
                  model_columns: Sequence[str] | None = None,
                  group_column: str | None = None) -> TableColumns:
    """The roles of ``columns`` (the file's, in order) of the table at ``path`` (named in
    errors). model_columns: the quality columns (default: every column but the prompt and
    group, unnamed columns and those :func:`column_kind` recognises). DataFormatError for a
    missing column, a given model column that looks like a cost or token column, no model
    column, or a model with two cost columns."""
    needed = [prompt_column] + ([group_column] if group_column else [])
    for col in needed:
        if col not in columns:
            raise DataFormatError(f"{path}: missing column {col!r} (columns: {', '.join(columns)})")
    other: dict[str, list[str]] = {}
    if model_columns is None:
        model_columns = []
        for c in columns:
            if c in needed:
                continue
            kind = "unnamed" if not str(c).strip() else column_kind(c, columns)
            if kind:
                other.setdefault(kind, []).append(c)
            else:
                model_columns.append(c)
    else:
        model_columns = list(model_columns)
        for col in model_columns:
            if col not in columns:
                raise DataFormatError(
                    f"{path}: missing column {col!r} (columns: {', '.join(columns)})")
            kind = column_kind(col, columns)
            if kind:
                raise DataFormatError(
                    f"{path}: column {col!r} looks like a {kind} column, not a quality; drop "
                    "it from the model columns (a <model>|total_cost or <model>|cost column is "
                    "read as that model's observed cost)")
    if not model_columns:
        raise DataFormatError(f"{path}: no model score columns besides {prompt_column!r}")
    costs = {}
    for c in model_columns:
        found = [f"{c}{suffix}" for suffix in COST_SUFFIXES if f"{c}{suffix}" in columns]
        if len(found) > 1:
            raise DataFormatError(f"{path}: columns {found[0]!r} and {found[1]!r} both hold the "
                                  f"cost of {str(c).strip()!r}; keep one of them")
        if found:
            costs[c] = found[0]
    return TableColumns(list(model_columns), costs, other)


def header(path) -> list[str]:
    """The column names of a CSV, JSONL or Parquet file, cheaply where the format allows
    (CSV: the first line; Parquet: the schema; JSON: every object's keys, in first-seen order)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f), [])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    keys: dict[str, None] = {}
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".json" and text.lstrip().startswith("["):
        objs = json.loads(text)
    else:
        objs = []
        for line in text.splitlines():
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    for o in objs:
        if isinstance(o, dict):
            keys.update(dict.fromkeys(o))
    return list(keys)


__all__ = ["TableColumns", "column_kind", "header", "table_columns"]
