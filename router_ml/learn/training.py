"""Training a router: the fit-then-calibrate recipe (:func:`fit_router`) for either estimator.
The configuration is :mod:`router_ml.learn.config` (its names are re-exported here), the heads'
search :mod:`router_ml.learn.selection`.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from router_ml.core.prompts import fingerprint
from router_ml.core.router import Router, pair_score
from router_ml.core.state import RouterState
from router_ml.learn.config import (  # noqa: F401 (re-exported, see __all__)
    C_GRID,
    C_GRID_SOURCES,
    CLASSIFIER_CHOICES,
    DEFAULT_ROUTER,
    ENCODER_PARTS,
    ESTIMATORS,
    SELECT_BY,
    STATIC_DIR,
    STATIC_SHA256,
    TrainConfig,
    build_encoder,
    build_estimator,
    build_router,
    committed_static_encoder,
    neighbours_of,
    static_encoder,
)
from router_ml.learn.rows import Rows
from router_ml.learn.selection import (
    choose_heads,
    make_folds,
    heads_name,
    routing_score,
    signal_check,
    out_of_fold,
)

logger = logging.getLogger(__name__)

# significant digits of every number a trained router saves (see fit_router's end)
SAVED_DIGITS = 8

# the warm start keeps the heads from scratch when their out-of-fold routing leads its own by
# more than this many standard errors of the difference (0: the better of the two)
WARM_MARGIN = 0.0

# the configuration's names, where users of router_ml 0.1 import them
__all__ = ["CLASSIFIER_CHOICES", "C_GRID", "C_GRID_SOURCES", "DEFAULT_ROUTER", "ENCODER_PARTS",
           "ESTIMATORS", "SELECT_BY", "STATIC_DIR", "STATIC_SHA256", "TrainConfig", "build_encoder",
           "build_estimator", "build_router", "committed_static_encoder", "fit_router",
           "out_of_fold", "static_encoder"]


def _outcome_table(train: Rows, outcomes: Rows | None) -> tuple[Rows, list[int]]:
    """Every outcome the difficulty estimator learns from: the training rows first (their
    columns filled from an outcome row of the same source and prompt, which holds every
    model), then the other outcome rows; and the candidates' columns in it."""
    from router_ml.learn.rows import union

    if outcomes is None or not len(outcomes):
        return train, list(range(len(train.models)))
    table = union([train, outcomes])
    n = len(train)
    where = {(s, p): i for i, (s, p) in enumerate(zip(train.sources, train.prompts))}
    keep = np.ones(len(table), dtype=bool)
    for j in range(n, len(table)):
        i = where.get((table.sources[j], table.prompts[j]))
        if i is not None:
            missing = np.isnan(table.quality[i])
            table.quality[i, missing] = table.quality[j, missing]
            keep[j] = False
    return table.subset(keep), [table.models.index(m) for m in train.models]


