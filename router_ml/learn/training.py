"""Training a router: the configuration and the fit-then-calibrate recipe."""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from router_ml.core.router import Router, pair_score
from router_ml.learn.labels import TARGETS, Rows

logger = logging.getLogger(__name__)

ENCODER_PARTS = ("tfidf", "stats", "surface", "length", "static", "static256", "minilm")
CLASSIFIER_CHOICES = ("auto", "logreg", "knn", "mlp", "hgb")
C_GRID = (0.03, 0.1, 0.3)
# with select_by="sources": held-out sources favour stronger regularisation
C_GRID_SOURCES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
SELECT_BY = ("folds", "sources", "both")


@dataclass
class TrainConfig:
    """How to train a router.

    encoder: parts joined by ``+``, each one of ``tfidf`` (word 1-2-grams), ``stats`` (28
    prompt statistics: see :func:`router_ml.core.encoders.prompt_stats`), ``surface`` (the 12 of
    them that describe any prompt, not a multiple-choice layout), ``static`` (model2vec
    embedding distilled from all-MiniLM-L6-v2, 64 dimensions in int8; ``static256``: 256 in
    float16) and ``minilm`` (the transformer itself; slow,
    needs torch at run time).
    classifier: the heads of the :class:`~router_ml.learn.estimator.QualityEstimator`: ``auto``
    (two models: ``logreg``; more: ``logreg`` or ``knn``, whichever routes the held-out
    folds best), ``logreg``
    (C chosen per head from ``C_GRID`` by cross-validation, or fixed by ``C``), ``knn`` (k
    neighbours), ``mlp`` or ``hgb`` (histogram gradient boosting; dense features only).
    target: ``gain`` (the first model is the reference: for a pair, the strong one) or
    ``quality`` (see :mod:`router_ml.learn.estimator`).
    extra: sources whose rows of the same models are added to the training rows (rows that
    match a protocol's test question are dropped). The default adds arena-hard-v1's chat
    prompts; alpaca-eval-pairs' judge (the strong model itself, fond of long answers) teaches
    "chat instruction: strong model" and costs 0.11 APGR on gsm8k (``make bench-quality``).
    The knob is calibrated on out-of-fold predictions of the training rows (every row
    predicted by a model that did not see it): two models, a threshold keeping ``min_pgr`` of
    the strong model's quality gain (or a strong-call ``share``); more models, ``lam`` for
    ``max_drop`` (mean quality at most this far below the best single model's), or a
    ``budget`` (mean USD per request), or a ``dearest_share`` of calls to the dearest model.
    Two models with ``delta``: a threshold whose quality drop is at most ``max_drop`` with
    probability 1 - delta on exchangeable traffic
    (:func:`router_ml.core.calibration.threshold_with_guarantee`).
    tokenizer: a Hugging Face ``tokenizer.json`` (file or folder) for exact input-token
    counts in the costs of more than two models (default: ceil(len / 4) tokens); the trained
    router keeps it in memory as ``router.tokenizer`` (it is not saved: set it after loading).
    coverage: the share of held-out training prompts that count as covered (see
    :mod:`router_ml.core.coverage`; None: no coverage signal). fallback: the model for uncovered
    prompts (default none: coverage is a signal, logged and reported; a short everyday prompt
    unlike the training rows is no reason to call the dearest model).
    select_by: how the heads are chosen: ``folds`` (shuffled folds of all training rows),
    ``sources`` (leave one source out: each held-out source is traffic the heads did not see,
    over the wider ``C_GRID_SOURCES``) or ``both`` (the mean of the two scores: seen and unseen
    traffic weigh alike; the default, which has the best mean APGR over the protocol suite,
    ``make bench-quality``); folds when the rows come from one source, as a user's own table
    usually does. The knob is calibrated on shuffled folds either way.
    length_prior: two models: blend the learned score with the prompt's length, with the
    weight (0 to 0.5) that routes the out-of-fold predictions best (:mod:`router_ml.core.prior`;
    at weight 0 the score is the plain score's share of the training rows, in the same
    order). On the protocol suite it raises the mean APGR and most
    of the transfers (``make bench-quality``: ``default`` against ``no-prior``).
    prior_select_by: how the prior's weight is chosen, as ``select_by`` chooses C: ``folds``
    (the default) or with rows from several sources ``sources`` or ``both``, where each source
    is also predicted by a model fitted without it. ``both`` has a lower suite mean (``make
    bench-quality``: ``prior-both``), so it stays an option.
    n_jobs: parallel cross-validation fits (joblib; None = one, -1 = every core).
    estimator: ``heads`` (the :class:`~router_ml.learn.estimator.QualityEstimator`'s heads on
    the training rows: ``target``, ``classifier``, ``C``, ``select_by`` apply) or
    ``difficulty`` (:class:`~router_ml.learn.difficulty.DifficultyEstimator`: one difficulty
    shared by every model, learned from every model's outcomes on the training rows and on
    the ``outcomes`` sources; a pair's score is then 1 - q_weak, see
    :func:`router_ml.core.router.pair_score`). The default router (:data:`DEFAULT_ROUTER`)
    uses ``difficulty``, what transfers to traffic it was not trained on; a team's own logs
    train ``heads`` by default.
    outcomes: with ``difficulty``, the sources whose every model's outcomes it learns from as
    well (:data:`router_ml.learn.protocols.OUTCOME_SOURCES`; a protocol drops the rows that
    match its test questions).
    """

    encoder: str = "static+surface"
    classifier: str = "auto"
    C: float | None = None
    cv_folds: int = 3
    n_jobs: int | None = None
    k: int = 100
    target: str = "gain"
    min_pgr: float | None = 0.8
    share: float | None = None
    max_drop: float | None = 0.01
    budget: float | None = None
    dearest_share: float | None = None
    random_state: int = 0
    extra: tuple = ("arena-hard",)
    delta: float | None = None
    coverage: float | None = 0.95
    fallback: str | None = None
    tokenizer: str | None = None
    select_by: str = "both"
    length_prior: bool = True
    prior_select_by: str = "folds"
    estimator: str = "heads"
    outcomes: tuple = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["extra"] = list(self.extra)
        d["outcomes"] = list(self.outcomes)
        d["tokenizer"] = None if self.tokenizer is None else str(self.tokenizer)
        d.pop("n_jobs")  # how fast, not what: the result does not depend on it
        return d


