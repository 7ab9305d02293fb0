"""Choosing the threshold: to a strong-call share, a quality target or (see costs) a budget.

The rule everywhere: a prompt goes to the strong model when ``score >= threshold``.
Thresholds are always scores seen on the calibration set (or 0.0 / 1.0 at the ends), so
prompts with equal scores are never split and the achieved values are exact on that set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from router_ml.core.heads import is_number
from router_ml.errors import CalibrationError


@dataclass(frozen=True)
class CalibrationRecord:
    """How a threshold was chosen. method: ``share``, ``quality``, ``budget`` or ``manual``;
    target: what was asked; achieved: what the threshold gives on the calibration set
    (share and, with labels, quality and PGR); n: calibration prompts; fingerprint: their hash."""

    method: str
    target: dict
    achieved: dict = field(default_factory=dict)
    n: int = 0
    fingerprint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def check_threshold(value) -> float:
    """A threshold as a float in [0, 1]; TypeError/ValueError otherwise."""
    if not is_number(value):
        raise TypeError(f"threshold must be a number in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {value}")
    return value


def check_scores(scores) -> np.ndarray:
    """Calibration scores as a flat float64 array; CalibrationError if empty or not finite."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(s) == 0:
        raise CalibrationError("calibration needs at least one prompt, got none")
    if not np.isfinite(s).all():
        raise CalibrationError("calibration scores hold NaN or infinite values")
    return s