def _fit_difficulty(encoder, train: Rows, config: TrainConfig, outcomes):
    """Fit ``encoder`` and a DifficultyEstimator on every outcome; return the estimator, its
    training record, the training rows' features, out-of-fold predicted qualities (n, m) of
    the candidates, and a function that predicts each training source's rows without that
    source (the prior's weight chosen on held-out sources)."""
    from router_ml.core.prompts import fingerprint
    from router_ml.learn.difficulty import DifficultyEstimator

    table, cols = _outcome_table(train, outcomes)
    X_all = encoder.fit_transform(table.prompts)
    X_all = X_all.toarray() if hasattr(X_all, "toarray") else np.asarray(X_all)
    estimator = functools.partial(DifficultyEstimator, random_state=config.random_state,
                                  rank=config.rank)
    est = estimator(columns=cols)
    oof = np.empty((len(train), len(cols)))
    for tr, te in make_folds(config).split(X_all):
        fold = estimator(columns=cols)
        fold.fit(X_all[tr], table.quality[tr], source=table.sources[tr])
        te = te[te < len(train)]
        oof[te] = fold.predict(X_all[te])
    est.fit(X_all, table.quality, source=table.sources)
    training = {"n": len(train), "n_outcomes": len(table),
                       "outcome_models": len(table.models), "alpha": est.alpha_,
                       "fingerprint": fingerprint(table.prompts,
                                                  np.nan_to_num(table.quality, nan=-1))}

    def out_of_source() -> np.ndarray:
        """(n, m) the training rows' predicted qualities, each source's rows from an
        estimator fitted without that source's outcomes nor any outcome row of its prompts
        (another source may hold the same prompt): traffic the difficulty did not see."""
        oos = np.empty((len(train), len(cols)))
        sources = np.asarray(train.sources, dtype=object)
        for s in np.unique(sources):
            mine = set(np.asarray(train.prompts, dtype=object)[sources == s])
            keep = np.array([src != s and p not in mine
                             for src, p in zip(table.sources, table.prompts)], dtype=bool)
            # only the models with an outcome left (some answered this source alone)
            Y = table.quality[keep]
            have = np.flatnonzero(np.isfinite(Y).any(axis=0))
            if not set(cols) <= set(have):
                raise ValueError(f"with {s!r} left out, a candidate model has no outcome: the "
                                 "prior's weight cannot be chosen on left-out sources here; "
                                 "choose it on folds (prior_select_by='folds')")
            fold = estimator(columns=[int(np.searchsorted(have, c)) for c in cols])
            fold.fit(X_all[keep], Y[:, have], source=table.sources[keep])
            oos[sources == s] = fold.predict(X_all[:len(train)][sources == s])
        return oos

    return est, training, X_all[:len(train)], oof, out_of_source


def _fit_warm(encoder, train: Rows, config: TrainConfig, costs, outcomes, prior):
    """Fit ``encoder`` and a WarmStartEstimator over the default's prior (``prior``, or one
    fitted on ``outcomes`` minus the rows that match a training row), its strengths chosen on
    held-out folds; return the estimator, its training record, the training rows' features
    (dense, and as the encoder gives them),
    out-of-fold predictions and the pair score's rule."""
    from router_ml.learn.warm import Prior, choose_warm, prior_outcomes, warm_estimator

    dropped = None
    if prior is None:
        if outcomes is not None:
            outcomes, dropped = prior_outcomes(outcomes, train)
        prior = Prior.fit(outcomes, random_state=config.random_state)
    X_raw = encoder.fit_transform(train.prompts)
    X = X_raw.toarray() if hasattr(X_raw, "toarray") else np.asarray(X_raw, dtype=np.float64)
    est = warm_estimator(prior, train.models, X.shape[1])
    known = [m for m, ab in zip(train.models, est.abilities) if np.isfinite(ab).all()]
    # few rows make a noisy held-out score: repeat the folds (up to 3 times) below 3,000 rows.
    # A pair's score is the gain (0.5 + (q_strong - q_weak) / 2) of the corrected heads: on a
    # few hundred rows, choosing it or 1 - q_weak by held-out APGR picks by luck
    repeats = int(min(3, max(1, np.ceil(3000 / len(train)))))
    lengths = ([len(p) for p in train.prompts] if costs is None and config.length_prior
               else None)
    chosen = choose_warm(est, X, train.quality, costs, folds=config.cv_folds, repeats=repeats,
                         random_state=config.random_state, lengths=lengths, rules=("gain",),
                         length_weights=(None if config.prior_weight is None
                                         else (config.prior_weight,)))
    # the strengths are chosen on the corrected heads' own log-loss; the neighbours (as the
    # heads from scratch have them) join after, before the comparison with those heads
    est.set_params(C=chosen["C"], C_ability=chosen["C_ability"],
                   neighbours=neighbours_of(config, len(train.models)))
    oof = out_of_fold(est, X, train, config)
    est.fit(X, train.quality)
    from_rows = [m for m in train.models if m not in known]
    training = {"n": len(train), "warm_start": {
        "C": chosen["C"], "C_ability": chosen["C_ability"], "rule": chosen["rule"],
        "cv_score": chosen["score"], "cv_log_loss": chosen["log_loss"], "prior_rows": prior.n,
        "prior_dropped": dropped, "models_from_prior": known, "models_from_rows": from_rows},
        "fingerprint": fingerprint(train.prompts, np.nan_to_num(train.quality, nan=-1))}
    logger.info("warm start: C=%g, C_ability=%g (held-out log-loss %.4f, routing %.4f); "
                "abilities from the prior: %s; from the rows: %s", chosen["C"],
                chosen["C_ability"], chosen["log_loss"], chosen["score"],
                ", ".join(known) or "none", ", ".join(from_rows) or "none")
    return est, training, X, X_raw, oof, chosen["rule"]


