"""Evaluation reports and plots: a pair's curve, APGR, CPT and baselines (:func:`evaluate`);
many models' sweep, hull, AIQ and saving (:func:`evaluate_multi`). The metrics themselves are
in :mod:`router_ml.core.metrics` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from router_ml.core.metrics import (  # the metrics, re-exported: evaluation's public surface
    Curve,
    Sweep,
    curve_area,
    as_cost_matrix,
    as_pair_inputs,
    check_matrix,
    reach_cost,
    sweep_policies,
    aiq,
    apgr,
    choose,
    cost_quality_curve,
    cpt,
    hull_value,
    knob_breakpoints,
    pgr,
    sweep,
    upper_hull,
)


__all__ = [
    "BASELINES", "PUBLISHED", "Curve", "MultiReport", "Report", "Sweep", "aiq", "apgr", "at_knob",
    "baseline_scores", "choose", "cost_quality_curve", "cpt", "evaluate", "evaluate_multi",
    "evaluate_rows", "hull_value", "knob_breakpoints", "pgr", "plot_curves", "plot_multi",
    "pooled_scores", "rated_metric", "saved_knob", "sweep", "upper_hull",
]


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
    """All of docs/protocols.md's metrics for one score vector, with random and oracle references.

    AUC is the ROC AUC of the scores for the label "strong strictly better" (NaN if one class).
    """
    from sklearn.metrics import roc_auc_score

    s, qs, qw = as_pair_inputs(scores, q_strong, q_weak)
    curve = cost_quality_curve(s, qs, qw)
    p = pgr(curve, qs.mean(), qw.mean())
    y = (qs > qw).astype(int)
    roc = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")
    return Report(
        n=len(s),
        q_weak=float(qw.mean()),
        q_strong=float(qs.mean()),
        apgr=curve_area(curve, p),
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
        a = curve_area(c, pgr(c, qs.mean(), qw.mean()))
        ax.plot(c.share * 100, c.quality * 100, lw=1.8, label=f"{label} (APGR {a:.3f})")
        first = first or c
    if threshold_share is not None and first is not None:
        i = int(round(threshold_share * (len(first.share) - 1)))
        ax.plot(first.share[i] * 100, first.quality[i] * 100, "ko", label="threshold")
    return _finish(fig, ax, path, "strong-model calls (%)", title)


@dataclass(frozen=True)
class MultiReport:
    """Multi-model routing metrics on one test set (docs/protocols.md).

    Costs are mean USD per request; qualities mean true quality (the data's scale, e.g. [0, 1]).
    model_cost, model_quality: (m,) each single model's means. best_*: the single model of the
    highest mean quality (ties to the cheaper). lo, hi: the cheapest and dearest model's mean
    cost, the AIQ range. sweep: the router's policies; hull_cost, hull_quality: (h,) their rising
    upper hull. max_quality: the router's highest point. cost_share_at_best: least mean cost at
    which the hull reaches best_quality, as a share of best_cost (NaN if never reached, or if
    best_cost is 0); saving = 1 - cost_share_at_best. oracle_*: the same for qhat = q_true.
    """

    n: int
    models: tuple
    model_cost: np.ndarray
    model_quality: np.ndarray
    best_model: str
    best_cost: float
    best_quality: float
    lo: float
    hi: float
    sweep: Sweep
    hull_cost: np.ndarray
    hull_quality: np.ndarray
    aiq: float
    max_quality: float
    cost_share_at_best: float
    saving: float
    oracle_hull_cost: np.ndarray
    oracle_hull_quality: np.ndarray
    oracle_aiq: float
    oracle_max_quality: float
    oracle_cost_share_at_best: float
    oracle_saving: float

    def to_dict(self) -> dict:
        """JSON-able: arrays become lists, NaN and inf (the last knob value) become None."""
        return _jsonable(asdict(self))


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _router_summary(s: Sweep, lo: float, hi: float, best_cost: float, best_quality: float):
    hx, hy = upper_hull(s.cost, s.quality)
    reach = reach_cost(hx, hy, best_quality)
    share = reach / best_cost if best_cost > 0 else float("nan")
    return hx, hy, aiq(hx, hy, lo, hi), float(hy[-1]), share, 1.0 - share


def evaluate_multi(qhat, q_true, costs, models) -> MultiReport:
    """All multi-model metrics of docs/protocols.md for one router's predicted qualities.

    qhat: (n, m) predicted qualities; q_true: (n, m) true qualities (finite: drop rows with a
    missing score first); costs: (n, m) USD per request, >= 0; models: m names, the columns.
    """
    q = check_matrix("qhat", qhat)
    qt = check_matrix("q_true", q_true, q.shape)
    c = as_cost_matrix(costs, q.shape)
    models = tuple(str(x) for x in models)
    if len(models) != q.shape[1]:
        raise ValueError(f"models names {len(models)} models; qhat has {q.shape[1]} columns")
    model_cost, model_quality = c.mean(axis=0), qt.mean(axis=0)
    best = int(np.lexsort((np.arange(len(models)), model_cost, -model_quality))[0])
    lo, hi = float(model_cost.min()), float(model_cost.max())
    bc, bq = float(model_cost[best]), float(model_quality[best])
    s = sweep_policies(q, qt, c)
    hx, hy, a, mx, share, saving = _router_summary(s, lo, hi, bc, bq)
    ohx, ohy, oa, omx, oshare, osaving = _router_summary(sweep_policies(qt, qt, c), lo, hi, bc, bq)
    return MultiReport(
        n=q.shape[0], models=models, model_cost=model_cost, model_quality=model_quality,
        best_model=models[best], best_cost=bc, best_quality=bq, lo=lo, hi=hi, sweep=s,
        hull_cost=hx, hull_quality=hy, aiq=a, max_quality=mx, cost_share_at_best=share,
        saving=saving, oracle_hull_cost=ohx, oracle_hull_quality=ohy, oracle_aiq=oa,
        oracle_max_quality=omx, oracle_cost_share_at_best=oshare, oracle_saving=osaving,
    )


def at_knob(picks, q_true, costs=None, models=None) -> dict:
    """What a router's actual decisions give on test rows: the saved knob, not the sweep.

    picks: (n,) column of the chosen model per row (``router.route_arrays(prompts).index``,
    fallback included); q_true: (n, m) true qualities; costs: (n, m) USD per request (more
    than two models); models: m names. Returns, for a pair (m = 2, strong first):
    ``strong_share`` (fraction of rows sent to the strong model), ``quality`` (mean true
    quality of the chosen answers) and ``pgr`` (the share of the quality gap recovered,
    (quality - q_weak) / (q_strong - q_weak); None when the two means are equal). For more:
    ``quality``, ``mean_cost`` (USD per request), ``shares`` ({model: fraction of rows}), the
    best single model (as :func:`evaluate_multi` picks it: highest mean quality, ties to the
    cheaper) with ``best_quality`` and ``best_cost``, ``quality_drop`` (best_quality -
    quality) and ``cost_share`` (mean_cost / best_cost; None when best_cost is 0).
    """
    qt = check_matrix("q_true", q_true)
    n, m = qt.shape
    j = np.asarray(picks, dtype=np.intp).ravel()
    if j.shape != (n,) or ((j < 0) | (j >= m)).any():
        raise ValueError(f"picks must be {n} column indices in [0, {m}), got shape {j.shape}")
    rows = np.arange(n)
    quality = float(qt[rows, j].mean())
    if m == 2 and costs is None:
        qs, qw = float(qt[:, 0].mean()), float(qt[:, 1].mean())
        return {"strong_share": float((j == 0).mean()), "quality": quality,
                "pgr": None if qs == qw else (quality - qw) / (qs - qw)}
    c = as_cost_matrix(costs, qt.shape)
    names = [str(x) for x in (models if models is not None else range(m))]
    model_cost, model_quality = c.mean(axis=0), qt.mean(axis=0)
    best = int(np.lexsort((np.arange(m), model_cost, -model_quality))[0])
    mean_cost, best_cost = float(c[rows, j].mean()), float(model_cost[best])
    return {"quality": quality, "mean_cost": mean_cost,
            "shares": {x: float((j == k).mean()) for k, x in enumerate(names)},
            "best_model": names[best], "best_quality": float(model_quality[best]),
            "best_cost": best_cost, "quality_drop": float(model_quality[best]) - quality,
            "cost_share": mean_cost / best_cost if best_cost > 0 else None}


def plot_multi(report: MultiReport, path=None, *, ax=None, per_month: float | None = None,
               title: str = ""):
    """Quality (%) against mean cost per request (USD): every single model as a labelled point,
    the router's policies (small, light) and hull, the oracle's hull (dotted). Hulls are drawn
    flat to the dearest model's cost, as AIQ integrates them. per_month: requests per month; adds
    a top axis in USD per month. Writes a PNG to ``path`` if given; returns the figure.
    """
    import matplotlib

    if ax is None and path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.8, 4.6))
    else:
        fig = ax.figure
    r = report

    def flat_to_hi(hx, hy):
        return (np.r_[hx, r.hi], np.r_[hy, hy[-1]]) if hx[-1] < r.hi else (hx, hy)

    ax.scatter(r.sweep.cost, r.sweep.quality * 100, s=5, color="tab:blue", alpha=0.2, lw=0,
               label="router policies")
    x, y = flat_to_hi(r.hull_cost, r.hull_quality)
    ax.plot(x, y * 100, color="tab:blue", lw=1.8, label=f"router hull (AIQ {r.aiq * 100:.1f})")
    x, y = flat_to_hi(r.oracle_hull_cost, r.oracle_hull_quality)
    ax.plot(x, y * 100, color="0.4", ls=":", lw=1.4, label=f"oracle (AIQ {r.oracle_aiq * 100:.1f})")
    ax.scatter(r.model_cost, r.model_quality * 100, s=22, color="tab:red", zorder=3,
               label="single models")
    for name, mc, mq in zip(r.models, r.model_cost, r.model_quality):
        ax.annotate(name + (" (best)" if name == r.best_model else ""), (mc, mq * 100),
                    xytext=(4, 3), textcoords="offset points", fontsize=7)
    if per_month is not None:
        k = float(per_month)
        top = ax.secondary_xaxis("top", functions=(lambda v: v * k, lambda v: v / k))
        top.set_xlabel(f"USD per month at {k:,.0f} requests per month")
    return _finish(fig, ax, path, "mean cost per request (USD)", title)


def _finish(fig, ax, path, xlabel: str, title: str):
    """Labels, legend and grid of a cost-quality plot; the PNG at ``path`` if given."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("quality (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def spearman(a, b) -> float:
    """Spearman's rho of a and b: Pearson's correlation of their ranks (ties get their mean
    rank); 0 where undefined (a constant input)."""
    from scipy.stats import rankdata

    with np.errstate(invalid="ignore", divide="ignore"):  # a constant input: NaN, then 0
        c = np.corrcoef(rankdata(a), rankdata(b))[0, 1]
    return float(c) if np.isfinite(c) else 0.0


# ---------------------------------------------------------------- a protocol's folds
BASELINES = ("random", "length")


PUBLISHED = {"mmlu": {"apgr": 0.603, "cpt50": 0.354}, "gsm8k": {"apgr": 0.622, "cpt50": 0.336},
             "mmlu-to-gsm8k": {"apgr": 0.622, "cpt50": 0.336}}


def baseline_scores(name: str, prompts, seed: int = 0) -> np.ndarray:
    """Scores of a baseline: ``random`` (uniform, seeded) or ``length`` (characters)."""
    if name == "random":
        return np.random.default_rng(seed).random(len(prompts))
    if name == "length":
        return np.array([len(p) for p in prompts], dtype=np.float64)
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


def rated_metric(scores, difficulty, n_boot: int = 1000, seed: int = 0) -> dict:
    """{"n", "rho", "se"}: Spearman's rho of scores against difficulty, and its bootstrap
    standard error over the prompts."""
    s, d = np.asarray(scores, dtype=np.float64), np.asarray(difficulty, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = [spearman(s[i], d[i]) for i in (rng.integers(0, len(s), len(s))
                                            for _ in range(n_boot))]
    return {"n": len(s), "rho": spearman(s, d), "se": float(np.std(boots))}


def pooled_scores(folds, score_fn):
    """Concatenate each fold's test rows and scores (one curve for a k-fold protocol)."""
    scores, qs, qw, prompts = [], [], [], []
    for f in folds:
        scores.append(np.asarray(score_fn(f), dtype=np.float64))
        qs.append(f.test.q_strong)
        qw.append(f.test.q_weak)
        prompts.extend(f.test.prompts)
    return np.concatenate(scores), np.concatenate(qs), np.concatenate(qw), prompts


def evaluate_rows(routers: dict, folds, prices=None, tokenizer=None) -> tuple[dict, object]:
    """The report of routers (one per fold key) on the folds' pooled test rows: APGR and
    friends for two models, AIQ and the saving for more (costs counted with ``tokenizer``
    when given). Returns (report dict, plot data)."""
    from router_ml.core.prices import row_costs

    if folds[0].difficulty is not None:  # arena-rated: the score against the difficulty
        f = folds[0]
        scores = routers[f.k].score(f.test.prompts)
        return rated_metric(scores, f.difficulty), None
    if len(folds[0].test.models) == 2:
        scores, qs, qw, _ = pooled_scores(folds, lambda f: routers[f.k].score(f.test.prompts))
        picks = np.concatenate([routers[f.k].route_arrays(f.test.prompts).index for f in folds])
        report = evaluate(scores, qs, qw).to_dict()
        report["at_knob"] = {**saved_knob(routers),
                             **at_knob(picks, np.column_stack([qs, qw]))}
        return report, (scores, qs, qw)
    qhat, q, c, picks = [], [], [], []
    for f in folds:
        keep = np.isfinite(f.test.quality).all(axis=1)
        test = f.test.subset(keep)
        r = routers[f.k]
        qhat.append(r.predict_quality(test.prompts))
        q.append(test.quality)
        c.append(row_costs(test.prompts, test.models, test.costs,
                           r.prices if prices is None else prices, tokenizer=tokenizer))
        picks.append(r.route_arrays(test.prompts).index)
    models = list(folds[0].test.models)
    rep = evaluate_multi(np.vstack(qhat), np.vstack(q), np.vstack(c), models)
    report = rep.to_dict()
    report["at_knob"] = {**saved_knob(routers), **at_knob(
        np.concatenate(picks), np.vstack(q), np.vstack(c), models)}
    return report, rep


def saved_knob(routers: dict) -> dict:
    """{"knob": "threshold" or "lam", "value": its value (a list, one per fold, when the
    folds' routers differ)}."""
    rs = list(routers.values())
    knob = "threshold" if rs[0].threshold is not None else "lam"
    values = [getattr(r, knob) for r in rs]
    return {"knob": knob, "value": values[0] if len(set(values)) == 1 else values}
