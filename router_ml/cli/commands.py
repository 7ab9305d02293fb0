"""The command lines behind ``training/train.py`` and ``training/evaluate.py``.

Printing, plotting and tracking happen here; the modules they call only compute.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from router_ml.errors import RouterMLError
from router_ml.learn.protocols import (
    MULTI_PROTOCOLS,
    PROTOCOLS,
    STRONG_MODEL,
    WEAK_MODEL,
    protocol_folds,
    protocol_prices,
)

logger = logging.getLogger("router_ml")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
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


# ------------------------------------------------------------------------------- train


def _tokenizer_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", type=Path, help="more models: a Hugging Face tokenizer.json "
                   "(file or folder) for exact input-token counts in the costs "
                   "(default: ceil(characters / 4))")


def train_parser() -> argparse.ArgumentParser:
    from router_ml.learn.config import (
        CLASSIFIER_CHOICES,
        DEFAULT_ROUTER,
        ENCODER_PARTS,
        ESTIMATORS,
        SELECT_BY,
        TrainConfig,
    )
    from router_ml.learn.labels import TARGETS

    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a router. With --protocol: on that protocol's training rows (one "
                    "router per fold in OUT/fold-K for a k-fold protocol), evaluated on its "
                    "test rows. With --table: on your own file (two or more model columns). "
                    "Without either: the default router on all training data, into "
                    "models/default.")
    p.add_argument("--protocol", choices=PROTOCOLS, help="evaluation protocol to train for")
    p.add_argument("--out", type=Path, help="output directory (default: models/default, or "
                   "models/<protocol> with --protocol, or models/<table name>)")
    p.add_argument("--data-dir", type=Path, help="folder with the data sources (default: "
                   "$ROUTER_ML_DATA or ../shared/data)")
    p.add_argument("--table", type=Path, help="train on your own CSV/JSONL/Parquet file instead")
    p.add_argument("--prompt-column", default="prompt", help="prompt column of --table")
    p.add_argument("--model-columns", help="comma-separated quality columns of --table, one "
                   "per candidate model (default: every column but the prompt and any cost or "
                   "token column); for two, the first is the strong model unless --strong/--weak")
    p.add_argument("--scale", choices=("unit", "judge10"), default="unit",
                   help="scores of --table: 0/1 or [0,1] (unit) or 1-10 judge scores")
    p.add_argument("--prices", type=Path, help="price file (JSON/TOML/YAML, USD per million "
                   "input/output tokens) over the built-in table; stored in the router")
    p.add_argument("--strong", help=f"strong model of a pair (protocols: {STRONG_MODEL})")
    p.add_argument("--weak", help=f"weak model of a pair (protocols: {WEAK_MODEL})")
    p.add_argument("--estimator", choices=ESTIMATORS, default=None,
                   help="difficulty: one difficulty shared by every model, learned from every "
                        "model's outcomes (the default router; what transfers to other "
                        "traffic); heads: per-model heads on the training rows (the default "
                        "with --table: your own traffic)")
    p.add_argument("--outcomes", default=None,
                   help="with --estimator difficulty: the sources whose every model's outcomes "
                        f"it also learns from, comma-separated (default: "
                        f"{','.join(DEFAULT_ROUTER.outcomes)}; none with --table), '' for none")
    p.add_argument("--encoder", default=None,
                   help=f"feature parts joined by '+', from {', '.join(ENCODER_PARTS)} "
                        f"(default: {DEFAULT_ROUTER.encoder} for difficulty, {d.encoder} for "
                        "heads)")
    p.add_argument("--classifier", choices=CLASSIFIER_CHOICES, default=d.classifier)
    p.add_argument("--C", type=float, default=d.C, help="inverse regularisation of logreg "
                   "(default: chosen by cross-validation in the training rows)")
    p.add_argument("--target", choices=TARGETS, default=d.target,
                   help="what the heads learn (default %(default)s)")
    p.add_argument("--extra", default=None,
                   help="extra training sources, comma-separated (arena-hard, alpaca-eval, "
                        "dcrouter), '' for none; rows matching a test question are dropped "
                        f"(default: {','.join(d.extra) or 'none'}; none with --table)")
    p.add_argument("--min-pgr", type=float, default=d.min_pgr,
                   help="two models: keep this share of the strong model's gain (default %(default)s)")
    p.add_argument("--share", type=float, help="two models: strong-call share instead")
    p.add_argument("--max-drop", type=float, default=d.max_drop,
                   help="more models: mean quality at most this below the best single model's "
                        "(default %(default)s)")
    p.add_argument("--delta", type=float, help="two models: calibrate for --max-drop with "
                   "probability 1 - delta on new traffic (Learn-then-Test; assumes the traffic "
                   "is like the training rows)")
    p.add_argument("--budget", type=float, help="more models: mean USD per request instead")
    p.add_argument("--dearest-share", type=float, help="more models: share of calls to the "
                   "dearest model instead")
    _tokenizer_argument(p)
    p.add_argument("--select-by", choices=SELECT_BY, default=d.select_by,
                   help="choose the heads on shuffled folds, by leaving one source out, or by "
                        "the mean of the two")
    p.add_argument("--length-prior", dest="length_prior", action="store_true", default=None,
                   help="two models: blend the learned score with the prompt's length where "
                        "that routes the out-of-fold rows better (default with heads)")
    p.add_argument("--no-length-prior", dest="length_prior", action="store_false",
                   help="two models: keep the learned score alone (default with difficulty)")
    p.add_argument("--seed", type=int, default=d.random_state)
    p.add_argument("--jobs", type=int, default=-1,
                   help="parallel cross-validation fits (default: every core)")
    p.add_argument("--no-tracking", action="store_true", help="do not log the run to mlflow")
    p.add_argument("--experiment", default="router_ml", help="mlflow experiment name")
    p.add_argument("--register", metavar="NAME",
                   help="also log the router as an mlflow model, register it as NAME and point "
                        "the alias 'champion' at it (load with models:/NAME@champion)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _config_from_args(args):
    from router_ml.learn.config import DEFAULT_ROUTER, TrainConfig

    lam_target = args.budget is not None or args.dearest_share is not None
    estimator = args.estimator or ("heads" if args.table else "difficulty")
    base = DEFAULT_ROUTER if estimator == "difficulty" else TrainConfig()
    outcomes = (() if estimator != "difficulty" else
                (base.outcomes if args.outcomes is None and not args.table
                 else tuple(s for s in (args.outcomes or "").split(",") if s)))
    return TrainConfig(estimator=estimator, outcomes=outcomes,
                       encoder=args.encoder or base.encoder,
                       length_prior=(base.length_prior if args.length_prior is None
                                     else args.length_prior),
                       classifier=args.classifier, C=args.C,
                       target=args.target,
                       min_pgr=None if args.share is not None else args.min_pgr,
                       share=args.share, max_drop=None if lam_target else args.max_drop,
                       budget=args.budget, dearest_share=args.dearest_share, delta=args.delta,
                       random_state=args.seed, n_jobs=args.jobs,
                       tokenizer=str(args.tokenizer) if args.tokenizer else None,
                       select_by=args.select_by,
                       extra=(TrainConfig().extra if args.extra is None and not args.table
                              else tuple(s for s in (args.extra or "").split(",") if s)))


def train_main(argv=None, *, prog: str | None = None, root: Path | None = None) -> int:
    """``root``: where default outputs go (``root/models/<name>``); the project by default."""
    parser = train_parser()
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    args.root = root or PROJECT_ROOT
    if args.register and args.no_tracking:
        parser.error("--register logs the model to mlflow; it cannot go with --no-tracking")
    _setup_logging(args.verbose)
    try:
        return _train(args)
    except (RouterMLError, ValueError, TypeError, FileNotFoundError, ImportError) as e:
        return _fail(f"{type(e).__name__}: {e}")


def _table_rows(args, config):
    """The user's table as training rows, models in the order given (strong first)."""
    from router_ml.learn.columns import header, table_columns
    from router_ml.learn.labels import rows_of
    from router_ml.learn.protocols import add_extra_rows
    from router_ml.learn.tables import load_table

    cols = [c.strip() for c in args.model_columns.split(",")] if args.model_columns else None
    ds = load_table(args.table, prompt_column=args.prompt_column, model_columns=cols,
                    scale=args.scale)
    found = table_columns(args.table, header(args.table), args.prompt_column, cols).describe()
    if found:
        print(f"{args.table}:\n  " + found.replace("\n", "\n  "))
    from router_ml.learn.sources import models_of

    models = list(models_of(ds))
    if args.strong or args.weak:
        if not (args.strong and args.weak):
            raise ValueError("give both --strong and --weak, or neither")
        models = [args.strong, args.weak]
    train = rows_of(ds, models, complete=len(models) == 2)
    if config.extra:
        train = add_extra_rows(train, config.extra, args.data_dir)
    return train


