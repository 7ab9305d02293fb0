"""Watching routed traffic: the report on the decision log and its dashboard.

The decision log is :mod:`router_ml.loop.decision_log` and quality sampling
:mod:`router_ml.loop.sampling`; both are importable from here too.

**Report** (:func:`report`, ``router-ml report``): share per model, escalation rate and its
trend, estimated spend against always-strongest, rule/learned coverage, drift of the score
distribution (PSI against reference scores, alert when PSI > 0.2; two-sample KS test) and the
quality given up measured by sampling (Wilson 95 % interval) with its monthly cost, and the
samples whose judge gave no verdict it could parse.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import numpy as np

from router_ml.errors import UnknownModelError
from router_ml.loop.decision_log import COLUMNS, SCHEMA, DecisionLog, MonitoringError, log_time
from router_ml.loop.sampling import BackgroundSampler, QualitySampler

PSI_ALERT = 0.2  # population stability index above which the score distribution has drifted


# ---------------------------------------------------------------------------- report


def psi(reference, current, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's
    quantile bins: sum (c - r) ln(c / r). Below 0.1 stable, 0.1-0.2 moderate, above 0.2 drift."""
    ref, cur = np.asarray(reference, float), np.asarray(current, float)
    inner = _inner_edges(ref, bins)
    r, c = _shares(ref, inner), _shares(cur, inner)
    r, c = np.clip(r, 1e-4, None), np.clip(c, 1e-4, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _inner_edges(ref, bins: int) -> np.ndarray:
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def _shares(x, inner) -> np.ndarray:
    return np.bincount(np.searchsorted(inner, x, side="right"), minlength=len(inner) + 1) / len(x)


def _rows(log, since, until) -> tuple[list[dict], list[str]]:
    """(the rows, the log files that could not be read and were skipped)."""
    if isinstance(log, (str, Path)):
        if not Path(log).is_dir():
            raise MonitoringError(f"decision log folder {log} does not exist")
        log = DecisionLog(log)
    if isinstance(log, DecisionLog):
        return log.read(since, until), list(log.unreadable)
    lo, hi = log_time(since, -np.inf), log_time(until, np.inf)
    return sorted((r for r in log if lo <= r["ts"] < hi), key=lambda r: r["ts"]), []


def _escalation(ts, esc, buckets: int, lo: float = -np.inf, hi: float = np.inf) -> dict:
    # the buckets divide the period asked for where it is bounded, else the rows' own span
    start = lo if np.isfinite(lo) else ts[0]
    end = hi if np.isfinite(hi) else ts[-1]
    edges = np.linspace(start, end, buckets + 1)
    idx = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, buckets - 1)
    out = []
    for b in range(buckets):
        m = idx == b
        out.append({"start": float(edges[b]), "n": int(m.sum()),
                    "rate": float(esc[m].mean()) if m.any() else None})
    last, before = idx == buckets - 1, idx < buckets - 1
    rising = False
    if last.sum() >= 20 and before.sum() >= 20:
        base, now = float(esc[before].mean()), float(esc[last].mean())
        # a rise beyond 5 points and 3 binomial standard errors of the earlier rate
        rising = now - base > max(0.05, 3 * np.sqrt(max(base * (1 - base), 1e-4) / last.sum()))
    return {"rate": float(esc.mean()), "buckets": out, "rising": bool(rising)}


def _why_zero(rows) -> str:
    """Why a log's spend is all zero, in words that say what to change."""
    unpriced = sorted({r["model"] for r in rows if r["cost_usd"] is None})
    if unpriced:
        return (f"no price for {', '.join(unpriced)}: add them to a price file (prices "
                "argument, USD per million input/output tokens)")
    if not any((r["input_tokens"] or 0) + (r["output_tokens"] or 0) for r in rows) and \
            not any(r.get("cost_estimated") for r in rows):
        return ("the calls returned no token counts and the log has no estimated costs (a log "
                "written before costs were estimated); return Completion(text, input_tokens, "
                "output_tokens) from the client")
    return "every priced call cost $0 (free models or a price of 0)"


