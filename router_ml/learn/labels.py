"""Training rows: prompts and every candidate model's quality on them, as arrays.

:class:`Rows` is what splits, training and evaluation pass around: n prompts, a (n, m)
quality matrix for m candidate models (NaN where a model has no outcome), and per row its
group and source. A pair (strong, weak) is the case m = 2 with the strong model first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router_ml.errors import UnknownModelError
from router_ml.learn.sources import models_of, quality_matrix

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


def check_models(ds, models: Sequence[str]) -> list[str]:
    """The models, each a model of ``ds`` (exact names); UnknownModelError lists the known ones."""
    known = models_of(ds)
    models = [str(m) for m in models]
    for m in models:
        if m not in known:
            raise UnknownModelError(f"unknown model {m!r}; known models: {', '.join(known)}")
    dup = sorted({m for m in models if models.count(m) > 1})
    if dup:
        raise ValueError(f"models must differ; repeated: {', '.join(dup)}")
    return models


def rows_of(ds, models: Sequence[str], *, complete: bool = False) -> Rows:
    """The rows of a records Dataset for these models. complete: keep only rows with a
    quality for every model (others are dropped and counted); else rows with at least one."""
    models = check_models(ds, models)
    q = quality_matrix(ds, models)
    keep = ~np.isnan(q).any(axis=1) if complete else ~np.isnan(q).all(axis=1)
    if (~keep).sum():
        logger.warning("%s: %d of %d rows lack a quality for %s and are dropped",
                       "/".join(models) if len(models) <= 3 else f"{len(models)} models",
                       int((~keep).sum()), len(ds),
                       "one of the models" if complete else "every model")
    idx = np.flatnonzero(keep)
    prompts = ds["prompt"][:]  # whole columns at once: row access is one Arrow lookup each
    costs = None
    if "cost" in ds.column_names:
        from router_ml.learn.sources import cost_matrix

        c = cost_matrix(ds, models)
        costs = None if c is None else c[idx]
    return Rows([prompts[i] for i in idx], q[idx], tuple(models),
                np.asarray(ds["group"][:], dtype=object)[idx],
                np.asarray(ds["source"][:], dtype=object)[idx], costs)


def pair_data(ds, strong: str, weak: str) -> Rows:
    """The rows of ``ds`` with a quality for both models of the pair, strong first."""
    return rows_of(ds, [strong, weak], complete=True)
