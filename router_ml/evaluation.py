"""Cost-quality curves and RouteLLM's routing metrics (APGR, CPT), on the whole curve.

Definitions (DESIGN.md section 4): sort prompts by score, highest first; routing the top k to
the strong model gives mean quality q(k), k = 0..n; prompts with equal scores form a block whose
quality is interpolated linearly. Strong-call share c = k/n. PGR(c) = (q(c) - q_weak) /
(q_strong - q_weak). APGR is the trapezoid area under PGR over c in [0, 1]; CPT(x%) the
smallest c with PGR(c) >= x/100, interpolated linearly between curve points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """share: (n+1,) strong-call shares 0..1; quality: (n+1,) mean quality at each share."""

    share: np.ndarray
    quality: np.ndarray


def _as_inputs(scores, q_strong, q_weak):
    s = np.asarray(scores, dtype=np.float64).ravel()
    qs = np.asarray(q_strong, dtype=np.float64).ravel()
    qw = np.asarray(q_weak, dtype=np.float64).ravel()
    if not (len(s) == len(qs) == len(qw)):
        raise ValueError(f"scores, q_strong and q_weak differ in length: {len(s)}, {len(qs)}, {len(qw)}")
    if len(s) == 0:
        raise ValueError("cannot evaluate on zero prompts")
    for name, a in (("scores", s), ("q_strong", qs), ("q_weak", qw)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    return s, qs, qw


def cost_quality_curve(scores, q_strong, q_weak) -> Curve:
    """The quality at every strong-call share k/n, k = 0..n (equal scores routed as a block)."""
    s, qs, qw = _as_inputs(scores, q_strong, q_weak)
    n = len(s)
    # Stable sort on -score; blocks of equal score make the result independent of row order.
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    gain = (qs - qw)[order]
    # Block boundaries of equal scores.
    new_block = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    block_id = np.cumsum(new_block) - 1
    starts = np.flatnonzero(new_block)
    ends = np.r_[starts[1:], n]
    block_gain = np.add.reduceat(gain, starts)
    before = np.r_[0.0, np.cumsum(block_gain)[:-1]]  # total gain of earlier blocks
    k = np.arange(n + 1)
    # For k prompts routed, the block being filled is the one containing position k-1.
    cum = np.zeros(n + 1)
    pos = k[1:] - 1
    b = block_id[pos]
    size = ends[b] - starts[b]
    filled = k[1:] - starts[b]
    cum[1:] = before[b] + block_gain[b] * filled / size
    quality = qw.mean() + cum / n
    return Curve(share=k / n, quality=quality)


def pgr(curve: Curve, q_strong_mean: float, q_weak_mean: float) -> np.ndarray:
    """Performance gap recovered at each point of the curve."""
    gap = q_strong_mean - q_weak_mean
    if gap == 0:
        raise ValueError("the strong and weak model have the same mean quality on these prompts; "
                         "PGR is undefined")
    return (curve.quality - q_weak_mean) / gap


def cpt(share: np.ndarray, pgr_values: np.ndarray, target: float) -> float:
    """Smallest share with PGR >= target, interpolated linearly between curve points."""
    hit = np.flatnonzero(pgr_values >= target)
    if len(hit) == 0:
        return float("nan")
    i = hit[0]
    if i == 0:
        return float(share[0])
    x0, x1, y0, y1 = share[i - 1], share[i], pgr_values[i - 1], pgr_values[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def _area(curve: Curve, pgr_values: np.ndarray) -> float:
    from sklearn.metrics import auc  # imported on use: loading a router never needs sklearn

    return float(auc(curve.share, pgr_values))


def apgr(scores, q_strong, q_weak) -> float:
    """Average performance gap recovered: area under PGR(c) for c in [0, 1]."""
    s, qs, qw = _as_inputs(scores, q_strong, q_weak)
    curve = cost_quality_curve(s, qs, qw)
    return _area(curve, pgr(curve, qs.mean(), qw.mean()))


@dataclass(frozen=True)
class Report:
    """Routing metrics on one test set. Shares and CPT are fractions in [0, 1]."""

    n: int
    q_weak: float
    q_strong: float
    apgr: float
    cpt50: float
    cpt80: float
    auc: float
    random_apgr: float
    oracle_apgr: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def evaluate(scores, q_strong, q_weak) -> Report:
    """All of DESIGN.md's metrics for one score vector, with random and oracle references.

    AUC is the ROC AUC of the scores for the label "strong strictly better" (NaN if one class).
    """
    from sklearn.metrics import roc_auc_score

    s, qs, qw = _as_inputs(scores, q_strong, q_weak)
    curve = cost_quality_curve(s, qs, qw)
    p = pgr(curve, qs.mean(), qw.mean())
    y = (qs > qw).astype(int)
    roc = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")
    return Report(
        n=len(s),
        q_weak=float(qw.mean()),
        q_strong=float(qs.mean()),
        apgr=_area(curve, p),
        cpt50=cpt(curve.share, p, 0.5),
        cpt80=cpt(curve.share, p, 0.8),
        auc=roc,
        random_apgr=apgr(np.zeros_like(s), qs, qw),
        oracle_apgr=apgr(qs - qw, qs, qw),
    )


def plot_curves(curves: dict, q_strong, q_weak, path=None, *, title: str = "", threshold_share=None,
                ax=None):
    """Draw cost-quality curves with the random diagonal, the oracle and the two models' lines.

    curves: {label: scores (n,)} on the same prompts as q_strong/q_weak. threshold_share: mark
    a strong-call share on the first curve. Writes a PNG to ``path`` if given; returns the figure.
    """
    import matplotlib

    if ax is None and path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    qs = np.asarray(q_strong, dtype=np.float64)
    qw = np.asarray(q_weak, dtype=np.float64)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
    else:
        fig = ax.figure
    oracle = cost_quality_curve(qs - qw, qs, qw)
    ax.plot(oracle.share * 100, oracle.quality * 100, color="0.6", ls=":", label="oracle")
    ax.plot([0, 100], [qw.mean() * 100, qs.mean() * 100], color="0.5", ls="--", label="random")
    ax.axhline(qs.mean() * 100, color="tab:red", lw=0.8, label="always strong")
    ax.axhline(qw.mean() * 100, color="tab:blue", lw=0.8, label="always weak")
    first = None
    for label, scores in curves.items():
        c = cost_quality_curve(scores, qs, qw)
        a = _area(c, pgr(c, qs.mean(), qw.mean()))
        ax.plot(c.share * 100, c.quality * 100, lw=1.8, label=f"{label} (APGR {a:.3f})")
        first = first or c
    if threshold_share is not None and first is not None:
        i = int(round(threshold_share * (len(first.share) - 1)))
        ax.plot(first.share[i] * 100, first.quality[i] * 100, "ko", label="threshold")
    ax.set_xlabel("strong-model calls (%)")
    ax.set_ylabel("quality (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
