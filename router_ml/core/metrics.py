"""Cost-quality curves and routing metrics, numpy only: RouteLLM's APGR and CPT for a pair, and
the lam sweep, upper hull and AIQ (RouterBench) for many models.

Pair definitions (docs/protocols.md): sort prompts by score, highest first; routing the top
k to the strong model gives mean quality q(k), k = 0..n; prompts with equal scores form a block
whose quality is interpolated linearly. Strong-call share c = k/n. PGR(c) = (q(c) - q_weak) /
(q_strong - q_weak). APGR is the trapezoid area under PGR over c in [0, 1]; CPT(x%) the
smallest c with PGR(c) >= x/100, interpolated linearly between curve points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router_ml.core.heads import choose as _choose


@dataclass(frozen=True)
class Curve:
    """share: (n+1,) strong-call shares 0..1; quality: (n+1,) mean quality at each share."""

    share: np.ndarray
    quality: np.ndarray


def as_pair_inputs(scores, q_strong, q_weak):
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
    s, qs, qw = as_pair_inputs(scores, q_strong, q_weak)
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
    return _first_reach(share, pgr_values, target)


def _first_reach(xs: np.ndarray, ys: np.ndarray, target: float, tol: float = 0.0) -> float:
    """Smallest x at which the piecewise-linear curve (xs, ys) reaches target - tol,
    interpolated between points; NaN if it never does."""
    hit = np.flatnonzero(ys >= target - tol)
    if len(hit) == 0:
        return float("nan")
    i = hit[0]
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(min(x1, x0 + (target - y0) * (x1 - x0) / (y1 - y0)))


def curve_area(curve: Curve, pgr_values: np.ndarray) -> float:
    from sklearn.metrics import auc  # imported on use: loading a router never needs sklearn

    return float(auc(curve.share, pgr_values))


def apgr(scores, q_strong, q_weak) -> float:
    """Average performance gap recovered: area under PGR(c) for c in [0, 1]."""
    s, qs, qw = as_pair_inputs(scores, q_strong, q_weak)
    curve = cost_quality_curve(s, qs, qw)
    return curve_area(curve, pgr(curve, qs.mean(), qw.mean()))


def check_matrix(name: str, a, shape=None) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (n prompts, m models) array; got shape {x.shape}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name} has shape {x.shape}; expected {shape} like qhat")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} has shape {x.shape}: need at least one prompt and one model")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values; drop or fill those rows first")
    return x


def as_cost_matrix(costs, shape) -> np.ndarray:
    c = check_matrix("costs", costs, shape)
    if (c < 0).any():
        raise ValueError("costs holds negative values; costs are USD per request, >= 0")
    return c


def _check_lam(lam) -> float:
    lam = float(lam)
    if not (lam >= 0):  # also rejects NaN
        raise ValueError(f"lam must be >= 0 (float or np.inf); got {lam}")
    return lam


def choose(qhat, costs, lam) -> np.ndarray:
    """The model each prompt is sent to at knob ``lam``.

    qhat, costs: (n, m) predicted qualities and USD costs per request (finite, costs >= 0).
    lam: >= 0, USD^-1 (quality given up per dollar saved), or np.inf. Returns (n,) int column
    indices of argmax_m qhat - lam * cost; ties go to the lower cost, then the lower index. At
    lam = inf the cheapest model of the row, and among equally cheap ones the highest qhat (the
    limit of large finite lam), then the lower index.
    """
    q = check_matrix("qhat", qhat)
    c = as_cost_matrix(costs, q.shape)
    return _choose(q, c, _check_lam(lam))


def _dedupe_equal_costs(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, m) bool: the models that can ever be chosen by cost ties alone (of equal-cost
    models only the highest qhat, then the lowest index, survives: the others never win)."""
    n, m = q.shape
    alive = np.ones((n, m), dtype=bool)
    for j in range(m):
        for i in range(j):
            same = c[:, i] == c[:, j]
            # i < j: j loses to i when i predicts at least as well; i loses when j predicts better
            alive[:, j] &= ~(same & (q[:, i] >= q[:, j]))
            alive[:, i] &= ~(same & (q[:, j] > q[:, i]))
    return alive


