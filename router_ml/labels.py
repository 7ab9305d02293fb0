"""Training targets for a (strong, weak) pair of models."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from router_ml.data import canonical_model, models_of, quality_matrix
from router_ml.errors import UnknownModelError

logger = logging.getLogger(__name__)

LABEL_KINDS = ("gain", "strong_better", "graded")


@dataclass(frozen=True)
class PairData:
    """Rows of a records Dataset where both models of the pair have a quality.

    prompts: n prompts; q_strong, q_weak: (n,) float64 qualities in [0, 1];
    groups, sources: (n,) object arrays.
    """

    prompts: list[str]
    q_strong: np.ndarray
    q_weak: np.ndarray
    groups: np.ndarray
    sources: np.ndarray

    def __len__(self):
        return len(self.prompts)

    def subset(self, mask_or_index) -> "PairData":
        idx = np.arange(len(self))[mask_or_index]
        return PairData([self.prompts[i] for i in idx], self.q_strong[idx], self.q_weak[idx],
                        self.groups[idx], self.sources[idx])


def check_pair(ds, strong: str, weak: str) -> tuple[str, str]:
    """Canonical names of the pair; UnknownModelError lists the known models."""
    strong, weak = canonical_model(strong), canonical_model(weak)
    known = models_of(ds)
    for role, m in (("strong", strong), ("weak", weak)):
        if m not in known:
            raise UnknownModelError(
                f"unknown {role} model {m!r}; known models: {', '.join(sorted(known))}"
            )
    if strong == weak:
        raise ValueError(f"strong and weak model must differ, both are {strong!r}")
    return strong, weak


def pair_data(ds, strong: str, weak: str) -> PairData:
    """The rows of ``ds`` with a quality for both models (others are dropped and counted)."""
    strong, weak = check_pair(ds, strong, weak)
    q = quality_matrix(ds, [strong, weak])
    keep = ~np.isnan(q).any(axis=1)
    if (~keep).sum():
        logger.warning("pair %s/%s: %d of %d rows lack a quality for one of the two models "
                       "and are dropped", strong, weak, int((~keep).sum()), len(ds))
    idx = np.flatnonzero(keep)
    prompts = ds["prompt"][:]  # whole columns at once: row access is one Arrow lookup each
    return PairData(
        prompts=[prompts[i] for i in idx],
        q_strong=q[idx, 0],
        q_weak=q[idx, 1],
        groups=np.asarray(ds["group"][:], dtype=object)[idx],
        sources=np.asarray(ds["source"][:], dtype=object)[idx],
    )


def make_labels(q_strong, q_weak, kind: str = "gain") -> tuple[np.ndarray, np.ndarray]:
    """Training target y and sample weights for a pair.

    - ``gain`` (default): y = sign(q_strong - q_weak) in {-1, 0, 1}: the strong model is
      better, as good, or worse. A router trained on it scores prompts by the expected gain of
      the strong model, P(strong better) - P(weak better), which is the order the oracle
      routes in (a prompt where the weak model wins is the cheapest to keep on it).
    - ``strong_better``: y = 1 where the strong model's quality is strictly higher, else 0.
    - ``graded``: the ``strong_better`` target weighted by how much is at stake,
      |q_strong - q_weak|, with ties at a small weight (0.1): for judge scores a 9-vs-2
      prompt counts more than a 6-vs-5 one.
    Returns (y int64 (n,), weight float64 (n,)).
    """
    q_strong = np.asarray(q_strong, dtype=np.float64)
    q_weak = np.asarray(q_weak, dtype=np.float64)
    if q_strong.shape != q_weak.shape:
        raise ValueError(f"q_strong and q_weak differ in shape: {q_strong.shape} vs {q_weak.shape}")
    if not (np.isfinite(q_strong).all() and np.isfinite(q_weak).all()):
        raise ValueError("qualities must be finite numbers; drop missing rows with pair_data()")
    diff = q_strong - q_weak
    y = (diff > 0).astype(np.int64)
    if kind == "gain":
        return np.sign(diff).astype(np.int64), np.ones_like(diff)
    if kind == "strong_better":
        w = np.ones_like(diff)
    elif kind == "graded":
        w = np.where(diff == 0, 0.1, np.abs(diff))
    else:
        raise ValueError(f"label kind must be one of {LABEL_KINDS}, got {kind!r}")
    return y, w
