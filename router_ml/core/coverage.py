"""Coverage: is a prompt like the prompts the router learned from?

A router trained on one kind of traffic meets another. :class:`Coverage` keeps a sample of
the training prompts' features (L2-normalised) and, for a new prompt, its highest cosine
similarity to them. The cut-off ``tau`` is calibrated on held-out training rows that are not
in the sample: ``level`` (default 95 %) of those in-distribution prompts have a similarity
of at least ``tau`` and count as covered. A prompt below it is uncovered; the router then
sends it to its fallback model when one is set (see :class:`router_ml.core.router.Router`).

Cost: one (n, d) x (d, n_ref) product per batch; 2,000 reference rows of 268 features take
about 2 MB and well under a millisecond per prompt.
"""

from __future__ import annotations

import numpy as np

from router_ml.core.heads import unit_rows

MAX_REFERENCE = 2000
MAX_CALIBRATION = 1000


class Coverage:
    """reference: (n_ref, d) float32 unit rows; tau: the similarity cut-off; level: the share
    of held-out in-distribution prompts at or above it; n_calibration: how many."""

    def __init__(self, reference, tau: float, level: float = 0.95, n_calibration: int = 0):
        self.reference = np.ascontiguousarray(reference, dtype=np.float32)
        self.tau = float(tau)
        self.level = float(level)
        self.n_calibration = int(n_calibration)
        if self.reference.ndim != 2 or not len(self.reference) \
                or not np.isfinite(self.reference).all() or not np.isfinite(self.tau):
            raise ValueError("coverage reference must be a non-empty 2-d finite array and tau finite")

    @classmethod
    def fit(cls, X, level: float = 0.95, random_state: int = 0) -> "Coverage":
        """From the training features X (n, d): a random reference sample of at most
        MAX_REFERENCE rows and tau from at most MAX_CALIBRATION other rows."""
        if not 0 < level < 1:
            raise ValueError(f"coverage level must be in (0, 1), got {level}")
        n = X.shape[0]
        if n < 20:
            raise ValueError(f"coverage needs at least 20 training rows, got {n}")
        order = np.random.default_rng(random_state).permutation(n)
        n_cal = min(MAX_CALIBRATION, n // 4)
        cal, ref = order[:n_cal], order[n_cal:n_cal + MAX_REFERENCE]
        reference = unit_rows(X[np.sort(ref)])
        sims = (unit_rows(X[cal]) @ reference.T).max(axis=1)
        tau = float(np.quantile(sims, 1 - level, method="lower"))
        return cls(reference, tau, level, n_cal)

    def similarity(self, X) -> np.ndarray:
        """(n,) highest cosine similarity of each row of X to the reference rows."""
        return (unit_rows(X) @ self.reference.T).max(axis=1).astype(np.float64)

    def covered(self, X) -> np.ndarray:
        """(n,) bool: similarity >= tau."""
        return self.similarity(X) >= self.tau

    def to_dict(self) -> dict:
        return {"tau": self.tau, "level": self.level, "n_reference": len(self.reference),
                "n_calibration": self.n_calibration}