def _check_reference(reference_scores) -> np.ndarray:
    try:
        ref = np.asarray(reference_scores, float)
    except (TypeError, ValueError):
        raise MonitoringError("reference must be 1-D scores (numbers)") from None
    if ref.ndim != 1 or not len(ref) or not np.isfinite(ref).all():
        raise MonitoringError(
            f"reference must be 1-D scores: one finite score per prompt, e.g. "
            f"np.save('scores.npy', router.score(prompts)) on prompts like the training ones; "
            f"got an array of shape {ref.shape}" + (" (a router's coverage.reference.npy "
                                                    "holds feature vectors, not scores)"
                                                    if ref.ndim == 2 else ""))
    return ref


def report(log, since=None, until=None, reference_scores=None, *, prices=None,
           buckets: int = 10, psi_alert: float = PSI_ALERT, requests_per_month=None,
           sample_rate: float | None = None) -> dict:
    """What the decision log says about [since, until): a dict (see the README's example).

    log: a DecisionLog, its folder, or rows as :meth:`DecisionLog.read` returns them.
    reference_scores: the router's scores on its training or calibration prompts; the scores
    of learned decisions are compared with them (PSI over reference deciles, alert above
    ``psi_alert``; KS test). buckets: time buckets of the escalation trend (equal parts of
    [since, until) where those are given, else of the rows' span); a last bucket whose
    rate exceeds the earlier ones' by 5 points and 3 standard errors is flagged.
    requests_per_month: traffic for the monthly sampling cost (default: the log's own rate);
    sample_rate: the sampler's rate (default: the share sampled among cheaper answers).
    """
    from scipy import stats

    from router_ml.learn.budget import TrafficProfile, quality_sampling_cost

    rows, skipped = _rows(log, since, until)
    n = len(rows)
    if n == 0:
        raise MonitoringError("the decision log holds no decisions in this period"
                              + (f" (unreadable, skipped: {', '.join(skipped)})" if skipped else ""))
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    ts = np.array(col("ts"), float)
    share = lambda xs: {k: v / n for k, v in Counter(xs).most_common()}  # noqa: E731
    out = {"n": n, "since": float(ts[0]), "until": float(ts[-1]), "models": share(col("model")),
           "routes": share(col("route")), "reasons": share(col("reason")), "alerts": [],
           "skipped_files": skipped}
    cov = [r["coverage"] for r in rows if r["coverage"] is not None]
    out["coverage"] = {"rule": sum(r["route_reason"] == "rule" for r in rows) / n,
                       "learned": sum(r["route_reason"] == "learned" for r in rows) / n,
                       "mean_router_coverage": float(np.mean(cov)) if cov else None}
    esc = np.array([(r["escalations"] or 0) > 0 for r in rows], float)
    out["escalation"] = _escalation(ts, esc, buckets, log_time(since, -np.inf), log_time(until, np.inf))
    out["escalation"]["fallback_rate"] = sum(r["reason"] == "fallback" for r in rows) / n
    by_task: dict = {}
    for r, e in zip(rows, esc):  # old logs have no task column: their rows count as None
        by_task.setdefault(r.get("task"), []).append((e, r.get("task_source") == "detected"))
    out["tasks"] = {task: {"share": len(v) / n, "escalation_rate": float(np.mean([e for e, _ in v])),
                           "detected_share": float(np.mean([d for _, d in v]))}
                    for task, v in sorted(by_task.items(), key=lambda kv: -len(kv[1]))}
    if out["escalation"]["rising"]:
        b = out["escalation"]["buckets"]
        out["alerts"].append(
            f"escalations rose: {100 * b[-1]['rate']:.1f} % of requests in the last period "
            f"against {100 * float(esc[:-b[-1]['n']].mean()):.1f} % before; check the cheap "
            "models' answers and the validators")
    spent = sum(r["cost_usd"] or 0.0 for r in rows)
    strong = sum(r["strongest_cost_usd"] or 0.0 for r in rows)
    out["spend"] = {"usd": spent, "always_strongest_usd": strong, "saving_usd": strong - spent,
                    "saving_pct": 100 * (strong - spent) / strong if strong else None,
                    "estimated_share": sum(bool(r.get("cost_estimated")) for r in rows) / n,
                    "why_zero": _why_zero(rows) if spent == 0 and strong == 0 else None}
    out["drift"] = None
    scores = np.array([r["score"] for r in rows if r["score"] is not None], float)
    ref = None if reference_scores is None else _check_reference(reference_scores)
    if ref is not None and len(scores):
        inner = _inner_edges(ref, 10)
        ks = stats.ks_2samp(ref, scores)
        value = psi(ref, scores)
        out["drift"] = {"n": len(scores), "psi": value, "psi_alert": psi_alert,
                        "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
                        "drifted": value > psi_alert,
                        "bins": {"inner_edges": inner.tolist(),
                                 "reference": _shares(ref, inner).tolist(),
                                 "current": _shares(scores, inner).tolist()},
                        "mean_score": float(scores.mean()), "mean_reference": float(ref.mean())}
        if value > psi_alert:
            out["alerts"].append(
                f"score drift: PSI {value:.2f} > {psi_alert} against the reference scores "
                f"(mean score {scores.mean():.3f} vs {ref.mean():.3f}; KS p = {ks.pvalue:.2g}); "
                "the traffic no longer looks like the training data: label it and retrain")
    sampled = [r for r in rows if r["sampled"]]
    judged = [r["strong_better"] for r in sampled if r["strong_better"] is not None]
    top = sampled[0]["sample_model"] if sampled else None
    cheaper = sum(r["model"] != top for r in rows) if top else 0
    unparsed = sum(str(r["judge"] or "").startswith("unparsed") for r in sampled)
    q = {"n_sampled": len(sampled), "n_judged": len(judged), "strongest": top,
         "n_unparsed": unparsed, "unparsed_share": unparsed / len(sampled) if sampled else None,
         "strong_better": None, "ci95": None,
         "sampling_usd": sum(r["sample_cost_usd"] or 0.0 for r in sampled),
         "rate": sample_rate if sample_rate is not None else (len(sampled) / cheaper if cheaper else 0.0),
         "sampling_usd_per_month": None}
    if judged:
        k = sum(v == 1.0 for v in judged)
        ci = stats.binomtest(k, len(judged)).proportion_ci(0.95, method="wilson")
        q.update(strong_better=k / len(judged), mean_preference=float(np.mean(judged)),
                 ci95=[float(ci.low), float(ci.high)])
    span = ts[-1] - ts[0]
    rpm = requests_per_month if requests_per_month is not None else (
        n / span * 30 * 86400 if span > 0 else None)
    if top and rpm:
        tin = float(np.mean([r["input_tokens"] or 0 for r in rows]))
        tout = float(np.mean([r["output_tokens"] or 0 for r in rows]))
        try:
            c = quality_sampling_cost(1 - cheaper / n, q["rate"], TrafficProfile(rpm, tin, tout),
                                      prices, strong=top)
            q["sampling_usd_per_month"], q["requests_per_month"] = c.usd_per_month, rpm
        except UnknownModelError as e:
            out["alerts"].append(f"no monthly sampling cost: {e}")
    out["quality"] = q
    return out


