"""What ``router-ml train`` does, without the command line: the rows (a protocol's folds, a
team's table, or every source), their prices and outcomes, fitting
(:func:`~router_ml.learn.training.fit_router`), evaluation on held-out folds, and saving.
:mod:`router_ml.cli.train` parses the options, calls these and prints what they return;
registering the saved router with mlflow is :func:`router_ml.serve.mlflow_flavor.log_model`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from router_ml.core.artifact import check_save_target, save_router
from router_ml.learn.config import TrainConfig
from router_ml.learn.evaluation import evaluate_rows
from router_ml.learn.training import fit_router


def check_out(out: Path, protocol: str | None) -> None:
    """FileExistsError when ``out`` cannot take the routers: a file, or a folder holding
    something other than a saved router (or, with a protocol, a previous run's fold routers).
    Call it before any work: the save at the end would refuse it."""
    if protocol and out.is_dir() and not out.is_symlink() and (out / "fold-0").is_dir():
        for fold in out.glob("fold-*"):
            check_save_target(fold)
        return
    check_save_target(out)


@dataclass
class ProtocolRun:
    """A protocol's routers (one per fold key), its folds, and their evaluation (the report
    and the curve's data; None for arena-rated, which has a rank correlation, no curve)."""

    protocol: str
    routers: dict
    folds: list
    report: dict
    data: object


def train_protocol(protocol: str, config: TrainConfig, data_dir, *, strong: str, weak: str,
                   on_fold: Callable | None = None) -> ProtocolRun:
    """Fit a router per fold of ``protocol`` and evaluate each on its fold's test rows.
    on_fold(fold): called before each fold's fit (to say what is being trained)."""
    from router_ml.learn.protocols import (
        MULTI_PROTOCOLS,
        protocol_folds,
        protocol_prices,
        with_outcomes,
    )

    folds = protocol_folds(protocol, data_dir, strong=strong, weak=weak, extra=config.extra)
    if config.outcomes:
        folds = with_outcomes(folds, config.outcomes, data_dir)
    prices = protocol_prices(protocol, data_dir) if protocol in MULTI_PROTOCOLS else None
    routers = {}
    for f in folds:
        if on_fold is not None:
            on_fold(f)
        routers[f.k] = fit_router(f.train, config, prices, outcomes=f.outcomes)
    report, data = evaluate_rows(routers, folds, prices, next(iter(routers.values())).tokenizer)
    return ProtocolRun(protocol, routers, folds, report, data)


def save_protocol(run: ProtocolRun, out: Path) -> None:
    """Each fold's router (``out`` itself for a protocol of one fold, else ``out/fold-K``),
    with the evaluation in its manifest, and ``out/report.json``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in run.report.items() if not isinstance(v, list)}
    for f in run.folds:
        evaluation = {"protocol": run.protocol, "fold": f.k, **summary}
        save_router(run.routers[f.k].state.replace(evaluation=evaluation),
                    out if f.k is None else out / f"fold-{f.k}")
    (out / "report.json").write_text(json.dumps(run.report, indent=2) + "\n")


@dataclass
class RowsRun:
    """A router fitted on rows (a team's table or every source): the router, the configuration
    it was fitted with (the warm start falls back to heads without public outcomes) and the
    prices derived from observed costs ({model: PriceFit})."""

    router: object
    config: TrainConfig
    derived: dict


def train_rows(train, config: TrainConfig, data_dir, *, prices_file=None,
               warm_asked: bool = False, scale=None,
               say: Callable[[str], None] | None = None) -> RowsRun:
    """Fit a router on ``train`` (Rows) with prices from ``prices_file`` (or derived from the
    rows' observed costs) and the default's public outcomes when the configuration learns
    from them. warm_asked: the warm start was asked for by name (then missing outcomes are an
    error, not a fall-back to heads). scale: a table's quality scale, kept in the training
    record (``router-ml evaluate --table`` reads held-out rows of the table that way).
    say(text): told what happens, before the long fit (the command prints it)."""
    say = say or (lambda text: None)
    from router_ml.learn.price_fit import METHOD, router_prices
    from router_ml.learn.protocols import outcome_rows

    tokenizer = None
    if config.tokenizer is not None:
        from router_ml.core.prices import load_tokenizer

        tokenizer = load_tokenizer(config.tokenizer)
    prices, derived = router_prices(train, prices_file, tokenizer)
    for m, d in derived.items():
        say(f"price of {m} from its observed costs: {d.describe()}")
    try:
        outcomes = outcome_rows(config.outcomes, data_dir) if config.outcomes else None
    except FileNotFoundError as e:
        if config.estimator != "warm":
            raise
        if warm_asked:  # asked for by name: say what is missing
            raise FileNotFoundError(
                f"the warm start learns the default router's prior from every model's public "
                f"outcomes ({', '.join(config.outcomes)}), which are not here: {e}; give "
                "--data-dir, or train without the prior (--no-prior-router)") from e
        say(f"no public outcomes here for the warm start ({e}): training heads on the "
                     "table's rows alone; give --data-dir (or router-ml data fetch) to start "
                     "from the default's prior")
        config, outcomes = replace(config, estimator="heads", outcomes=()), None
    say(f"training on {len(train)} rows, models: {', '.join(train.models)}"
        + (f"; difficulty also from {len(outcomes)} rows of every model's outcomes "
           f"({', '.join(config.outcomes)})" if outcomes is not None else ""))
    router = fit_router(train, config, prices, outcomes=outcomes)
    training = dict(router.training)
    if scale is not None:
        training["scale"] = scale
    if derived:
        training["prices_from_costs"] = {
            "method": METHOD, "models": {m: d.to_dict() for m, d in derived.items()}}
    from router_ml.core.router import Router

    router = Router(router.state.replace(training=training), tokenizer=router.tokenizer)
    return RowsRun(router, config, derived)
