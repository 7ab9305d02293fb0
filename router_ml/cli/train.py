"""``router-ml train`` (and ``training/train.py``): parse the options, run the training
recipe of :mod:`router_ml.learn.recipe`, print and log what it did.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from router_ml.cli.report import (
    exit_error,
    plot_curve,
    setup_logging,
    add_tokenizer_argument,
    describe_knob,
    format_evaluation,
    log_report,
)
from router_ml.errors import RouterMLError
from router_ml.learn.protocols import PROTOCOLS, STRONG_MODEL, WEAK_MODEL


def train_parser() -> argparse.ArgumentParser:
    from router_ml.learn.config import (
        CLASSIFIER_CHOICES,
        DEFAULT_ROUTER,
        ENCODER_PARTS,
        ESTIMATORS,
        SELECT_BY,
        TrainConfig,
    )
    from router_ml.learn.rows import TARGETS

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
                        "traffic); heads: per-model heads on the training rows alone; warm: "
                        "the default router's difficulty and abilities corrected by the "
                        "training rows (the default with --table: your own traffic)")
    p.add_argument("--no-prior-router", action="store_true",
                   help="no warm start: with --table, heads from the training rows alone "
                        "(--estimator heads)")
    p.add_argument("--outcomes", default=None,
                   help="with --estimator difficulty: the sources whose every model's outcomes "
                        f"it also learns from, comma-separated (default: "
                        f"{','.join(DEFAULT_ROUTER.outcomes)}; none with --table), '' for none")
    p.add_argument("--encoder", default=None,
                   help=f"feature parts joined by '+', from {', '.join(ENCODER_PARTS)} "
                        f"(default: {DEFAULT_ROUTER.encoder} for difficulty, {d.encoder} for "
                        "heads)")
    p.add_argument("--classifier", choices=CLASSIFIER_CHOICES, default=d.classifier)
    p.add_argument("--neighbours", type=int, default=None, metavar="K",
                   help="average the logistic heads with the mean label of the K nearest "
                        "training rows (0: the logistic heads alone; default 100 for a pair, "
                        "0 with TF-IDF or more than two models)")
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
    add_tokenizer_argument(p)
    p.add_argument("--select-by", choices=SELECT_BY, default=d.select_by,
                   help="choose the heads on shuffled folds, by leaving one source out, or by "
                        "the mean of the two")
    p.add_argument("--length-prior", dest="length_prior", action="store_true", default=None,
                   help="two models: blend the learned score with the prompt's length where "
                        "that routes the out-of-fold rows better (the default)")
    p.add_argument("--no-length-prior", dest="length_prior", action="store_false",
                   help="two models: keep the learned score alone")
    p.add_argument("--prior-weight", type=float, default=None,
                   help="a fixed weight in [0, 1] for the length prior (default: the default "
                        "router's 0.25; with --table, chosen on the training rows' folds)")
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


def config_from_args(args):
    from router_ml.learn.config import DEFAULT_ROUTER, TrainConfig

    lam_target = args.budget is not None or args.dearest_share is not None
    if args.no_prior_router and args.estimator == "warm":
        raise ValueError("--no-prior-router turns the warm start off; it cannot go with "
                         "--estimator warm")
    # --table warm-starts from the default's prior, which is on the static embedding: another
    # encoder, asked for by name, trains heads from the rows alone
    other_encoder = args.encoder not in (None, DEFAULT_ROUTER.encoder)
    estimator = args.estimator or ("heads" if args.no_prior_router or (args.table and other_encoder)
                                   else "warm" if args.table else "difficulty")
    base = DEFAULT_ROUTER if estimator == "difficulty" else TrainConfig()
    # the warm start's prior learns from the default's outcomes, with --table too
    outcomes = (() if estimator == "heads" else
                (DEFAULT_ROUTER.outcomes if args.outcomes is None
                 and (not args.table or estimator == "warm")
                 else tuple(s for s in (args.outcomes or "").split(",") if s)))
    length_prior = base.length_prior if args.length_prior is None else args.length_prior
    return TrainConfig(estimator=estimator, outcomes=outcomes,
                       encoder=args.encoder or base.encoder,
                       length_prior=length_prior,
                       # the default recipe's fixed weight (chosen for traffic it never
                       # saw), unless one is given; a table's own rows choose theirs
                       prior_weight=(args.prior_weight if args.prior_weight is not None
                                     else base.prior_weight if length_prior and not args.table
                                     else None),
                       prior_select_by=base.prior_select_by,
                       classifier=args.classifier, C=args.C, neighbours=args.neighbours,
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
    """``root``: where default outputs go (``root/models/<name>``); the current directory by default (the training scripts pass the checkout)."""
    parser = train_parser()
    parser.prog = prog or parser.prog
    args = parser.parse_args(argv)
    args.root = Path(root) if root is not None else Path.cwd()
    if args.register and args.no_tracking:
        parser.error("--register logs the model to mlflow; it cannot go with --no-tracking")
    setup_logging(args.verbose)
    try:
        _check_installed(tracking=not args.no_tracking)
        return _train(args)
    except (RouterMLError, ValueError, TypeError, FileNotFoundError, FileExistsError,
            ImportError) as e:
        return exit_error(f"{type(e).__name__}: {e}")


def table_rows(args, config):
    """The user's table as training rows, models in the order given (strong first)."""
    from router_ml.learn._columns import header, table_columns
    from router_ml.learn.rows import rows_of
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