def dashboard(rep: dict, path) -> Path:
    """A PNG of a :func:`report`: share per model, escalation rate per time bucket, the score
    distribution against the reference, spend against always-strongest. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), layout="constrained")
    FigureCanvasAgg(fig)
    (a, b), (c, d) = fig.subplots(2, 2)
    names = list(rep["models"])
    a.barh(names, [100 * rep["models"][m] for m in names], color="tab:blue")
    a.set(title=f"share per model ({rep['n']} requests)", xlabel="% of requests")
    bk = [x for x in rep["escalation"]["buckets"] if x["rate"] is not None]
    when = [dt.datetime.fromtimestamp(x["start"], dt.timezone.utc) for x in bk]
    b.plot(when, [100 * x["rate"] for x in bk], marker="o", color="tab:red")
    b.set(title="escalation rate" + (" (RISING)" if rep["escalation"]["rising"] else ""),
          ylabel="% of requests")
    b.tick_params(axis="x", labelrotation=30)
    dr = rep.get("drift")
    if dr:
        x = np.arange(len(dr["bins"]["reference"]))
        c.bar(x - 0.2, dr["bins"]["reference"], 0.4, label="reference")
        c.bar(x + 0.2, dr["bins"]["current"], 0.4, label="logged")
        c.legend()
        c.set(title=f"score deciles of the reference: PSI {dr['psi']:.2f}"
                    + (" (DRIFT)" if dr["drifted"] else ""), xlabel="reference decile",
              ylabel="share")
    else:
        c.text(0.5, 0.5, "no reference scores", ha="center", va="center")
        c.set_axis_off()
    sp = rep["spend"]
    d.bar(["routed", "always strongest"], [sp["usd"], sp["always_strongest_usd"]],
          color=["tab:green", "tab:gray"])
    d.set(title="estimated spend (USD)" + (f", saving {sp['saving_pct']:.0f} %"
                                          if sp["saving_pct"] is not None else ""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def format_report(rep: dict) -> str:
    """The report as text, alerts first."""
    pct = lambda x: "-" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    lines = [f"ALERT: {a}" for a in rep["alerts"]] or ["no alerts"]
    lines += [f"skipped           {f} (not a readable decision log)"
              for f in rep.get("skipped_files", ())]
    lines += [f"requests          {rep['n']}",
              "models            " + ", ".join(f"{m} {pct(v)}" for m, v in rep["models"].items()),
              f"rules / learned   {pct(rep['coverage']['rule'])} / {pct(rep['coverage']['learned'])}",
              f"escalation rate   {pct(rep['escalation']['rate'])} (fallback "
              f"{pct(rep['escalation']['fallback_rate'])})",
              f"spend             ${rep['spend']['usd']:.4f} vs ${rep['spend']['always_strongest_usd']:.4f} "
              "always strongest" + (f" ({pct(rep['spend']['estimated_share'])} of requests "
                                    "estimated from prompt length)"
                                    if rep["spend"].get("estimated_share") else "")]
    tasks = rep.get("tasks") or {}
    if any(t is not None for t in tasks):
        lines.append("tasks (share, escalations)  " + ", ".join(
            f"{t or 'unknown'} {pct(v['share'])} ({pct(v['escalation_rate'])})"
            for t, v in tasks.items()))
    if rep["spend"].get("why_zero"):
        lines.append(f"spend is zero     {rep['spend']['why_zero']}")
    if rep["drift"]:
        lines.append(f"score drift       PSI {rep['drift']['psi']:.3f} (alert > {rep['drift']['psi_alert']}), "
                     f"KS p = {rep['drift']['ks_pvalue']:.3g}")
    q = rep["quality"]
    if q["n_judged"]:
        lines.append(f"quality given up  strongest better on {pct(q['strong_better'])} of "
                     f"{q['n_judged']} sampled requests (95 % CI {pct(q['ci95'][0])} - {pct(q['ci95'][1])})")
    if q.get("n_unparsed"):
        lines.append(f"judge unparsed    {q['n_unparsed']} of {q['n_sampled']} sampled requests "
                     f"({pct(q['unparsed_share'])}): the judge's reply had no verdict")
    if q["sampling_usd_per_month"] is not None:
        lines.append(f"sampling cost     ${q['sampling_usd_per_month']:,.2f}/month at rate {pct(q['rate'])}")
    return "\n".join(lines)






__all__ = ["COLUMNS", "PSI_ALERT", "SCHEMA", "BackgroundSampler", "DecisionLog", "MonitoringError",
           "QualitySampler", "dashboard", "format_report", "psi", "report",]