def _train(args) -> int:
    from router_ml.learn.price_fit import METHOD, router_prices
    from router_ml.learn.protocols import all_training_rows, outcome_rows, with_outcomes
    from router_ml.learn.tracking import Tracker
    from router_ml.learn.training import fit_router

    config = _config_from_args(args)
    tracker = Tracker(experiment=args.experiment, enabled=not args.no_tracking)
    tracker.check()  # fail before any training work if the server is unreachable
    name = args.protocol or (args.table.stem if args.table else "default")
    out = args.out or args.root / "models" / name
    strong, weak = args.strong or STRONG_MODEL, args.weak or WEAK_MODEL
    params = {**config.to_dict(), "protocol": args.protocol or "all"}
    t0 = time.perf_counter()
    with tracker.run(name, params) as run:
        if args.protocol:
            folds = protocol_folds(args.protocol, args.data_dir, strong=strong, weak=weak,
                                   extra=config.extra)
            if config.outcomes:
                folds = with_outcomes(folds, config.outcomes, args.data_dir)
            prices = protocol_prices(args.protocol, args.data_dir) \
                if args.protocol in MULTI_PROTOCOLS else None
            routers = {}
            for f in folds:
                print((f"training fold {f.k}" if f.k is not None else "training")
                      + f" on {len(f.train)} rows"
                      + (f" ({f.dropped} rows of other sources dropped: they match test "
                         "questions)" if f.dropped or config.extra else ""), flush=True)
                routers[f.k] = fit_router(f.train, config, prices, outcomes=f.outcomes)
            report, data = evaluate_rows(routers, folds, prices,
                                         next(iter(routers.values())).tokenizer)
            out.mkdir(parents=True, exist_ok=True)
            for f in folds:
                r = routers[f.k]
                r.evaluation = {"protocol": args.protocol, "fold": f.k,
                                **{k: v for k, v in report.items() if not isinstance(v, list)}}
                r.save(out if f.k is None else out / f"fold-{f.k}")
            plot = out / "curve.png"
            (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            print()
            heads = sorted({r.training.get("heads", config.classifier) for r in routers.values()})
            title = f"{args.protocol} (test rows, {config.encoder} + {'/'.join(heads)} heads)"
            if data is None:  # arena-rated: a rank correlation, no curve
                print(f"{title}\nSpearman's rho of the score with the prompts' difficulty: "
                      f"{report['rho']:.3f} ± {report['se']:.3f} (bootstrap) on {report['n']} "
                      f"prompts\nrouter: {out}")
            else:
                _plot(data, plot, f"{args.protocol}: cost-quality curve")
                print(format_report(title, report) if isinstance(data, tuple)
                      else format_multi(title, report))
                print(f"\ncurve: {plot}\nrouter: {out}")
                run.log_artifact(plot)
            if len(folds) == 1:
                print(describe_knob(routers[folds[0].k]))
            log_report(run, report)
        else:
            if args.table:
                train = _table_rows(args, config)
                run.log_params({"table": str(args.table), "columns": ",".join(train.models),
                                "rows": len(train)})
            else:
                train = all_training_rows(args.data_dir, strong=strong, weak=weak,
                                          extra=config.extra)
            tokenizer = None
            if config.tokenizer is not None:
                from router_ml.core.prices import load_tokenizer

                tokenizer = load_tokenizer(config.tokenizer)
            prices, derived = router_prices(train, args.prices, tokenizer)
            for m, d in derived.items():
                print(f"price of {m} from its observed costs: {d.describe()}")
            outcomes = outcome_rows(config.outcomes, args.data_dir) if config.outcomes else None
            print(f"training on {len(train)} rows, models: {', '.join(train.models)}"
                  + (f"; difficulty also from {len(outcomes)} rows of every model's outcomes "
                     f"({', '.join(config.outcomes)})" if outcomes is not None else ""),
                  flush=True)
            router = fit_router(train, config, prices, outcomes=outcomes)
            if derived:
                router.training["prices_from_costs"] = {
                    "method": METHOD, "models": {m: d.to_dict() for m, d in derived.items()}}
                run.log_params({"prices_from_costs": ", ".join(
                    f"{m} ({d.method})" for m, d in derived.items())})
            router.save(out)
            cv = router.training.get("cv_apgr", router.training.get("cv_aiq"))
            what = "APGR" if len(train.models) == 2 else "AIQ"
            print(f"router: {out}\nout-of-fold {what}: "
                  f"{'-' if cv is None else f'{cv:.3f}'}\n{describe_knob(router)}")
            run.log_metrics({f"cv_{what.lower()}": cv,
                             **{f"calibration_{k}": v for k, v in
                                router.calibration.achieved.items()}})
        run.log_metrics({"train_seconds": time.perf_counter() - t0})
        run.log_dir(out, "router")
        if args.register:
            from router_ml.serve.mlflow_flavor import log_model

            if args.protocol and len(folds) > 1:
                raise ValueError(f"--register needs one router; {args.protocol} has "
                                 f"{len(folds)} folds")
            info = log_model(out, "model", registered_model_name=args.register,
                             run_id=run.run_id, tracking_uri=tracker.uri)
            print(f"registered: models:/{args.register}@champion (version "
                  f"{info.registered_model_version})")
    return 0


# ------------------------------------------------------------------------------- evaluate


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
    p.add_argument("--scale", choices=("unit", "judge10"), default="unit")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--report", type=Path, help="JSON output (default: reports/<name>-<protocol>.json)")
    p.add_argument("--plot", type=Path, help="PNG of the curve (default: next to the report)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    _tokenizer_argument(p)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def baseline_scores(name: str, prompts, seed: int = 0) -> np.ndarray:
    """Scores of a baseline: ``random`` (uniform, seeded) or ``length`` (characters)."""
    if name == "random":
        return np.random.default_rng(seed).random(len(prompts))
    if name == "length":
        return np.array([len(p) for p in prompts], dtype=np.float64)
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


def evaluate_main(argv=None, *, prog: str | None = None, root: Path | None = None) -> int:
    """``root``: where the default report goes (``root/reports``); the project by default."""
    parser = evaluate_parser()
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    args.root = root or PROJECT_ROOT
    _setup_logging(args.verbose)
    try:
        return _evaluate(args)
    except (RouterMLError, ValueError, TypeError, FileNotFoundError) as e:
        return _fail(f"{type(e).__name__}: {e}")


def _evaluate(args) -> int:
    from router_ml.core.load import load_router
    from router_ml.learn import evaluation
    from router_ml.learn.protocols import Fold

    if args.table:
        if not args.model:
            raise ValueError("--table needs --model (a router to evaluate)")
        from router_ml.learn.labels import rows_of
        from router_ml.learn.tables import load_table

        router = load_router(args.model)
        ds = load_table(args.table, prompt_column=args.prompt_column,
                        model_columns=router.models, scale=args.scale)
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
        _plot(data, plot, f"{where}: {name}")
    payload = {"protocol": None if args.table else args.protocol,
               "table": str(args.table) if args.table else None,
               "router": str(args.model) if args.model else None,
               "baseline": args.baseline, **report,
               "published": None if args.table else PUBLISHED.get(args.protocol)}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    if data is None:
        print(f"{where}: {name}\nSpearman's rho of the score with the prompts' difficulty: "
              f"{report['rho']:.3f} ± {report['se']:.3f} (bootstrap) on {report['n']} prompts")
    else:
        print(format_report(f"{where}: {name}", report) if isinstance(data, tuple)
              else format_multi(f"{where}: {name}", report))
    if "at_knob" in report:
        print(format_knob(report))
    print(f"\nreport: {out}\ncurve: {plot}")
    return 0