def _envelope_events(q: np.ndarray, c: np.ndarray):
    """Walk every row's upper envelope of the lines qhat_m - lam * cost_m as lam grows.

    Returns (lam, row, from_model, to_model) of every change of choice, 1-d arrays of equal
    length (at most n * (m - 1)): the choice of ``row`` is ``from_model`` just below ``lam`` and
    ``to_model`` from ``lam`` on (ties at the breakpoint go to the cheaper model).
    """
    n, m = q.shape
    alive = _dedupe_equal_costs(q, c)
    cur = _choose(q, c, 0.0)
    lam_cur = np.zeros(n)
    active = np.arange(n)
    out = []
    for _ in range(m - 1):
        if len(active) == 0:
            break
        a, ca = cur[active], lam_cur[active]
        qc, cc = q[active, a][:, None], c[active, a][:, None]
        qa, cst = q[active], c[active]
        cheaper = alive[active] & (cst < cc)
        cross = np.where(cheaper, (qc - qa) / np.where(cheaper, cc - cst, 1.0), np.inf)
        # in exact arithmetic every crossing lies beyond the current breakpoint; rounding
        # may put one a hair before it
        cross = np.where(cheaper, np.maximum(cross, ca[:, None]), np.inf)
        nxt = cross.min(axis=1)
        has = np.isfinite(nxt)
        # of the lines meeting the current one there, the cheapest leads from then on
        tied_cost = np.where(cheaper & (cross == nxt[:, None]), cst, np.inf)
        to = np.argmin(tied_cost, axis=1)  # equal costs were deduplicated
        sel = np.flatnonzero(has)
        out.append((nxt[sel], active[sel], a[sel], to[sel]))
        cur[active[sel]] = to[sel]
        lam_cur[active[sel]] = nxt[sel]
        active = active[sel]
    if not out:
        e = np.empty(0)
        return e, e.astype(np.intp), e.astype(np.intp), e.astype(np.intp)
    return tuple(np.concatenate(x) for x in zip(*out))


def knob_breakpoints(qhat, costs) -> np.ndarray:
    """The knob values at which at least one prompt's choice changes.

    qhat, costs: (n, m) as for :func:`choose`. Returns a sorted 1-d array of distinct values
    > 0 (USD^-1), at most n * (m - 1) of them; choose() is constant on each open interval
    between consecutive breakpoints (at a breakpoint itself, where the tie is exact in floating
    point, it already takes the value to its right).
    """
    q = check_matrix("qhat", qhat)
    c = as_cost_matrix(costs, q.shape)
    return np.unique(_envelope_events(q, c)[0])


@dataclass(frozen=True)
class Sweep:
    """The distinct policies of a router as lam goes from 0 to inf (k points, lam increasing).

    lam: (k,) the knob value each policy was evaluated at (USD^-1): 0, the midpoints between
    consecutive breakpoints, inf (k = breakpoints + 1; with no breakpoint a single point at
    lam = 0, the policy of every lam). cost: (k,) mean USD per request (non-increasing).
    quality: (k,) mean true quality. choice_share: (k, m) share of prompts sent to each model
    (rows sum to 1).
    """

    lam: np.ndarray
    cost: np.ndarray
    quality: np.ndarray
    choice_share: np.ndarray


def sweep(qhat, q_true, costs) -> Sweep:
    """Every distinct policy of ``qhat`` at knob values 0 .. inf, scored with ``q_true``.

    qhat, q_true, costs: (n, m); all finite (rows with NaN in q_true are rejected with a
    ValueError: drop them first). Computed incrementally from the breakpoints: O(n m^2) plus a
    sort of at most n (m - 1) events; n = 5000, m = 9 takes milliseconds.
    """
    q = check_matrix("qhat", qhat)
    qt = check_matrix("q_true", q_true, q.shape)
    c = as_cost_matrix(costs, q.shape)
    return sweep_policies(q, qt, c)


def sweep_policies(q: np.ndarray, qt: np.ndarray, c: np.ndarray) -> Sweep:
    n, m = q.shape
    lam_e, row, frm, to = _envelope_events(q, c)
    order = np.argsort(lam_e, kind="stable")
    lam_e, row, frm, to = lam_e[order], row[order], frm[order], to[order]
    start = _choose(q, c, 0.0)
    rows = np.arange(n)
    d_cost = np.r_[c[rows, start].sum(), c[row, to] - c[row, frm]]
    d_qual = np.r_[qt[rows, start].sum(), qt[row, to] - qt[row, frm]]
    d_share = np.zeros((len(lam_e) + 1, m))
    d_share[0] = np.bincount(start, minlength=m)
    np.subtract.at(d_share, (np.arange(1, len(lam_e) + 1), frm), 1.0)
    np.add.at(d_share, (np.arange(1, len(lam_e) + 1), to), 1.0)
    # one point per distinct breakpoint: the policy after every change at that lam (entry i of
    # the cumulative sums holds the policy after event i - 1)
    group_end = np.flatnonzero(np.r_[lam_e[1:] != lam_e[:-1], len(lam_e) > 0])
    take = np.r_[0, group_end + 1]
    cost = np.cumsum(d_cost)[take] / n
    quality = np.cumsum(d_qual)[take] / n
    share = np.cumsum(d_share, axis=0)[take] / n
    bps = lam_e[group_end]
    # without breakpoints one policy holds at every lam: a single point, lam = [0]
    lam = np.r_[0.0, (bps[:-1] + bps[1:]) / 2, np.inf] if len(bps) else np.zeros(1)
    return Sweep(lam=lam, cost=cost, quality=quality, choice_share=share)


