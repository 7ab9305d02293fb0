"""Choosing heads and judging them on rows they did not see: out-of-fold predictions, the
heads' search by routing quality (scikit-learn's GridSearchCV with a routing scorer), and the
check that a router routes better than it would without any signal.
"""

from __future__ import annotations

import logging

import numpy as np

from router_ml.core.router import pair_score
from router_ml.learn.config import (
    C_GRID,
    C_GRID_SOURCES,
    SELECT_BY,
    TrainConfig,
    build_classifier,
    build_estimator,
)
from router_ml.learn.rows import Rows

logger = logging.getLogger(__name__)



def make_folds(config: TrainConfig):
    from sklearn.model_selection import KFold

    return KFold(config.cv_folds, shuffle=True, random_state=config.random_state)


def choose_heads(config: TrainConfig, X, train: Rows, costs) -> dict:
    """The estimator parameters that route held-out rows best (mean over the held-out parts
    of APGR for two models, AIQ for more): scikit-learn's GridSearchCV with a routing scorer
    (the rows' costs reach it through metadata routing), over shuffled folds, held-out
    sources, or both (the mean of the two scores; see ``select_by``). Logistic heads without
    a fixed ``C``: C from ``C_GRID`` (``C_GRID_SOURCES`` when sources are held out); ``auto``
    with more than two models: also kNN heads. Returns {} when there is nothing to choose."""
    if config.select_by not in SELECT_BY:
        raise ValueError(f"select_by must be one of {', '.join(map(repr, SELECT_BY))}, got "
                         f"{config.select_by!r}")
    ways = ["folds"] if config.select_by == "folds" or len(set(train.sources)) < 2 else \
        ["sources"] if config.select_by == "sources" else ["folds", "sources"]
    from sklearn import config_context
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
    from threadpoolctl import threadpool_limits

    splits = {"folds": (make_folds(config), {}),
              "sources": (LeaveOneGroupOut(), {"groups": np.asarray(train.sources)})}
    grid = []
    if config.classifier in ("logreg", "auto"):
        cs = C_GRID_SOURCES if "sources" in ways else C_GRID
        grid.append({"C": list(cs) if config.C is None else [config.C]})
    if config.classifier == "auto" and costs is not None:
        # no more neighbours than the smallest part a candidate is fitted on
        smallest = min(len(tr) for w in ways
                       for tr, _ in splits[w][0].split(X, groups=splits[w][1].get("groups")))
        knn = TrainConfig(classifier="knn", k=max(1, min(config.k, smallest)))
        grid.append({"classifier": [build_classifier(knn)], "neighbours": [0]})
    if sum(len(v) for g in grid for v in g.values()) < 2:
        return {}
    scores, errors = [], []  # per way: each candidate's mean held-out score, its standard error
    with config_context(enable_metadata_routing=True), threadpool_limits(1):
        scorer = make_scorer(routing_score, response_method="decision_function")
        if costs is not None:
            scorer = scorer.set_score_request(costs=True)
        for way in ways:
            cv, meta = splits[way]
            search = GridSearchCV(build_estimator(config, n_models=len(train.models)), grid,
                                  scoring=scorer, cv=cv,
                                  n_jobs=config.n_jobs, refit=False, error_score="raise")
            search.fit(X, train.quality, **meta, **({} if costs is None else {"costs": costs}))
            scores.append(search.cv_results_["mean_test_score"])
            errors.append(search.cv_results_["std_test_score"] / np.sqrt(search.n_splits_))
    what = "APGR" if costs is None else "AIQ"
    mean = np.mean(scores, axis=0)
    params = search.cv_results_["params"]
    for i, p in enumerate(params):
        logger.info("%s: held-out %s %s", _describe(p), what,
                    " / ".join(f"{w} {s[i]:.4f}" for w, s in zip(ways, scores)))
    best = int(np.argmax(mean))
    numpy_only = [i for i, p in enumerate(params) if p.get("classifier") is None]
    if best not in numpy_only and numpy_only:
        # heads other than logistic ones need scikit-learn (and seconds) to load: keep them
        # only when they route held-out rows better by more than the folds' standard error
        se = float(np.mean([e[best] for e in errors]))
        alt = max(numpy_only, key=lambda i: mean[i])
        if mean[best] - mean[alt] <= se:
            logger.warning("%s route held-out rows better than %s by %.4f %s, within the folds' "
                           "standard error (%.4f): keeping %s, which load with numpy alone",
                           _describe(params[best]), _describe(params[alt]),
                           mean[best] - mean[alt], what, se, _describe(params[alt]))
            best = alt
        else:
            logger.warning("keeping %s (held-out %s %.4f against %.4f for %s): the saved router "
                           "needs scikit-learn to load (pip install 'router_ml[train]') and "
                           "loads in seconds rather than under one", _describe(params[best]),
                           what, mean[best], mean[alt], _describe(params[alt]))
    return dict(params[best])


