"""What the train and evaluate commands share: the reports they print, plot and log, and the
evaluation of routers on a protocol's or a table's test rows.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger("router_ml")


BASELINES = ("random", "length")


PUBLISHED = {"mmlu": {"apgr": 0.603, "cpt50": 0.354}, "gsm8k": {"apgr": 0.622, "cpt50": 0.336},
             "mmlu-to-gsm8k": {"apgr": 0.622, "cpt50": 0.336}}


def _setup_logging(verbose: bool):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def format_report(title: str, report: dict) -> str:
    """A small fixed-width table of one evaluation."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    rows = [("prompts (n)", str(report["n"])), ("weak quality", pct(report["q_weak"])),
            ("strong quality", pct(report["q_strong"])), ("APGR", num(report["apgr"])),
            ("CPT(50%)", pct(report["cpt50"])), ("CPT(80%)", pct(report["cpt80"])),
            ("ROC AUC", num(report["auc"])), ("random APGR", num(report["random_apgr"])),
            ("oracle APGR", num(report["oracle_apgr"]))]
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * max(len(title), width + 12)]
    lines += [f"{k:<{width}}  {v:>9}" for k, v in rows]
    return "\n".join(lines)


def format_evaluation(title: str, report: dict, data) -> str:
    """The printout of :func:`evaluate_rows`' report: a pair's table, arena-rated's rank
    correlation (``data`` None: no curve), or the multi-model summary."""
    if data is None:
        return (f"{title}\nSpearman's rho of the score with the prompts' difficulty: "
                f"{report['rho']:.3f} ± {report['se']:.3f} (bootstrap) on {report['n']} prompts")
    return format_report(title, report) if isinstance(data, tuple) else format_multi(title, report)


def describe_knob(router) -> str:
    """One line on the knob and what it achieved where it was calibrated."""
    c = router.calibration
    a = c.achieved
    if router.threshold is None:
        line = f"lam {router.lam:.4g} ({c.method}: {c.target})"
        if "mean_cost" in a:
            line += (f": quality {100 * a['quality']:.1f} % (best single model "
                     f"{100 * a['best_single_quality']:.1f} %), ${a['mean_cost']:.3g} per request, "
                     f"{100 * a['dearest_share']:.1f} % to the dearest model")
        return line + (f" on {c.n} out-of-fold predictions" if c.n else "")
    line = f"threshold {router.threshold:.4f} ({c.method}: {c.target})"
    if "share" in a:
        line += f": {100 * a['share']:.1f} % strong calls"
    if a.get("pgr") is not None:
        line += f", PGR {a['pgr']:.3f}, quality {100 * a['quality']:.1f} %"
    line += f" on {c.n} out-of-fold scores" if c.n else ""
    w, with_prior = (router.training.get(k) for k in ("length_prior_weight", "cv_apgr_with_prior"))
    if w:
        line += (f"\nlength prior: weight {w:g}" + (f", out-of-fold APGR {with_prior:.3f}"
                                                    if with_prior is not None else ""))
    elif w is not None:
        line += ("\nlength prior: weight 0 (the learned score alone routes better; the score is "
                 "its share of the training rows)")
    return line


def pooled_scores(folds, score_fn):
    """Concatenate each fold's test rows and scores (one curve for a k-fold protocol)."""
    scores, qs, qw, prompts = [], [], [], []
    for f in folds:
        scores.append(np.asarray(score_fn(f), dtype=np.float64))
        qs.append(f.test.q_strong)
        qw.append(f.test.q_weak)
        prompts.extend(f.test.prompts)
    return np.concatenate(scores), np.concatenate(qs), np.concatenate(qw), prompts


def log_report(run, report: dict) -> None:
    """A protocol's test report in a tracking run: its numbers as metrics, its names (a
    multi-model report's best single model) as parameters, the saved knob's results
    (``at_knob``) prefixed ``at_knob_``; curves (lists) and per-model shares are left out."""
    knob = {f"at_knob_{k}": v for k, v in report.get("at_knob", {}).items()}
    flat = {k: v for k, v in {**report, **knob}.items()
            if v is not None and not isinstance(v, (list, dict))}
    names = {k: v for k, v in flat.items() if isinstance(v, str)}
    if names:
        run.log_params(names)
    run.log_metrics({k: v for k, v in flat.items() if k not in names})


