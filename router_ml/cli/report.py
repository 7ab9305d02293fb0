"""What the train and evaluate commands share: the reports they print, plot and log, and the
evaluation of routers on a protocol's or a table's test rows.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from router_ml.learn.evaluation import (  # noqa: F401 (the CLI's names, from where they live)
    BASELINES,
    PUBLISHED,
    baseline_scores,
    evaluate_rows,
    pooled_scores,
)

logger = logging.getLogger("router_ml")


def setup_logging(verbose: bool):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def exit_error(msg: str) -> int:
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


def plot_curve(data, path: Path, title: str):
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


def add_tokenizer_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", type=Path, help="more models: a Hugging Face tokenizer.json "
                   "(file or folder) for exact input-token counts in the costs "
                   "(default: ceil(characters / 4))")