def heads_name(classifier) -> str:
    name = type(classifier).__name__
    return "logistic" if classifier is None else {"KNeighborsClassifier": "kNN"}.get(name, name)


def _describe(params: dict) -> str:
    clf = params.get("classifier")
    k = f" (k={clf.n_neighbors})" if hasattr(clf, "n_neighbors") else ""
    return heads_name(clf) + k + (f", C={params['C']}" if "C" in params else "")


def routing_score(Y, V, costs=None, rule: str = "gain") -> float:
    """APGR (two models, no costs) or AIQ of decision values V against qualities Y (rows with
    a missing quality left out); -inf where undefined (e.g. both models equally good)."""
    from router_ml.core.metrics import apgr
    from router_ml.learn.evaluation import evaluate_multi

    Y, V = np.asarray(Y, dtype=np.float64), np.asarray(V, dtype=np.float64)
    try:
        if costs is None:
            return apgr(pair_score(V, rule), Y[:, 0], Y[:, 1])
        keep = np.isfinite(Y).all(axis=1)
        names = [str(i) for i in range(Y.shape[1])]
        return evaluate_multi(V[keep], Y[keep], np.asarray(costs)[keep], names).aiq
    except ValueError:
        return float("-inf")


def signal_check(Y, V, costs, value: float, n_boot: int = 100, seed: int = 0,
                  rule: str = "gain") -> dict:
    """How far the out-of-fold routing quality ``value`` is from routing without any signal,
    with a bootstrap standard error over the rows: {"baseline", "se", "no_signal"}. The
    baseline is random routing for two models (APGR 0.5) and, for more, the best mix of single
    models (the AIQ of their upper hull: what one reaches ignoring the prompt)."""
    from router_ml.core.metrics import aiq, upper_hull

    Y = np.asarray(Y, dtype=np.float64)
    keep = np.isfinite(Y).all(axis=1)
    Y, V = Y[keep], np.asarray(V)[keep]
    C = None if costs is None else np.asarray(costs)[keep]

    def baseline(idx):
        if C is None:
            return 0.5
        mc, mq = C[idx].mean(axis=0), Y[idx].mean(axis=0)
        return aiq(*upper_hull(mc, mq), float(mc.min()), float(mc.max()))

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(Y), len(Y))
        v = routing_score(Y[idx], V[idx], None if C is None else C[idx], rule)
        if np.isfinite(v):
            diffs.append(v - baseline(idx))
    base = baseline(np.arange(len(Y)))
    se = float(np.std(diffs)) if len(diffs) > 1 else float("nan")
    return {"baseline": base, "se": se,
            "no_signal": bool(np.isfinite(value) and np.isfinite(se) and value - base < se)}


def out_of_fold(estimator, X, train: Rows, config: TrainConfig, by: str = "folds") -> np.ndarray:
    """(n, m) decision values of the training rows, each from a model fitted without it
    (``by="folds"``: shuffled folds) or without its source's rows (``by="sources"``)."""
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.model_selection import LeaveOneGroupOut
    from threadpoolctl import threadpool_limits

    # (cross_val_predict label-encodes y for decision_function, which would turn qualities
    # into class indices, hence this loop.)
    splits = (make_folds(config).split(X) if by == "folds" else
              LeaveOneGroupOut().split(X, groups=np.asarray(train.sources)))
    Y = train.quality

    def one(tr, te):
        return te, clone(estimator).fit(X[tr], Y[tr]).decision_function(X[te])

    # One BLAS thread per fit, as in joblib's workers: the out-of-fold values, hence the
    # knob, are then the same bit for bit whatever n_jobs is.
    with threadpool_limits(1):
        parts = Parallel(n_jobs=config.n_jobs)(delayed(one)(tr, te) for tr, te in splits)
    oof = np.empty(Y.shape)
    for te, v in parts:
        oof[te] = v
    return oof