# What training imports (the [train] extra) and what logging to mlflow needs ([track]).
_TRAIN_MODULES = ("sklearn", "datasets", "skops", "joblib", "pyarrow")


def _check_installed(tracking: bool) -> None:
    """ImportError naming the pip extra when a package training needs is missing (found
    without importing it), before any work: not a failure halfway, blamed on what failed."""
    import importlib.util
    import sys

    def installed(name):
        if name in sys.modules:
            return sys.modules[name] is not None
        return importlib.util.find_spec(name) is not None

    for name in _TRAIN_MODULES + (("mlflow",) if tracking else ()):
        if not installed(name):
            extra, alt = (("track", "; or pass --no-tracking") if name == "mlflow"
                          else ("train", ""))
            raise ImportError(f"router-ml train needs the package {name!r}, which is not "
                              f"installed: pip install 'router_ml[{extra}]'{alt}")


def _train(args) -> int:
    from router_ml.learn.protocols import all_training_rows
    from router_ml.learn.recipe import check_out, save_protocol, train_protocol, train_rows
    from router_ml.learn.tracking import Tracker

    config = config_from_args(args)
    name = args.protocol or (args.table.stem if args.table else "default")
    out = args.out or args.root / "models" / name
    check_out(out, args.protocol)  # before any work: the save at the end would refuse it
    tracker = Tracker(experiment=args.experiment, enabled=not args.no_tracking)
    tracker.check()  # fail before any training work if the server is unreachable
    strong, weak = args.strong or STRONG_MODEL, args.weak or WEAK_MODEL
    params = {**config.to_dict(), "protocol": args.protocol or "all"}
    t0 = time.perf_counter()
    with tracker.run(name, params) as run:
        if args.protocol:
            def on_fold(f):
                print((f"training fold {f.k}" if f.k is not None else "training")
                      + f" on {len(f.train)} rows"
                      + (f" ({f.dropped} rows of other sources dropped: they match test "
                         "questions)" if f.dropped or config.extra else ""), flush=True)

            result = train_protocol(args.protocol, config, args.data_dir, strong=strong,
                                    weak=weak, on_fold=on_fold)
            folds, routers, report, data = result.folds, result.routers, result.report, result.data
            save_protocol(result, out)
            plot = out / "curve.png"
            print()
            heads = sorted({r.training.get("heads", config.classifier) for r in routers.values()})
            title = f"{args.protocol} (test rows, {config.encoder} + {'/'.join(heads)} heads)"
            print(format_evaluation(title, report, data))
            if data is not None:  # arena-rated has a rank correlation, no curve
                plot_curve(data, plot, f"{args.protocol}: cost-quality curve")
                run.log_artifact(plot)
                print(f"\ncurve: {plot}")
            print(f"router: {out}")
            if len(folds) == 1:
                print(describe_knob(routers[folds[0].k]))
            log_report(run, report)
        else:
            if args.table:
                train = table_rows(args, config)
                run.log_params({"table": str(args.table), "columns": ",".join(train.models),
                                "rows": len(train)})
            else:
                train = all_training_rows(args.data_dir, strong=strong, weak=weak,
                                          extra=config.extra)
            result = train_rows(train, config, args.data_dir, prices_file=args.prices,
                                warm_asked=args.estimator == "warm",
                                scale=args.scale if args.table else None,
                                say=lambda text: print(text, flush=True))
            router = result.router
            if result.derived:
                run.log_params({"prices_from_costs": ", ".join(
                    f"{m} ({d.method})" for m, d in result.derived.items())})
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
                  f"{info.registered_model_version}); load it from this store: "
                  f"mlflow.set_tracking_uri({tracker.uri!r}), or MLFLOW_TRACKING_URI="
                  f"{tracker.uri} for mlflow models serve")
    if tracker.enabled:  # where the run went: a registered model is loaded from the same store
        print(f"mlflow store: {tracker.uri} (experiment {args.experiment!r})")
    return 0
