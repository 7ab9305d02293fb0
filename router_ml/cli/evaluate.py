"""``router-ml evaluate`` (and ``training/evaluate.py``): a saved router or a baseline on a
protocol's test rows or a table, printed, plotted and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from router_ml.cli.report import (
    BASELINES,
    PUBLISHED,
    exit_error,
    plot_curve,
    setup_logging,
    add_tokenizer_argument,
    baseline_scores,
    evaluate_rows,
    format_evaluation,
    format_knob,
    pooled_scores,
)
from router_ml.errors import RouterMLError
from router_ml.learn.protocols import (
    MULTI_PROTOCOLS,
    PROTOCOLS,
    protocol_folds,
    protocol_prices,
)

logger = logging.getLogger("router_ml")


# test sources whose prompts another source holds too (data/README: 299 of arena-battles-2023's
# prompts, the rated ones among them, are arena-hard-v1's)
SHARED_PROMPTS = {"arena-rated": "arena-hard", "arena-battles": "arena-hard"}


def trained_on_test_rows(routers: dict, folds, protocol: str) -> list[str]:
    """The sources of a router's training rows that hold a fold's test prompts (the test
    rows' own source, or one that shares prompts with it), sorted; empty for routers trained
    for ``protocol`` (their manifest's evaluation names it and the fold: that recipe leaves
    the test rows out)."""
    found = set()
    for f in folds:
        r = routers[f.k]
        ev = r.evaluation or {}
        if ev.get("protocol") == protocol and ev.get("fold") == f.k:
            continue
        trained, tested = set(r.training.get("sources") or ()), set(f.test.sources)
        found |= trained & tested
        found |= {SHARED_PROMPTS[t] for t in tested if SHARED_PROMPTS.get(t) in trained}
    return sorted(found)


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate a saved router (or a baseline) on a protocol's test rows or on "
                    "your own held-out table. Two models: n, weak and strong quality, APGR, "
                    "CPT(50%), CPT(80%), AUC and the random and oracle APGR. More models: AIQ, "
                    "the best single model, the saving and the oracle. Writes them as JSON.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="router directory (for a k-fold protocol: the "
                     "directory holding fold-0 .. fold-4)")
    src.add_argument("--baseline", choices=BASELINES, help="random or length (longer prompt, "
                     "higher score; pair protocols)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="mmlu")
    p.add_argument("--table", type=Path, help="your held-out rows (CSV/JSONL/Parquet) instead "
                   "of a protocol; needs --model")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--scale", choices=("unit", "judge10"), default=None,
                   help="scores of --table (default: the scale the router was trained on, "
                        "else unit)")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--report", type=Path, help="JSON output (default: reports/<name>-<protocol>.json)")
    p.add_argument("--plot", type=Path, help="PNG of the curve (default: next to the report)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    add_tokenizer_argument(p)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def evaluate_main(argv=None, *, prog: str | None = None, root: Path | None = None) -> int:
    """``root``: where the default report goes (``root/reports``); the current directory by default (the training scripts pass the checkout)."""
    parser = evaluate_parser()
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    args.root = Path(root) if root is not None else Path.cwd()
    setup_logging(args.verbose)
    try:
        return _evaluate(args)
    except (RouterMLError, ValueError, TypeError, FileNotFoundError) as e:
        return exit_error(f"{type(e).__name__}: {e}")


def _evaluate(args) -> int:
    from router_ml.core.router import load_router
    from router_ml.learn import evaluation
    from router_ml.learn.protocols import Fold

    overlap = []
    if args.table:
        if not args.model:
            raise ValueError("--table needs --model (a router to evaluate)")
        from router_ml.learn.rows import rows_of
        from router_ml.learn.tables import load_table

        router = load_router(args.model)
        ds = load_table(args.table, prompt_column=args.prompt_column,
                        model_columns=router.models,
                        scale=args.scale or router.training.get("scale", "unit"))
        rows = rows_of(ds, router.models, complete=True)
        folds, routers, name, where = [Fold("table", None, rows, rows)], {None: router}, \
            args.model.name, args.table.stem
        prices = None
    else:
        folds = protocol_folds(args.protocol, args.data_dir)
        where = args.protocol
        prices = protocol_prices(args.protocol, args.data_dir) \
            if args.protocol in MULTI_PROTOCOLS else None
        if args.baseline:
            if prices is not None:
                raise ValueError("baselines are for pair protocols")
            name = args.baseline
            routers = None
            if folds[0].difficulty is not None:  # arena-rated
                from router_ml.learn.arena import rated_metric

                f = folds[0]
                report = rated_metric(baseline_scores(args.baseline, f.test.prompts, args.seed),
                                      f.difficulty)
                data = None
            else:
                scores, qs, qw, _ = pooled_scores(
                    folds, lambda f: baseline_scores(args.baseline, f.test.prompts, args.seed))
                report, data = evaluation.evaluate(scores, qs, qw).to_dict(), (scores, qs, qw)
        else:
            name = args.model.name
            if len(folds) > 1:
                missing = [f"fold-{f.k}" for f in folds if not (args.model / f"fold-{f.k}").is_dir()]
                if missing:
                    raise FileNotFoundError(
                        f"{args.protocol} has {len(folds)} folds; {args.model} lacks "
                        f"{', '.join(missing)} (train with: python training/train.py "
                        f"--protocol {args.protocol} --out {args.model})")
                routers = {f.k: load_router(args.model / f"fold-{f.k}") for f in folds}
            else:
                routers = {folds[0].k: load_router(args.model)}
            overlap = trained_on_test_rows(routers, folds, args.protocol)
            if overlap:
                logger.warning(
                    "%s was trained on rows of %s, which hold %s's test prompts: these "
                    "numbers are not held out (the router has seen the rows it is scored "
                    "on). For held-out numbers evaluate a router trained for the protocol: "
                    "router-ml train --protocol %s --out models/%s", args.model,
                    ", ".join(overlap), args.protocol, args.protocol, args.protocol)
    if routers is not None:
        tokenizer = None
        if args.tokenizer:
            from router_ml.core.prices import load_tokenizer

            tokenizer = load_tokenizer(args.tokenizer)
        report, data = evaluate_rows(routers, folds, prices, tokenizer)
    out = args.report or args.root / "reports" / f"{name}-{where}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = args.plot or out.with_suffix(".png")
    if data is not None:
        plot_curve(data, plot, f"{where}: {name}")
    payload = {"protocol": None if args.table else args.protocol,
               "table": str(args.table) if args.table else None,
               "router": str(args.model) if args.model else None,
               "baseline": args.baseline, **report,
               "trained_on_test_sources": overlap,
               "published": None if args.table else PUBLISHED.get(args.protocol)}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(format_evaluation(f"{where}: {name}", report, data))
    if "at_knob" in report:
        print(format_knob(report))
    print(f"\nreport: {out}\ncurve: {plot}")
    return 0