# The default's static embedding (all-MiniLM-L6-v2 distilled to 64 dimensions in int8) is an
# input of training, committed with its sha256 here, not a product of it: distilling again
# gives vectors that differ by one int8 step in a few entries from one CPU to another
# (floating-point order in torch), which moves the trained router. Rebuild the folder only on
# purpose (StaticEncoder.distill, then write its parts) and update the digests with it.
STATIC_DIR = Path(__file__).resolve().parents[2] / "models" / "static-minilm-64"
STATIC_NAME = "m2v-all-MiniLM-L6-v2-64-int8"
STATIC_SHA256 = {
    "vectors.npy": "8cb660de9192c36cefafb960ce44dd1f02da42d12de407784509e4f1ec5ca75e",
    "tokenizer.json": "dd33465341c98889c3338356b6200c8b232b89af5f1b7aa8e6ee1d4d7a699631",
}


def committed_static_encoder(folder=STATIC_DIR):
    """The default static embedding from its committed files, each checked against
    :data:`STATIC_SHA256`; ValueError names a changed file."""
    import hashlib

    from router_ml.core.static import StaticEncoder

    folder = Path(folder)
    data = {}
    for name, digest in STATIC_SHA256.items():
        data[name] = (folder / name).read_bytes()
        if hashlib.sha256(data[name]).hexdigest() != digest:
            raise ValueError(f"{folder / name}: sha256 differs from the committed static "
                             "embedding's; restore it (git checkout) or update STATIC_SHA256 "
                             "in router_ml/learn/training.py on purpose")
    parts = {"vectors": np.load(io.BytesIO(data["vectors.npy"]), allow_pickle=False),
             "tokenizer": data["tokenizer.json"].decode("utf-8")}
    spec = {"kind": "static", "name": STATIC_NAME, "dim": 64, "normalize": True}
    return StaticEncoder.from_parts(spec, parts)


ESTIMATORS = ("heads", "difficulty")


