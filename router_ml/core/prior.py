"""A length prior for two-model routers: the learned score blended with the prompt's length.

Longer prompts need the strong model more often on most of the sources measured (the length
baseline's APGR: 0.60 on MMLU and GSM8K, 0.52 on arena-hard), but not on all (0.43 on
alpaca-eval), and a score learned on one source can miss what carries over to the next. The
prior puts both on one scale, their distribution on the training rows, and mixes them:

    score' = (1 - weight) * F_score(score) + weight * F_length(len(prompt))

F_score is the empirical distribution of the learned score on out-of-fold training
predictions, F_length that of the training prompts' lengths in characters, both kept as
``N_QUANTILES`` quantiles and interpolated linearly. ``weight`` is chosen from ``WEIGHTS`` by the
APGR of the blend on the same out-of-fold predictions, so rows where length says nothing get
weight 0 (or, with rows from several sources and ``prior_select_by``, by the criterion that
chooses C: the blend's APGR on each source predicted by a model fitted without it, alone or
averaged with the out-of-fold APGR). The router keeps the prior then too: its score is
F_score(score), the plain score's share of the training rows, which routes each prompt as
the plain score does (the same order) but on a scale shared by routers trained on other
rows. Protocols that pool
the test scores of several folds' routers (docs/protocols.md) rank them on that one scale.
The learned score keeps at least half the
say: at weight 1 the router would ignore what it learned, and where length happens to
separate the training rows, a prompt shorter than the training prompts of its kind would
change sides. Training (:func:`router_ml.learn.training.fit_router`)
fits it before calibrating the threshold on the blended out-of-fold scores.
"""

from __future__ import annotations

import numpy as np

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
N_QUANTILES = 101


class LengthPrior:
    """weight in [0, 1]; score_quantiles, length_quantiles: increasing (N,) arrays.
    After :meth:`fit`, ``apgr_`` is the APGR of the chosen blend on the out-of-fold rows and
    ``criterion_`` the value it was chosen by (None where APGR is undefined)."""

    apgr_: float | None = None
    criterion_: float | None = None

    def __init__(self, weight: float, score_quantiles, length_quantiles):
        self.weight = float(weight)
        self.score_quantiles = np.asarray(score_quantiles, dtype=np.float64)
        self.length_quantiles = np.asarray(length_quantiles, dtype=np.float64)
        for name, q in (("score", self.score_quantiles), ("length", self.length_quantiles)):
            if q.ndim != 1 or len(q) < 2 or not np.isfinite(q).all() or (np.diff(q) < 0).any():
                raise ValueError(f"length prior: {name} quantiles must be at least 2 finite, "
                                 "non-decreasing numbers")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"length prior: weight must be in [0, 1], got {weight}")
        self._levels = (np.linspace(0.0, 1.0, len(self.score_quantiles)),
                        np.linspace(0.0, 1.0, len(self.length_quantiles)))

    @classmethod
    def fit(cls, scores, lengths, q_strong, q_weak, weights=WEIGHTS, held_out=None,
            folds: bool = True) -> "LengthPrior":
        """The prior whose blend of out-of-fold ``scores`` and prompt ``lengths`` routes best
        (ties to the smaller weight; weight 0 where APGR is undefined, the models equally
        good). ``held_out``: (scores, sources) of the same rows, each row scored by a model
        fitted without its source's rows; then a weight counts by the mean of its APGR on
        the out-of-fold blend (unless ``folds`` is False) and of its mean APGR over the
        held-out sources, the criterion that chooses C (``select_by``), so that traffic the
        learned score did not see weighs as much as traffic it did. The held-out blend puts
        its scores on their own distribution; the returned prior keeps the out-of-fold one."""
        from router_ml.core.metrics import apgr

        scores, lengths = np.asarray(scores, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
        if scores.shape != lengths.shape or scores.ndim != 1 or len(scores) < 2:
            raise ValueError("length prior: scores and lengths must be two (n,) arrays, n >= 2")
        q_strong, q_weak = np.asarray(q_strong), np.asarray(q_weak)
        levels = np.linspace(0.0, 1.0, N_QUANTILES)
        sq, lq = np.quantile(scores, levels), np.quantile(lengths, levels)
        # the criterion's parts, each (the blend's score quantiles, scores, groups of rows): a
        # weight counts by the mean over the parts of its mean APGR over a part's groups
        parts = []
        if folds or held_out is None:
            parts.append((sq, scores, [slice(None)]))
        if held_out is not None:
            h, groups = np.asarray(held_out[0], dtype=np.float64), np.asarray(held_out[1])
            if h.shape != scores.shape or groups.shape != scores.shape:
                raise ValueError("length prior: held-out scores and sources must be (n,) arrays "
                                 "of the same rows")
            parts.append((np.quantile(h, levels), h, [groups == g for g in np.unique(groups)]))

        def part_apgr(w, q, s, groups):
            blend, vals = cls(w, q, lq).apply(s, lengths), []
            for g in groups:
                try:
                    vals.append(apgr(blend[g], q_strong[g], q_weak[g]))
                except ValueError:  # undefined on these rows: they cannot choose
                    pass
            return np.mean(vals) if vals else None

        def value(w):
            means = [part_apgr(w, *part) for part in parts]
            return None if any(m is None for m in means) else float(np.mean(means))

        values = [(value(w), w) for w in weights]
        if any(v is None for v, _ in values):
            best, chosen = 0.0, None
        else:
            chosen, best = max(values, key=lambda t: (t[0], -t[1]))
        out = cls(best, sq, lq)
        try:
            out.apgr_ = apgr(out.apply(scores, lengths), q_strong, q_weak)
        except ValueError:
            out.apgr_ = None
        out.criterion_ = chosen
        return out

    def apply(self, scores, lengths) -> np.ndarray:
        """(n,) blended scores in [0, 1]: each input's share of the training distribution at
        or below it (0 and 1 outside it), mixed."""
        fs = np.interp(scores, self.score_quantiles, self._levels[0])
        fl = np.interp(lengths, self.length_quantiles, self._levels[1])
        return (1.0 - self.weight) * fs + self.weight * fl

    def rounded(self, digits: int) -> "LengthPrior":
        """This prior with its quantiles rounded to ``digits`` significant digits."""
        from router_ml.core.heads import round_significant

        out = LengthPrior(self.weight, round_significant(self.score_quantiles, digits),
                          round_significant(self.length_quantiles, digits))
        out.__dict__.update({k: round_significant(v, digits) for k, v in vars(self).items()
                             if k.endswith("_") and not k.startswith("_")})
        return out

    def to_dict(self) -> dict:
        return {"kind": "length", "weight": self.weight,
                "score_quantiles": self.score_quantiles.tolist(),
                "length_quantiles": self.length_quantiles.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "LengthPrior":
        if not isinstance(d, dict) or d.get("kind") != "length":
            raise ValueError(f"unknown prior {d!r}")
        return cls(d["weight"], d["score_quantiles"], d["length_quantiles"])
