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

from router_ml.data import STRONG_MODEL, WEAK_MODEL
from router_ml.errors import RouterMLError
from router_ml.protocols import PROTOCOLS, protocol_folds

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


def describe_threshold(router) -> str:
    """One line on the threshold and what it achieved where it was calibrated."""
    c = router.calibration
    a = c.achieved
    line = f"threshold {router.threshold:.4f} ({c.method}: {c.target})"
    if "share" in a:
        line += f": {100 * a['share']:.1f} % strong calls"
    if a.get("pgr") is not None:
        line += f", PGR {a['pgr']:.3f}, quality {100 * a['quality']:.1f} %"
    return line + (f" on {c.n} out-of-fold scores" if c.n else "")


def pooled_scores(folds, score_fn):
    """Concatenate each fold's test rows and scores (one curve for a k-fold protocol)."""
    scores, qs, qw, prompts = [], [], [], []
    for f in folds:
        scores.append(np.asarray(score_fn(f), dtype=np.float64))
        qs.append(f.test.q_strong)
        qw.append(f.test.q_weak)
        prompts.extend(f.test.prompts)
    return np.concatenate(scores), np.concatenate(qs), np.concatenate(qw), prompts


# ------------------------------------------------------------------------------- train


def train_parser() -> argparse.ArgumentParser:
    from router_ml.labels import LABEL_KINDS
    from router_ml.training import CLASSIFIER_CHOICES, ENCODER_PARTS, TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a router. With --protocol: on that protocol's training rows (one "
                    "router per fold in OUT/fold-K for a k-fold protocol), evaluated on its "
                    "test rows. Without: the default router on all training data, into "
                    "models/default.")
    p.add_argument("--protocol", choices=PROTOCOLS, help="evaluation protocol to train for")
    p.add_argument("--out", type=Path, help="output directory (default: models/default, or "
                   "models/<protocol> with --protocol)")
    p.add_argument("--data-dir", type=Path, help="folder with the data sources (default: "
                   "$ROUTER_ML_DATA or ../shared/data)")
    p.add_argument("--table", type=Path, help="train on your own CSV/JSONL/Parquet file instead")
    p.add_argument("--prompt-column", default="prompt", help="prompt column of --table")
    p.add_argument("--model-columns", help="comma-separated score columns of --table "
                   "(default: all other columns)")
    p.add_argument("--scale", choices=("unit", "judge10"), default="unit",
                   help="scores of --table: 0/1 or [0,1] (unit) or 1-10 judge scores")
    p.add_argument("--strong", default=STRONG_MODEL, help="strong model name")
    p.add_argument("--weak", default=WEAK_MODEL, help="weak model name")
    p.add_argument("--encoder", default=d.encoder,
                   help=f"feature parts joined by '+', from {', '.join(ENCODER_PARTS)} "
                        "(default %(default)s)")
    p.add_argument("--classifier", choices=CLASSIFIER_CHOICES, default=d.classifier)
    p.add_argument("--C", type=float, default=d.C, help="inverse regularisation of logreg "
                   "(default: chosen by cross-validation in the training rows)")
    p.add_argument("--label", choices=LABEL_KINDS, default=d.label)
    p.add_argument("--extra", default=None,
                   help="extra training sources for the pair, comma-separated (arena-hard, "
                        "dcrouter), '' for none; rows matching a test question are dropped "
                        f"(default: {','.join(d.extra)}; none with --table)")
    p.add_argument("--min-pgr", type=float, default=d.min_pgr,
                   help="threshold target: share of the strong model's gain to keep (default %(default)s)")
    p.add_argument("--share", type=float, help="threshold target: strong-call share instead")
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
    from router_ml.training import TrainConfig

    return TrainConfig(encoder=args.encoder, classifier=args.classifier, C=args.C,
                       label=args.label, min_pgr=None if args.share is not None else args.min_pgr,
                       share=args.share, random_state=args.seed, n_jobs=args.jobs,
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


def _train(args) -> int:
    from router_ml import evaluation
    from router_ml.labels import pair_data
    from router_ml.protocols import add_extra_rows, all_training_rows
    from router_ml.tracking import Tracker
    from router_ml.training import fit_router

    config = _config_from_args(args)
    tracker = Tracker(experiment=args.experiment, enabled=not args.no_tracking)
    tracker.check()  # fail before any training work if the server is unreachable
    name = args.protocol or (args.table.stem if args.table else "default")
    out = args.out or args.root / "models" / name
    params = {**config.to_dict(), "protocol": args.protocol or "all", "strong": args.strong,
              "weak": args.weak}
    t0 = time.perf_counter()
    with tracker.run(name, params) as run:
        if args.protocol:
            folds = protocol_folds(args.protocol, args.data_dir, strong=args.strong,
                                   weak=args.weak, extra=config.extra)
            routers = {}
            for f in folds:
                print((f"training fold {f.k}" if f.k is not None else "training")
                      + f" on {len(f.train)} rows"
                      + (f" ({f.dropped} extra rows dropped: they match test questions)"
                         if config.extra else ""), flush=True)
                routers[f.k] = fit_router(f.train, config, args.strong, args.weak)
            scores, qs, qw, _ = pooled_scores(folds, lambda f: routers[f.k].score(f.test.prompts))
            report = evaluation.evaluate(scores, qs, qw).to_dict()
            out.mkdir(parents=True, exist_ok=True)
            for f in folds:
                r = routers[f.k]
                r.evaluation = {"protocol": args.protocol, "fold": f.k, **report}
                r.save(out if f.k is None else out / f"fold-{f.k}")
            plot = out / "curve.png"
            evaluation.plot_curves({"router": scores}, qs, qw, plot,
                                   title=f"{args.protocol}: cost-quality curve")
            (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            print()
            print(format_report(f"{args.protocol} (test rows, {config.encoder} + "
                                f"{config.classifier})", report))
            print(f"\ncurve: {plot}\nrouter: {out}")
            if len(folds) == 1:
                print(describe_threshold(routers[folds[0].k]))
            run.log_metrics(report)
            run.log_artifact(plot)
        else:
            if args.table:
                from router_ml.data import load_table

                cols = args.model_columns.split(",") if args.model_columns else None
                ds = load_table(args.table, prompt_column=args.prompt_column,
                                model_columns=cols, scale=args.scale)
                train = pair_data(ds, args.strong, args.weak)
                if config.extra:
                    train = add_extra_rows(train, config.extra, args.data_dir,
                                           strong=args.strong, weak=args.weak)
            else:
                train = all_training_rows(args.data_dir, strong=args.strong, weak=args.weak,
                                          extra=config.extra)
            print(f"training the default router on {len(train)} rows", flush=True)
            router = fit_router(train, config, args.strong, args.weak)
            router.save(out)
            print(f"router: {out}\n{describe_threshold(router)}")
            run.log_metrics({f"calibration_{k}": v for k, v in router.calibration.achieved.items()})
        run.log_metrics({"train_seconds": time.perf_counter() - t0})
        run.log_dir(out, "router")
        if args.register:
            from router_ml.mlflow_flavor import log_model

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
        description="Evaluate a saved router (or a baseline) on a protocol's test rows: prints "
                    "n, weak and strong quality, APGR, CPT(50%), CPT(80%), AUC and the random "
                    "and oracle APGR, and writes them as JSON.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="router directory (for a k-fold protocol: the "
                     "directory holding fold-0 .. fold-4)")
    src.add_argument("--baseline", choices=BASELINES, help="random or length (longer prompt, "
                     "higher score)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="mmlu")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--report", type=Path, help="JSON output (default: reports/<name>-<protocol>.json)")
    p.add_argument("--plot", type=Path, help="PNG of the curve (default: next to the report)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
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
    from router_ml import evaluation, load_router

    folds = protocol_folds(args.protocol, args.data_dir)
    if args.baseline:
        name = args.baseline
        score_fn = lambda f: baseline_scores(args.baseline, f.test.prompts, args.seed)  # noqa: E731
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
        score_fn = lambda f: routers[f.k].score(f.test.prompts)  # noqa: E731
    scores, qs, qw, _ = pooled_scores(folds, score_fn)
    report = evaluation.evaluate(scores, qs, qw).to_dict()
    out = args.report or args.root / "reports" / f"{name}-{args.protocol}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = args.plot or out.with_suffix(".png")
    evaluation.plot_curves({name: scores}, qs, qw, plot, title=f"{args.protocol}: {name}")
    payload = {"protocol": args.protocol, "router": str(args.model) if args.model else None,
               "baseline": args.baseline, **report,
               "published": PUBLISHED.get(args.protocol)}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(format_report(f"{args.protocol}: {name}", report))
    print(f"\nreport: {out}\ncurve: {plot}")
    return 0