def static_encoder(pca_dims: int = 64, quantize_to: str = "int8"):
    """The static embedding distilled from all-MiniLM-L6-v2. The default, 64 dimensions in
    int8 (a saved router under 3 MB), is read from its committed files
    (:func:`committed_static_encoder`), so training gives the same router on any machine; other
    sizes (``static256``: 256 in float16, 15.6 MB) are distilled once (about 30 s here; needs
    torch) and cached on disk, and always read back from the cache, so a cold and a warm run
    build the same router."""
    from router_ml.core.static import StaticEncoder
    from router_ml.core.transformer import default_cache_dir

    name = f"m2v-all-MiniLM-L6-v2-{pca_dims}" + ("" if quantize_to == "float16" else f"-{quantize_to}")
    if name == STATIC_NAME and STATIC_DIR.is_dir():
        return committed_static_encoder()
    path = default_cache_dir() / name
    if not (path / "model.safetensors").exists():
        if name == STATIC_NAME:
            logger.warning("%s is missing (an installed package, not a checkout): distilling "
                           "the static embedding here, whose vectors can differ from the "
                           "committed ones by CPU", STATIC_DIR)
        logger.info("distilling a static embedding from all-MiniLM-L6-v2 (once)")
        path.parent.mkdir(parents=True, exist_ok=True)
        StaticEncoder.distill("all-MiniLM-L6-v2", pca_dims=pca_dims, save_to=path,
                              quantize_to=quantize_to)
    return StaticEncoder.load(path, name=name)


def build_encoder(spec: str):
    """The encoder for a spec of parts joined by ``+`` (see :class:`TrainConfig`); several
    parts make a scikit-learn ``FeatureUnion`` (loaded back as its numpy-only equivalent,
    :class:`router_ml.core.features.ConcatEncoder`)."""
    from router_ml.core.encoders import SURFACE_STATS, StatsEncoder, TfidfEncoder
    from router_ml.core.transformer import SentenceTransformerEncoder

    makers = {"tfidf": TfidfEncoder, "stats": StatsEncoder,
              "surface": lambda: StatsEncoder(SURFACE_STATS),
              "length": lambda: StatsEncoder(("log_chars",)), "static": static_encoder,
              "static256": lambda: static_encoder(256, "float16"),
              "minilm": SentenceTransformerEncoder}
    names = spec.split("+")
    for n in names:
        if n not in makers:
            raise ValueError(f"encoder parts must be from {', '.join(makers)} joined by '+', "
                             f"got {spec!r}")
    if len(set(names)) < len(names):
        raise ValueError(f"encoder parts must be distinct, got {spec!r}")
    if len(names) == 1:
        return makers[names[0]]()
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion([(n, makers[n]()) for n in names])


def build_estimator(config: TrainConfig, C: float | None = None):
    from router_ml.learn.estimator import QualityEstimator

    if config.target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {config.target!r}")
    return QualityEstimator(target=config.target, C=C or config.C or 1.0,
                            classifier=_classifier(config), random_state=config.random_state)


def _classifier(config: TrainConfig):
    if config.classifier in ("logreg", "auto"):
        return None  # QualityEstimator's own logistic heads
    if config.classifier == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=config.k, weights="distance", metric="cosine")
    if config.classifier == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, early_stopping=True,
                             random_state=config.random_state, max_iter=200)
    if config.classifier == "hgb":
        if "tfidf" in config.encoder.split("+"):
            raise ValueError("classifier 'hgb' needs dense features; use it with stats, static "
                             f"or minilm, not tfidf (encoder {config.encoder!r})")
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                              l2_regularization=1.0, early_stopping=False,
                                              random_state=config.random_state)
    raise ValueError(f"classifier must be one of {CLASSIFIER_CHOICES}, got {config.classifier!r}")


def build_router(config: TrainConfig, models, prices=None) -> Router:
    """An unfitted router for a configuration."""
    return Router(build_encoder(config.encoder), build_estimator(config), models=list(models),
                  prices=prices)


def _folds(config: TrainConfig):
    from sklearn.model_selection import KFold

    return KFold(config.cv_folds, shuffle=True, random_state=config.random_state)