def warm_or_scratch(Y, warm, scratch, costs, rule: str = "gain", *, margin: float = 0.0,
                    n_boot: int = 100, seed: int = 0) -> dict:
    """Which out-of-fold predictions route the rows better, the warm start's or the heads'
    from scratch (the same rows and folds): ``scratch`` when it leads by more than ``margin``
    standard errors of the difference (a paired bootstrap over the rows; 0: whichever routes
    better, a tie keeps ``warm``), else ``warm``. Returns {"chosen", "warm", "scratch", "se",
    "margin"}."""
    Y = np.asarray(Y, dtype=np.float64)
    a, b = routing_score(Y, warm, costs, rule), routing_score(Y, scratch, costs, rule)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(Y), len(Y))
        c = None if costs is None else np.asarray(costs)[idx]
        d = (routing_score(Y[idx], scratch[idx], c, rule)
             - routing_score(Y[idx], warm[idx], c, rule))
        if np.isfinite(d):
            diffs.append(d)
    se = float(np.std(diffs)) if len(diffs) > 1 else float("inf")
    lead = margin * se if margin else 0.0
    chosen = "scratch" if np.isfinite(b) and (not np.isfinite(a) or b - a > lead) else "warm"
    return {"chosen": chosen, "warm": float(a), "scratch": float(b), "se": se,
            "margin": float(margin)}