def evaluate_rows(routers: dict, folds, prices=None, tokenizer=None) -> tuple[dict, object]:
    """The report of routers (one per fold key) on the folds' pooled test rows: APGR and
    friends for two models, AIQ and the saving for more (costs counted with ``tokenizer``
    when given). Returns (report dict, plot data)."""
    from router_ml.core.prices import row_costs
    from router_ml.learn import evaluation

    if folds[0].difficulty is not None:  # arena-rated: the score against the difficulty
        from router_ml.learn.arena import rated_metric

        f = folds[0]
        scores = routers[f.k].score(f.test.prompts)
        return rated_metric(scores, f.difficulty), None
    if len(folds[0].test.models) == 2:
        scores, qs, qw, _ = pooled_scores(folds, lambda f: routers[f.k].score(f.test.prompts))
        picks = np.concatenate([routers[f.k].route_arrays(f.test.prompts).index for f in folds])
        report = evaluation.evaluate(scores, qs, qw).to_dict()
        report["at_knob"] = {**_saved_knob(routers),
                             **evaluation.at_knob(picks, np.column_stack([qs, qw]))}
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
    rep = evaluation.evaluate_multi(np.vstack(qhat), np.vstack(q), np.vstack(c), models)
    report = rep.to_dict()
    report["at_knob"] = {**_saved_knob(routers), **evaluation.at_knob(
        np.concatenate(picks), np.vstack(q), np.vstack(c), models)}
    return report, rep


def _saved_knob(routers: dict) -> dict:
    """{"knob": "threshold" or "lam", "value": its value (a list, one per fold, when the
    folds' routers differ)}."""
    rs = list(routers.values())
    knob = "threshold" if rs[0].threshold is not None else "lam"
    values = [getattr(r, knob) for r in rs]
    return {"knob": knob, "value": values[0] if len(set(values)) == 1 else values}


def format_knob(r: dict) -> str:
    """What the saved knob does on the evaluated rows (``report["at_knob"]``)."""
    k = r["at_knob"]
    v = k["value"]
    at = f"at the saved {k['knob']} " + (f"{v:.4g}" if not isinstance(v, list)
                                         else f"(per fold: {', '.join(f'{x:.4g}' for x in v)})")
    if "strong_share" in k:
        pgr = "n/a" if k["pgr"] is None else f"{k['pgr']:.3f}"
        return (f"{at}: {100 * k['strong_share']:.1f} % strong calls, quality "
                f"{100 * k['quality']:.1f} %, PGR {pgr}")
    share = "n/a" if k["cost_share"] is None else f"{100 * k['cost_share']:.1f} %"
    calls = ", ".join(f"{m} {100 * x:.1f} %" for m, x in k["shares"].items())
    return (f"{at}: quality {k['quality']:.3f} ({-k['quality_drop']:+.3f} against the best "
            f"single model, {k['best_model']}: {k['best_quality']:.3f}),\n"
            f"  mean cost ${k['mean_cost']:.3g} per request ({share} of its "
            f"${k['best_cost']:.3g}); calls: {calls}")


def _plot(data, path: Path, title: str):
    from router_ml.learn import evaluation

    if isinstance(data, tuple):
        scores, qs, qw = data
        evaluation.plot_curves({"router": scores}, qs, qw, path, title=title)
    else:
        evaluation.plot_multi(data, path, title=title)


def format_multi(title: str, r: dict) -> str:
    def usd(v):
        return "-" if v is None else f"${v:.3g}"

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    lines = [title, "-" * len(title), f"{'prompts (n)':<28}{r['n']:>10}",
             f"{'best single model':<28}{r['best_model']:>10}",
             f"{'  its quality, cost':<28}{r['best_quality']:>10.3f}  {usd(r['best_cost'])}",
             f"{'AIQ':<28}{r['aiq']:>10.3f}",
             f"{'highest quality':<28}{r['max_quality']:>10.3f}",
             f"{'cost share at best quality':<28}{pct(r['cost_share_at_best']):>10}",
             f"{'oracle AIQ':<28}{r['oracle_aiq']:>10.3f}",
             f"{'oracle cost share at best':<28}{pct(r['oracle_cost_share_at_best']):>10}"]
    return "\n".join(lines)


def _tokenizer_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", type=Path, help="more models: a Hugging Face tokenizer.json "
                   "(file or folder) for exact input-token counts in the costs "
                   "(default: ceil(characters / 4))")


def baseline_scores(name: str, prompts, seed: int = 0) -> np.ndarray:
    """Scores of a baseline: ``random`` (uniform, seeded) or ``length`` (characters)."""
    if name == "random":
        return np.random.default_rng(seed).random(len(prompts))
    if name == "length":
        return np.array([len(p) for p in prompts], dtype=np.float64)
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