def _choose_heads(config: TrainConfig, X, train: Rows, costs) -> dict:
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

    splits = {"folds": (_folds(config), {}),
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
        grid.append({"classifier": [_classifier(knn)]})
    if sum(len(v) for g in grid for v in g.values()) < 2:
        return {}
    scores, errors = [], []  # per way: each candidate's mean held-out score, its standard error
    with config_context(enable_metadata_routing=True), threadpool_limits(1):
        scorer = make_scorer(_routing_score, response_method="decision_function")
        if costs is not None:
            scorer = scorer.set_score_request(costs=True)
        for way in ways:
            cv, meta = splits[way]
            search = GridSearchCV(build_estimator(config), grid, scoring=scorer, cv=cv,
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


def _heads_name(classifier) -> str:
    name = type(classifier).__name__
    return "logistic" if classifier is None else {"KNeighborsClassifier": "kNN"}.get(name, name)


def _describe(params: dict) -> str:
    clf = params.get("classifier")
    k = f" (k={clf.n_neighbors})" if hasattr(clf, "n_neighbors") else ""
    return _heads_name(clf) + k + (f", C={params['C']}" if "C" in params else "")


def _routing_score(Y, V, costs=None, rule: str = "gain") -> float:
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


def _signal_check(Y, V, costs, value: float, n_boot: int = 100, seed: int = 0,
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
        v = _routing_score(Y[idx], V[idx], None if C is None else C[idx], rule)
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
    splits = (_folds(config).split(X) if by == "folds" else
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


def _outcome_table(train: Rows, outcomes: Rows | None) -> tuple[Rows, list[int]]:
    """Every outcome the difficulty estimator learns from: the training rows first (their
    columns filled from an outcome row of the same source and prompt, which holds every
    model), then the other outcome rows; and the candidates' columns in it."""
    from router_ml.learn.labels import union

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


def _fit_difficulty(router: Router, train: Rows, config: TrainConfig, outcomes):
    """Fit ``router``'s encoder and a DifficultyEstimator on every outcome; return the
    training rows' features and out-of-fold predicted qualities (n, m) of the candidates."""
    from router_ml.core.prompts import fingerprint
    from router_ml.learn.difficulty import DifficultyEstimator

    table, cols = _outcome_table(train, outcomes)
    X_all = router.encoder.fit_transform(table.prompts)
    X_all = X_all.toarray() if hasattr(X_all, "toarray") else np.asarray(X_all)
    est = DifficultyEstimator(columns=cols, random_state=config.random_state)
    oof = np.empty((len(train), len(cols)))
    for tr, te in _folds(config).split(X_all):
        fold = DifficultyEstimator(columns=cols, random_state=config.random_state)
        fold.fit(X_all[tr], table.quality[tr], source=table.sources[tr])
        te = te[te < len(train)]
        oof[te] = fold.predict(X_all[te])
    router.estimator = est.fit(X_all, table.quality, source=table.sources)
    router.score_rule = "weak"
    router.fitted_ = True
    router.length_prior = None
    router.training = {"n": len(train), "n_outcomes": len(table),
                       "outcome_models": len(table.models), "alpha": est.alpha_,
                       "fingerprint": fingerprint(table.prompts,
                                                  np.nan_to_num(table.quality, nan=-1))}
    return X_all[:len(train)], oof


def fit_router(train: Rows, config: TrainConfig, prices=None, outcomes: Rows | None = None
               ) -> Router:
    """Fit a router on ``train`` and calibrate its knob on out-of-fold predictions.

    The encoder is fitted on all training prompts (it sees no labels). C is chosen from
    ``C_GRID`` (logistic heads, ``C=None``; with ``auto`` and more models, kNN heads too) by
    :func:`_choose_heads` (GridSearchCV over
    ``cv_folds`` folds, scored by routing quality: APGR for two models, AIQ for more). With
    that C the rows get out-of-fold decision values (every row predicted by a model that did
    not see it), which calibrate the threshold (two models) or ``lam`` (more models, with
    costs from ``train.costs`` where the rows carry them, else from ``prices``); the router
    is then refitted on all rows with that C and keeps that knob. With ``config.estimator ==
    "difficulty"`` a :class:`~router_ml.learn.difficulty.DifficultyEstimator` learns from the
    training rows and every model's ``outcomes`` (rows of other sources and models, e.g.
    :func:`router_ml.learn.protocols.outcome_rows`), with out-of-fold predictions the same way.
    """
    from router_ml.core.calibration import calibrate, lam_for_target
    from router_ml.core.prompts import fingerprint

    if len(train) < 20:
        raise ValueError(f"training needs at least 20 labelled rows, got {len(train)}")
    if config.prior_select_by not in SELECT_BY:
        raise ValueError(f"prior_select_by must be one of {', '.join(map(repr, SELECT_BY))}, "
                         f"got {config.prior_select_by!r}")
    if config.estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {config.estimator!r}")
    router = build_router(config, train.models, prices)
    pair = len(train.models) == 2
    difficulty = config.estimator == "difficulty"
    if difficulty and config.prior_select_by != "folds":
        raise ValueError("prior_select_by applies to heads; the difficulty estimator's prior "
                         "is chosen on shuffled folds")
    from router_ml.core.prices import row_costs

    tokenizer = None
    if config.tokenizer is not None:
        from router_ml.core.prices import load_tokenizer

        tokenizer = load_tokenizer(config.tokenizer)
    costs = None if pair else row_costs(train.prompts, train.models, train.costs, prices,
                                        tokenizer=tokenizer)
    rule = "weak" if difficulty else "gain"
    if difficulty:
        X, oof = _fit_difficulty(router, train, config, outcomes)
    else:
        X = router.encoder.fit_transform(train.prompts)
        router.estimator = build_estimator(config).set_params(
            **_choose_heads(config, X, train, costs))
        oof = out_of_fold(router.estimator, X, train, config)  # fits clones
    cv_quality = _routing_score(train.quality, oof, costs, rule)
    signal = _signal_check(train.quality, oof, costs, cv_quality, seed=config.random_state,
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
    router.tokenizer = tokenizer
    if difficulty:
        C = None
    else:
        C = router.estimator.C if router.estimator.classifier is None else None
        router.fit(train.prompts, train.quality, features=X)
    if config.coverage is not None:
        from router_ml.core.coverage import Coverage

        router.coverage = Coverage.fit(X, level=config.coverage, random_state=config.random_state)
        router.fallback = config.fallback
    fp = fingerprint(train.prompts)
    info = {"config": config.to_dict(), "C": C,
            "heads": ("difficulty" if difficulty else _heads_name(router.estimator.classifier)),
            "sources": sorted(set(train.sources) | (set(outcomes.sources) if difficulty
                                                    and outcomes is not None else set())),
            "cv_apgr" if pair else "cv_aiq": None if not np.isfinite(cv_quality) else cv_quality,
            "cv_signal": signal}
    if pair:
        qs, qw = train.q_strong, train.q_weak
        score = pair_score(oof, rule)
        if config.length_prior:
            from router_ml.core.prior import LengthPrior

            lengths = [len(p) for p in train.prompts]
            held_out, by = None, config.prior_select_by
            if by != "folds" and len(set(train.sources)) > 1:
                oos = out_of_fold(router.estimator, X, train, config, by="sources")
                held_out = (pair_score(oos, rule), train.sources)
            prior = LengthPrior.fit(score, lengths, qs, qw, held_out=held_out,
                                    folds=by != "sources")
            info["length_prior_weight"], info["cv_apgr_with_prior"] = prior.weight, prior.apgr_
            # kept at weight 0 too: the score is then the plain score's share of the training
            # rows, the same order on a scale that routers trained on other rows share
            router.length_prior = prior
            score = prior.apply(score, lengths)
        guarantee = config.delta is not None
        t, record = calibrate(score, share=config.share, q_strong=qs, q_weak=qw,
                              min_pgr=None if config.share is not None or guarantee
                              else config.min_pgr,
                              max_drop=config.max_drop if guarantee else None,
                              delta=config.delta, n=len(train), fingerprint=fp)
        router.set_threshold(t, record)
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
        router.set_lam(lam, record)
    router.training.update(info)
    return router


# The default router's recipe (train.py without --table; make bench-quality's "default"): the
# difficulty estimator on the static embedding, learned from every model's outcomes
DEFAULT_ROUTER = TrainConfig(estimator="difficulty", encoder="static", length_prior=False,
                             outcomes=("mmlu", "gsm8k", "arena-hard", "dcrouter", "arena-rated"))