def fit_router(train: Rows, config: TrainConfig, prices=None, outcomes: Rows | None = None,
               prior=None) -> Router:
    """Fit a router on ``train`` and calibrate its knob on out-of-fold predictions.

    The encoder is fitted on all training prompts (it sees no labels). C is chosen from
    ``C_GRID`` (logistic heads, ``C=None``; with ``auto`` and more models, kNN heads too) by
    :func:`choose_heads` (GridSearchCV over
    ``cv_folds`` folds, scored by routing quality: APGR for two models, AIQ for more). With
    that C the rows get out-of-fold decision values (every row predicted by a model that did
    not see it), which calibrate the threshold (two models) or ``lam`` (more models, with
    the costs the router routes by: from ``prices`` when they price every model, else from
    ``train.costs`` where the rows carry them); the router
    is then refitted on all rows with that C and keeps that knob. With ``config.estimator ==
    "difficulty"`` a :class:`~router_ml.learn.difficulty.DifficultyEstimator` learns from the
    training rows and every model's ``outcomes`` (rows of other sources and models, e.g.
    :func:`router_ml.learn.protocols.outcome_rows`), with out-of-fold predictions the same way.
    With ``"warm"`` a :class:`~router_ml.learn.warm.WarmStartEstimator` corrects the default's
    difficulty and abilities (``prior``, a :class:`~router_ml.learn.warm.Prior`, or one fitted
    on ``outcomes``) with the training rows (:mod:`router_ml.learn.warm`).
    """
    from router_ml.core.calibration import calibrate, lam_for_target

    if len(train) < 20:
        raise ValueError(f"training needs at least 20 labelled rows, got {len(train)}")
    if config.prior_select_by not in SELECT_BY:
        raise ValueError(f"prior_select_by must be one of {', '.join(map(repr, SELECT_BY))}, "
                         f"got {config.prior_select_by!r}")
    if config.prior_weight is not None and not 0.0 <= config.prior_weight <= 1.0:
        raise ValueError(f"prior_weight must be in [0, 1] (or None: chosen on the training "
                         f"rows), got {config.prior_weight!r}")
    if config.prior_weight is not None and not config.length_prior:
        raise ValueError(f"prior_weight {config.prior_weight!r} is set but length_prior is "
                         "off: turn the prior on (--length-prior) or leave the weight unset")
    if config.estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {config.estimator!r}")
    if config.rank and config.estimator != "difficulty":
        raise ValueError(f"rank {config.rank!r} is the difficulty estimator's low-rank term; "
                         f"estimator {config.estimator!r} has none (use estimator='difficulty' "
                         "or rank=0)")
    spec = build_router(config, train.models, prices)
    encoder = spec.encoder
    pair = len(train.models) == 2
    difficulty = config.estimator == "difficulty"
    warm = config.estimator == "warm"
    if warm and config.prior_select_by != "folds":
        raise ValueError("prior_select_by applies to heads and the difficulty estimator; the "
                         "warm start's prior is chosen on shuffled folds")
    from router_ml.core.prices import row_costs

    tokenizer = None
    if config.tokenizer is not None:
        from router_ml.core.prices import load_tokenizer

        tokenizer = load_tokenizer(config.tokenizer)
    # lam is calibrated on the costs the saved router will route by: its prices when it has
    # one for every model (a log's observed costs may disagree; router_prices warns), else
    # the rows' observed costs
    priced = bool(prices) and all(m in prices for m in train.models)
    costs = None if pair else row_costs(train.prompts, train.models,
                                        None if priced else train.costs, prices,
                                        tokenizer=tokenizer)
    rule = "weak" if difficulty else "gain"
    if difficulty:
        estimator, training, X, oof, out_of_source = _fit_difficulty(encoder, train, config,
                                                                     outcomes)
    elif warm:
        estimator, training, X, X_raw, oof, rule = _fit_warm(encoder, train, config, costs,
                                                             outcomes, prior)
        # the heads from scratch on the same features (as the encoder gives them, exactly as
        # estimator "heads" takes them) and folds: kept when the team's rows route better
        # without the prior (WARM_MARGIN standard errors)
        scratch = spec.estimator.set_params(**choose_heads(config, X_raw, train, costs))
        oof_scratch = out_of_fold(scratch, X_raw, train, config)
        choice = warm_or_scratch(train.quality, oof, oof_scratch, costs, rule,
                                 margin=WARM_MARGIN, seed=config.random_state)
        training["warm_start"]["choice"] = choice
        logger.info("warm start against heads from scratch: out-of-fold %.4f vs %.4f "
                    "(difference %+.4f +- %.4f): %s", choice["warm"], choice["scratch"],
                    choice["scratch"] - choice["warm"], choice["se"], choice["chosen"])
        if choice["chosen"] == "scratch":
            estimator, oof, X = scratch.fit(X_raw, train.quality), oof_scratch, X_raw
    else:
        X = encoder.fit_transform(train.prompts)
        estimator = spec.estimator.set_params(**choose_heads(config, X, train, costs))
        oof = out_of_fold(estimator, X, train, config)  # fits clones
    cv_quality = routing_score(train.quality, oof, costs, rule)
    signal = signal_check(train.quality, oof, costs, cv_quality, seed=config.random_state,
                           rule=rule)
    if signal["no_signal"]:
        what = "APGR" if pair else "AIQ"
        logger.warning(
            "out-of-fold %s %.3f is within its bootstrap error (%.3f) of routing without a "
            "signal (%s %.3f): the features do not predict which model answers these prompts "
            "better, so this router routes about as well as %s; check the labels (a quality "
            "column per model, higher = better) or add rows", what, cv_quality, signal["se"],
            "random" if pair else "the best mix of single models", signal["baseline"],
            "a coin" if pair else "a fixed mix of models")
    if difficulty:
        C = None
    elif warm:
        C = estimator.C
        if training["warm_start"]["choice"]["chosen"] == "scratch":
            C = estimator.C if estimator.classifier is None else None
    else:
        C = estimator.C if estimator.classifier is None else None
        estimator.fit(X, train.quality)
        training = {"n": len(train), "fingerprint": fingerprint(
            train.prompts, np.nan_to_num(train.quality, nan=-1))}
    coverage = None
    if config.coverage is not None:
        from router_ml.core.coverage import Coverage

        coverage = Coverage.fit(X, level=config.coverage, random_state=config.random_state)
    fp = fingerprint(train.prompts)
    info = {"config": config.to_dict(), "C": C,
            "heads": ("difficulty" if difficulty else "warm-start" if warm
                      else heads_name(estimator.classifier)),
            "sources": sorted(set(train.sources) | (set(outcomes.sources) if (difficulty or warm)
                                                    and outcomes is not None else set())),
            "neighbours": getattr(estimator, "neighbours", 0),
            "cv_apgr" if pair else "cv_aiq": None if not np.isfinite(cv_quality) else cv_quality,
            "cv_signal": signal}
    length_prior = None
    if pair:
        qs, qw = train.q_strong, train.q_weak
        score = pair_score(oof, rule)
        if config.length_prior:
            from router_ml.core.prior import WEIGHTS, LengthPrior

            lengths = [len(p) for p in train.prompts]
            held_out, by = None, config.prior_select_by
            if by != "folds" and len(set(train.sources)) > 1:
                oos = (out_of_source() if difficulty else
                       out_of_fold(estimator, X, train, config, by="sources"))
                held_out = (pair_score(oos, rule), train.sources)
            weights = WEIGHTS if config.prior_weight is None else (config.prior_weight,)
            prior = LengthPrior.fit(score, lengths, qs, qw, weights=weights, held_out=held_out,
                                    folds=by != "sources")
            info["length_prior_weight"], info["cv_apgr_with_prior"] = prior.weight, prior.apgr_
            # kept at weight 0 too: the score is then the plain score's share of the training
            # rows, the same order on a scale that routers trained on other rows share
            length_prior = prior
            score = prior.apply(score, lengths)
        guarantee = config.delta is not None
        t, record = calibrate(score, share=config.share, q_strong=qs, q_weak=qw,
                              min_pgr=None if config.share is not None or guarantee
                              else config.min_pgr,
                              max_drop=config.max_drop if guarantee else None,
                              delta=config.delta, n=len(train), fingerprint=fp)
        knob = {"threshold": t}
    else:
        target = ({"budget": config.budget} if config.budget is not None else
                  {"dearest_share": config.dearest_share} if config.dearest_share is not None
                  else {"max_drop": config.max_drop})
        lam, record = lam_for_target(oof, train.quality, costs, fingerprint=fp, strict=False,
                                     **target)
        if not record.achieved["met"]:
            logger.warning("no lam reaches %s on the out-of-fold predictions; lam %s keeps "
                           "the closest policy (%s)", target, record.achieved["lam"],
                           {k: round(v, 6) for k, v in record.achieved.items()
                            if k in ("quality", "mean_cost", "dearest_share")})
        knob = {"lam": lam}
    state = RouterState(encoder, estimator, train.models, **knob, calibration=record,
                        prices=spec.prices, score_rule=rule, prior=length_prior,
                        coverage=coverage,
                        fallback=config.fallback if coverage is not None else None,
                        training={**training, **info})
    # Measured: refits on inputs nudged by one ulp differ by about 1e-13 (relative) in the
    # heads, the prior and the records; at SAVED_DIGITS a rebuild on another CPU gives the
    # same bytes, and scores move by at most 5e-9 (relative)
    return Router(state.rounded(SAVED_DIGITS), tokenizer=tokenizer)