def _as_points(cost, quality) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(cost, dtype=np.float64).ravel()
    y = np.asarray(quality, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"cost and quality differ in length: {len(x)}, {len(y)}")
    if len(x) == 0:
        raise ValueError("cost and quality are empty: need at least one point")
    for name, a in (("cost", x), ("quality", y)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    return x, y


def upper_hull(cost, quality) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing part of the upper convex hull of the points (cost[i], quality[i]).

    cost, quality: (k,) finite (USD per request, mean quality). Returns (hull_cost, hull_quality),
    each (h,), cost strictly increasing and quality strictly increasing: from the cheapest point
    (of equal costs the best quality) to the cheapest point of the highest quality; collinear
    middle points are dropped.
    """
    x, y = _as_points(cost, quality)
    order = np.lexsort((-y, x))  # cost up, then quality down
    x, y = x[order], y[order]
    # Only Pareto points (better than every cheaper point) can be vertices of the rising part:
    # this shrinks tens of thousands of sweep points to a few before the loop below.
    prev_best = np.r_[-np.inf, np.maximum.accumulate(y)[:-1]]
    keep = y > prev_best
    hx, hy = [], []
    for px, py in zip(x[keep].tolist(), y[keep].tolist()):
        # pop the last vertex while it is not strictly above the chord from its predecessor
        while len(hx) >= 2 and ((hx[-1] - hx[-2]) * (py - hy[-2])
                                - (hy[-1] - hy[-2]) * (px - hx[-2])) >= 0:
            hx.pop()
            hy.pop()
        hx.append(px)
        hy.append(py)
    return np.asarray(hx), np.asarray(hy)


def hull_value(hull_cost, hull_quality, c):
    """The hull as a function of mean cost ``c`` (USD per request; scalar or array).

    Linear between hull points, flat at the last (highest) quality beyond the last point, NaN
    below the first point (a cost the router cannot reach). Returns a float for a scalar ``c``,
    else an array of c's shape.
    """
    hx, hy = _as_points(hull_cost, hull_quality)
    c_arr = np.asarray(c, dtype=np.float64)
    out = np.interp(c_arr, hx, hy)
    out = np.where(c_arr < hx[0], np.nan, out)
    return float(out) if out.ndim == 0 else out


def aiq(hull_cost, hull_quality, lo: float, hi: float) -> float:
    """Average improvement in quality (RouterBench): the area under :func:`hull_value` over
    [lo, hi] divided by (hi - lo), in quality units.

    lo, hi: USD per request, lo <= hi; :func:`evaluate_multi` uses the cheapest and the dearest
    single model's mean cost. A router's hull starts at its all-cheapest policy, at or below lo.
    If the first hull point lies above lo but within 1e-12 (relative) of it, the hull counts as
    starting at lo; if it lies clearly above lo, the unreached part [lo, first point) adds zero
    area (the integral starts at the first hull point; the width stays hi - lo). With lo == hi
    the AIQ is the hull's value at lo (NaN if not reached).
    """
    hx, hy = _as_points(hull_cost, hull_quality)
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"need finite lo <= hi; got lo={lo}, hi={hi}")
    at_lo = abs(hx[0] - lo) <= 1e-12 * max(abs(lo), abs(hx[0]))
    if lo == hi:
        return float(hy[0]) if at_lo else hull_value(hx, hy, lo)
    start = lo if (at_lo or hx[0] <= lo) else float(hx[0])
    if start >= hi:
        return 0.0
    xs = np.r_[start, hx[(hx > start) & (hx < hi)], hi]
    # np.interp holds the first quality left of the first point (the at_lo case) and the last
    # quality right of the last point (flat at the maximum)
    return float(np.trapezoid(np.interp(xs, hx, hy), xs) / (hi - lo))


def reach_cost(hx: np.ndarray, hy: np.ndarray, target: float) -> float:
    """Least cost at which the rising hull reaches ``target`` (1e-12 slack for rounding of the
    means); NaN if it never does."""
    return _first_reach(hx, hy, target, tol=1e-12 * max(1.0, abs(target)))