def candidate_thresholds(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds (1.0, then each distinct score, highest first, then 0.0) and the
    number of prompts each sends to the strong model. Scores of exactly 1.0 are strong at any
    threshold; 0.0 sends every prompt, also future ones, to the strong model."""
    uniq = np.unique(s)[::-1]
    counts = np.searchsorted(np.sort(-s), -uniq, side="right")  # n with score >= u
    t = np.r_[1.0, uniq, 0.0]
    k = np.r_[int((s >= 1.0).sum()), counts, len(s)]
    return t, k


def threshold_for_share(scores, share: float) -> tuple[float, float]:
    """The threshold whose strong-call share on ``scores`` is closest to ``share`` (ties go
    to the lower share). share 0 gives 1.0 (only scores of exactly 1.0 go strong), share 1
    gives 0.0 (everything goes strong). Returns (threshold, achieved share)."""
    if not is_number(share):
        raise TypeError(f"share must be a number in [0, 1], got {type(share).__name__}")
    share = float(share)
    if not math.isfinite(share) or not 0.0 <= share <= 1.0:
        raise CalibrationError(f"target share must be in [0, 1], got {share}")
    s = check_scores(scores)
    if share == 1.0:
        return 0.0, 1.0
    t, k = candidate_thresholds(s)
    achieved = k / len(s)
    i = int(np.argmin(np.abs(achieved - share)))
    return float(t[i]), float(achieved[i])


def threshold_for_quality(scores, q_strong, q_weak, *, min_pgr: float | None = None,
                          max_drop: float | None = None) -> tuple[float, dict]:
    """The highest threshold (fewest strong calls) that meets a quality target on a labelled set.

    min_pgr: the performance gap recovered must be at least this (e.g. 0.9);
    max_drop: mean quality may fall at most this much below always-strong (e.g. 0.01 = one
    point of accuracy). Exactly one must be given. Returns (threshold, achieved) with achieved
    share, quality and pgr. CalibrationError if no threshold meets the target.
    """
    if (min_pgr is None) == (max_drop is None):
        raise CalibrationError("give exactly one of min_pgr or max_drop")
    s = check_scores(scores)
    qs = np.asarray(q_strong, dtype=np.float64).ravel()
    qw = np.asarray(q_weak, dtype=np.float64).ravel()
    if not (len(qs) == len(qw) == len(s)):
        raise CalibrationError(f"scores, q_strong and q_weak differ in length: {len(s)}, {len(qs)}, {len(qw)}")
    if not (np.isfinite(qs).all() and np.isfinite(qw).all()):
        raise CalibrationError("qualities hold NaN or infinite values")
    if ((qs < 0) | (qs > 1) | (qw < 0) | (qw > 1)).any():
        raise CalibrationError("qualities q_strong and q_weak must be in [0, 1]")
    target = min_pgr if min_pgr is not None else max_drop
    if not is_number(target) \
            or not math.isfinite(float(target)):
        raise CalibrationError(f"quality target must be a finite number, got {target!r}")
    if max_drop is not None and max_drop < 0:
        raise CalibrationError(f"max_drop must be >= 0, got {max_drop}")
    n = len(s)
    gap = qs.mean() - qw.mean()
    t, k = candidate_thresholds(s)
    order = np.argsort(-s, kind="stable")
    cum_gain = np.r_[0.0, np.cumsum((qs - qw)[order])]
    quality = qw.mean() + cum_gain[k] / n
    if min_pgr is not None:
        if gap <= 0:
            raise CalibrationError("the strong model is not better than the weak one on this "
                                   "calibration set; PGR is undefined")
        pgr = (quality - qw.mean()) / gap
        ok = pgr >= min_pgr
    else:
        ok = qs.mean() - quality <= max_drop + 1e-12
    if not ok.any():
        what = f"PGR >= {min_pgr}" if min_pgr is not None else f"quality drop <= {max_drop}"
        raise CalibrationError(f"no threshold reaches {what} on these {n} prompts")
    i = int(np.flatnonzero(ok)[0])
    achieved = {"share": float(k[i] / n), "quality": float(quality[i]),
                "pgr": float((quality[i] - qw.mean()) / gap) if gap != 0 else None}
    return float(t[i]), achieved


def calibrate(scores, *, share: float | None = None, q_strong=None, q_weak=None,
              min_pgr: float | None = None, max_drop: float | None = None, n: int = 0,
              fingerprint: str = "", delta: float | None = None) -> tuple[float, CalibrationRecord]:
    """The threshold for a target on ``scores`` and its record: a strong-call ``share``, or
    ``min_pgr`` / ``max_drop`` with the qualities q_strong, q_weak (see
    :func:`threshold_for_quality`); ``max_drop`` with ``delta``: with probability 1 - delta
    the drop on new traffic is at most max_drop (see :func:`threshold_with_guarantee`).
    n, fingerprint: what the scores were computed on."""
    if delta is not None:
        if max_drop is None or share is not None or min_pgr is not None:
            raise ValueError("delta goes with max_drop only")
        if q_strong is None or q_weak is None:
            raise ValueError("a quality target needs q_strong and q_weak for the prompts")
        t, achieved = threshold_with_guarantee(scores, q_strong, q_weak, max_drop=max_drop,
                                               delta=delta)
        return t, CalibrationRecord("guarantee", {"max_drop": max_drop, "delta": delta},
                                    achieved, n, fingerprint)
    if share is not None:
        if min_pgr is not None or max_drop is not None:
            raise ValueError("give either share or a quality target, not both")
        t, achieved = threshold_for_share(scores, share)
        return t, CalibrationRecord("share", {"share": float(share)}, {"share": achieved}, n,
                                    fingerprint)
    if min_pgr is None and max_drop is None:
        raise ValueError("give a calibration target: share, min_pgr or max_drop")
    if q_strong is None or q_weak is None:
        raise ValueError("a quality target needs q_strong and q_weak for the prompts")
    t, achieved = threshold_for_quality(scores, q_strong, q_weak, min_pgr=min_pgr,
                                        max_drop=max_drop)
    target = {"min_pgr": min_pgr} if min_pgr is not None else {"max_drop": max_drop}
    return t, CalibrationRecord("quality", target, achieved, n, fingerprint)


# ---------------------------------------------------------------------------- lam (N models)

def lam_for_target(values, qualities, costs, *, max_drop: float | None = None,
                   budget: float | None = None, dearest_share: float | None = None,
                   fingerprint: str = "", strict: bool = True) -> tuple[float, CalibrationRecord]:
    """The knob ``lam`` for a target on labelled reference rows, and its record.

    values: (n, m) the router's decision values on the rows; qualities: (n, m) true qualities
    in [0, 1] (rows with a missing quality are left out); costs: (n, m) USD per row and model.
    Exactly one target: ``max_drop`` (mean quality at most this far below the best single
    model's: the largest such lam, i.e. the cheapest), ``budget`` (mean USD per request at most
    this: the best quality within it; a monthly budget is budget / requests per month) or
    ``dearest_share`` (the share of calls to the dearest model closest to this, ties to the
    lower share; models of equal top mean cost count together). CalibrationError if no lam meets
    it; with ``strict=False`` the closest policy instead (the best quality for ``max_drop``, the
    least cost for ``budget``), and the record's ``achieved["met"]`` says False.
    """
    from router_ml.core.metrics import sweep

    given = {k: v for k, v in (("max_drop", max_drop), ("budget", budget),
                               ("dearest_share", dearest_share)) if v is not None}
    if len(given) != 1:
        raise CalibrationError("give exactly one of max_drop, budget or dearest_share")
    (what, target), = given.items()
    if not is_number(target) or not math.isfinite(float(target)) or target < 0 \
            or (what == "dearest_share" and target > 1):
        raise CalibrationError(f"{what} must be a finite number >= 0"
                               f"{' and <= 1' if what == 'dearest_share' else ''}, got {target!r}")
    V = np.asarray(values, dtype=np.float64)
    Q = np.asarray(qualities, dtype=np.float64)
    C = np.asarray(costs, dtype=np.float64)
    if not (V.shape == Q.shape == C.shape) or V.ndim != 2:
        raise CalibrationError(f"values, qualities and costs must have one shape (n, m), got "
                               f"{V.shape}, {Q.shape}, {C.shape}")
    keep = np.isfinite(Q).all(axis=1)
    V, Q, C = V[keep], Q[keep], C[keep]
    if len(V) == 0:
        raise CalibrationError("calibration needs rows with a quality for every model, got none")
    if not (np.isfinite(V).all() and np.isfinite(C).all()):
        raise CalibrationError("calibration values or costs hold NaN or infinite values")
    n = len(V)
    mean_cost = C.mean(axis=0)
    dearest = np.flatnonzero(mean_cost >= mean_cost.max() * (1 - 1e-12))  # ties: all of them
    best_single = float(Q.mean(axis=0).max())
    # every distinct policy, exactly: one knob value between each pair of breakpoints
    policies = sweep(V, Q, C)
    lams, cost, quality = policies.lam, policies.cost, policies.quality
    share = policies.choice_share[:, dearest].sum(axis=1)
    if what == "max_drop":
        ok = np.flatnonzero(quality >= best_single - target - 1e-12)
        i = None if not len(ok) else ok[np.lexsort((-lams[ok], cost[ok]))[0]]
    elif what == "budget":
        ok = np.flatnonzero(cost <= target * (1 + 1e-12))
        i = None if not len(ok) else ok[np.lexsort((cost[ok], -quality[ok]))[0]]
    else:
        i = int(np.lexsort((share, np.abs(share - target)))[0])
    met = i is not None
    if i is None and strict:
        raise CalibrationError(f"no lam reaches {what} {target} on these {n} rows "
                               f"(best single model quality {best_single:.4f}, least mean cost "
                               f"{cost.min():.3g} USD)")
    if i is None:  # the closest: the best quality (ties: cheaper), or the least cost
        i = int(np.lexsort((cost, -quality))[0] if what == "max_drop" else np.argmin(cost))
    lam = float(lams[i])
    achieved = {"lam": lam if math.isfinite(lam) else None, "mean_cost": float(cost[i]),
                "quality": float(quality[i]), "dearest_share": float(share[i]),
                "best_single_quality": best_single, "met": met}
    method = {"max_drop": "quality", "budget": "budget", "dearest_share": "share"}[what]
    return (lam if math.isfinite(lam) else 1e12), CalibrationRecord(method, {what: float(target)},
                                                                    achieved, n, fingerprint)


# ---------------------------------------------------------------------------- a guarantee


def threshold_with_guarantee(scores, q_strong, q_weak, *, max_drop: float,
                             delta: float = 0.1) -> tuple[float, dict]:
    """The highest threshold whose quality drop is at most ``max_drop`` with probability at
    least 1 - ``delta`` on new traffic (Learn-then-Test, Angelopoulos et al. 2021).

    The drop of a prompt sent to the weak model is q_strong - q_weak (in [-1, 1]), 0 for one
    sent to the strong model; the risk of a threshold is the mean drop. Thresholds are tested
    from the lowest (every prompt strong: no drop) upwards, each at level ``delta`` with the
    empirical-Bernstein upper bound of Maurer and Pontil (2009), and the walk stops at the
    first that fails (fixed-sequence testing, so the whole family keeps level delta).
    Assumption: the calibration rows and the future traffic are exchangeable (drawn from the
    same distribution); under drift the guarantee does not hold. Returns (threshold,
    achieved: share, quality, drop and its upper bound on these rows).
    """
    s = check_scores(scores)
    qs = np.asarray(q_strong, dtype=np.float64).ravel()
    qw = np.asarray(q_weak, dtype=np.float64).ravel()
    if not (len(qs) == len(qw) == len(s)) or not (np.isfinite(qs).all() and np.isfinite(qw).all()):
        raise CalibrationError("scores, q_strong and q_weak must be finite and of one length")
    for name, v, hi in (("max_drop", max_drop, 1.0), ("delta", delta, 1.0)):
        if not is_number(v) or not 0 < float(v) < hi:
            raise CalibrationError(f"{name} must be a number in (0, 1), got {v!r}")
    n = len(s)
    if n < 2:
        raise CalibrationError("a guarantee needs at least two calibration prompts")
    t, k = candidate_thresholds(s)
    order = np.argsort(-s, kind="stable")
    gain = (qs - qw)[order]
    # drop of routing the top k strong: the gains of the rows after k
    after = np.r_[np.cumsum(gain[::-1])[::-1], 0.0]
    after_sq = np.r_[np.cumsum((gain ** 2)[::-1])[::-1], 0.0]
    mean = after[k] / n
    var = np.maximum(after_sq[k] / n - mean ** 2, 0.0) * n / (n - 1)
    log_term = math.log(2 / delta)
    ucb = mean + np.sqrt(2 * var * log_term / n) + 7 * 2.0 * log_term / (3 * (n - 1))
    i_last = None
    for i in range(len(t) - 1, -1, -1):  # lowest threshold (most strong calls) first
        if ucb[i] > max_drop:
            break
        i_last = i
    if i_last is None:
        raise CalibrationError(f"no threshold guarantees a drop <= {max_drop} at delta "
                               f"{delta} on {n} prompts; use more calibration rows or a "
                               "larger max_drop")
    quality = qs.mean() - mean[i_last]
    return float(t[i_last]), {"share": float(k[i_last] / n), "quality": float(quality),
                              "drop": float(mean[i_last]), "drop_upper_bound": float(ucb[i_last]),
                              "delta": float(delta)}
