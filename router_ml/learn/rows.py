"""Training rows: prompts and every candidate model's quality on them, as arrays.

:class:`Rows` is what splits, training and evaluation pass around: n prompts, a (n, m)
quality matrix for m candidate models (NaN where a model has no outcome), and per row its
group and source. A pair (strong, weak) is the case m = 2 with the strong model first.

The loaders of :mod:`router_ml.learn.sources` build rows straight from the files' records;
:func:`to_dataset` and :func:`rows_of` go to and from the records ``datasets.Dataset`` that
the public loaders return (columns ``prompt``, ``source``, ``group``, ``quality`` and, from a
user's table, ``cost``: :mod:`router_ml.learn.sources`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router_ml.errors import UnknownModelError

logger = logging.getLogger(__name__)

TARGETS = ("gain", "quality")


@dataclass(frozen=True)
class Rows:
    """prompts: n prompts; quality: (n, m) float64 in [0, 1], NaN where missing; models: the m
    column names; groups, sources: (n,) object arrays; costs: (n, m) observed USD per prompt
    and model, or None (then costs come from prices)."""

    prompts: list[str]
    quality: np.ndarray
    models: tuple
    groups: np.ndarray
    sources: np.ndarray
    costs: np.ndarray | None = None

    def __len__(self):
        return len(self.prompts)

    def select(self, models: Sequence[str], *, complete: bool = False) -> "Rows":
        """These rows for some of their models, in the order given (exact names;
        UnknownModelError lists the known ones). complete: keep only rows with a quality for
        every one of them (others are dropped and counted in the log); else rows with at
        least one."""
        models = _checked(models, list(self.models))
        cols = [self.models.index(m) for m in models]
        q = self.quality[:, cols]
        keep = ~np.isnan(q).any(axis=1) if complete else ~np.isnan(q).all(axis=1)
        if (~keep).sum():
            logger.warning("%s: %d of %d rows lack a quality for %s and are dropped",
                           "/".join(models) if len(models) <= 3 else f"{len(models)} models",
                           int((~keep).sum()), len(self),
                           "one of the models" if complete else "every model")
        idx = np.flatnonzero(keep)
        return Rows([self.prompts[i] for i in idx], q[idx], tuple(models), self.groups[idx],
                    self.sources[idx], None if self.costs is None else self.costs[idx][:, cols])

    def subset(self, mask_or_index) -> "Rows":
        idx = np.arange(len(self))[mask_or_index]
        return Rows([self.prompts[i] for i in idx], self.quality[idx], self.models,
                    self.groups[idx], self.sources[idx],
                    None if self.costs is None else self.costs[idx])

    @property
    def q_strong(self) -> np.ndarray:
        """Pairs: the strong (first) model's qualities, (n,)."""
        return self._pair_column(0)

    @property
    def q_weak(self) -> np.ndarray:
        """Pairs: the weak (second) model's qualities, (n,)."""
        return self._pair_column(1)

    def _pair_column(self, j: int) -> np.ndarray:
        if len(self.models) != 2:
            raise AttributeError(f"q_strong/q_weak exist for two models; these rows have "
                                 f"{len(self.models)}")
        return self.quality[:, j]


def concat(parts: Sequence[Rows]) -> Rows:
    """Rows of several parts with the same models, in order."""
    models = parts[0].models
    for p in parts[1:]:
        if tuple(p.models) != tuple(models):
            raise ValueError(f"cannot join rows of models {list(p.models)} to rows of {list(models)}")
    costs = None
    if all(p.costs is not None for p in parts):
        costs = np.concatenate([p.costs for p in parts])
    return Rows([x for p in parts for x in p.prompts],
                np.concatenate([p.quality for p in parts]), tuple(models),
                np.concatenate([p.groups for p in parts]),
                np.concatenate([p.sources for p in parts]), costs)


def union(parts: Sequence[Rows]) -> Rows:
    """Rows of parts whose models may differ: one column per model met, in order of first
    appearance, NaN where a part has no outcome of that model (observed costs are dropped)."""
    models = []
    for p in parts:
        models += [m for m in p.models if m not in models]
    blocks = []
    for p in parts:
        q = np.full((len(p), len(models)), np.nan)
        q[:, [models.index(m) for m in p.models]] = p.quality
        blocks.append(q)
    return Rows([x for p in parts for x in p.prompts], np.concatenate(blocks), tuple(models),
                np.concatenate([p.groups for p in parts]),
                np.concatenate([p.sources for p in parts]))


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
    :func:`router_ml.learn.sources.load_table` adds one, from ``<model>|total_cost`` or
    ``<model>|cost`` columns)."""
    if "cost" not in ds.column_names:
        return None
    return _struct_matrix(ds, "cost", models)


def to_dataset(rows: Rows):
    """The records ``datasets.Dataset`` of rows: ``prompt``, ``source``, ``group``, ``quality``
    (one float64 per model, None where missing) and, with observed costs, ``cost``."""
    import datasets

    def struct(M):
        return [{m: (None if np.isnan(v) else float(v)) for m, v in zip(rows.models, r)}
                for r in M.tolist()]

    records = {"prompt": list(rows.prompts), "source": [str(s) for s in rows.sources],
               "group": [str(g) for g in rows.groups], "quality": struct(rows.quality)}
    spec = {"prompt": datasets.Value("string"), "source": datasets.Value("string"),
            "group": datasets.Value("string"),
            "quality": {m: datasets.Value("float64") for m in rows.models}}
    if rows.costs is not None:
        records["cost"] = struct(rows.costs)
        spec["cost"] = {m: datasets.Value("float64") for m in rows.models}
    return datasets.Dataset.from_dict(records, features=datasets.Features(spec))


def _checked(models: Sequence[str], known: list[str]) -> list[str]:
    models = [str(m) for m in models]
    for m in models:
        if m not in known:
            raise UnknownModelError(f"unknown model {m!r}; known models: {', '.join(known)}")
    dup = sorted({m for m in models if models.count(m) > 1})
    if dup:
        raise ValueError(f"models must differ; repeated: {', '.join(dup)}")
    return models


def check_models(ds, models: Sequence[str]) -> list[str]:
    """The models, each a model of ``ds`` (exact names); UnknownModelError lists the known ones."""
    return _checked(models, models_of(ds))


def rows_of(ds, models: Sequence[str], *, complete: bool = False) -> Rows:
    """The rows of a records Dataset for these models. complete: keep only rows with a
    quality for every model (others are dropped and counted); else rows with at least one."""
    check_models(ds, models)
    return Rows(ds["prompt"][:],  # whole columns at once: row access is one Arrow lookup each
                quality_matrix(ds), tuple(models_of(ds)),
                np.asarray(ds["group"][:], dtype=object), np.asarray(ds["source"][:], dtype=object),
                cost_matrix(ds)).select(models, complete=complete)


def pair_data(ds, strong: str, weak: str) -> Rows:
    """The rows of ``ds`` with a quality for both models of the pair, strong first."""
    return rows_of(ds, [strong, weak], complete=True)
