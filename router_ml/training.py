"""Training a router from labelled pairs: the configuration and the fit-then-calibrate recipe."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from router_ml.labels import PairData, make_labels
from router_ml.router import Router

logger = logging.getLogger(__name__)

ENCODER_PARTS = ("tfidf", "stats", "static", "minilm")
CLASSIFIER_CHOICES = ("logreg", "knn", "mlp", "hgb")
C_GRID = (0.03, 0.1, 0.3)


@dataclass
class TrainConfig:
    """How to train a router.

    encoder: parts joined by ``+``, each one of ``tfidf`` (word 1-2-grams), ``stats`` (28
    prompt statistics, the default: see :func:`router_ml.encoders.prompt_stats`), ``static``
    (model2vec embedding distilled from all-MiniLM-L6-v2) and ``minilm`` (the transformer
    itself; slow, needs torch at run time).
    classifier: ``logreg`` (inverse regularisation C; None chooses it from C_GRID by
    cross-validation inside the training rows), ``knn`` (k neighbours), ``mlp`` or ``hgb``
    (histogram gradient boosting; suits the dense ``stats`` features).
    label: ``gain``, ``strong_better`` or ``graded`` (see :func:`router_ml.labels.make_labels`).
    extra: sources whose rows of the pair are added to the training rows (rows that match a
    protocol's test question are dropped). The default adds arena-hard-v1's 293 chat prompts:
    open-ended prompts teach what MMLU's multiple-choice rows cannot (``make bench-quality``:
    +0.037 APGR on mmlu-to-gsm8k, no significant change elsewhere).
    n_jobs: parallel cross-validation fits (joblib; None = one, -1 = every core).
    Threshold: calibrated on out-of-fold scores of the training rows to ``min_pgr`` (the share
    of the strong model's quality gain to keep), or to a strong-call ``share`` if given.
    """

    encoder: str = "stats"
    classifier: str = "logreg"
    C: float | None = None
    cv_folds: int = 3
    n_jobs: int | None = None
    k: int = 100
    label: str = "gain"
    min_pgr: float | None = 0.8
    share: float | None = None
    random_state: int = 0
    extra: tuple = ("arena-hard",)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["extra"] = list(self.extra)
        d.pop("n_jobs")  # how fast, not what: the result does not depend on it
        return d


def static_encoder():
    """The static embedding distilled from all-MiniLM-L6-v2, cached on disk after the first
    distillation (about 11 s here; needs torch once). Always read back from the cache, so a
    cold and a warm run build the same router."""
    from router_ml.encoders import StaticEncoder, default_cache_dir

    name = "m2v-all-MiniLM-L6-v2-256"
    path = default_cache_dir() / name
    if not (path / "model.safetensors").exists():
        logger.info("distilling a static embedding from all-MiniLM-L6-v2 (once)")
        path.parent.mkdir(parents=True, exist_ok=True)
        StaticEncoder.distill("all-MiniLM-L6-v2", pca_dims=256, save_to=path)
    return StaticEncoder.load(path, name=name)


def build_router(config: TrainConfig, strong_model: str, weak_model: str) -> Router:
    """An unfitted router for a configuration."""
    from router_ml.encoders import (
        ConcatEncoder,
        SentenceTransformerEncoder,
        StatsEncoder,
        TfidfEncoder,
    )

    makers = {"tfidf": TfidfEncoder, "stats": StatsEncoder, "static": static_encoder,
              "minilm": SentenceTransformerEncoder}
    names = config.encoder.split("+")
    for n in names:
        if n not in makers:
            raise ValueError(f"encoder parts must be from {', '.join(makers)} joined by '+', "
                             f"got {config.encoder!r}")
    if config.classifier == "hgb" and "tfidf" in names:
        raise ValueError("classifier 'hgb' needs dense features; use it with stats, static or "
                         f"minilm, not tfidf (encoder {config.encoder!r})")
    encs = [makers[n]() for n in names]
    enc = encs[0] if len(encs) == 1 else ConcatEncoder(encs)
    clf = _classifier(config)
    return Router(enc, clf, strong_model=strong_model, weak_model=weak_model,
                  random_state=config.random_state)


def _classifier(config: TrainConfig, C: float | None = None):
    if config.classifier == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C if C is not None else (config.C or 1.0), max_iter=3000,
                                  random_state=config.random_state)
    if config.classifier == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=config.k, weights="distance", metric="cosine")
    if config.classifier == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, early_stopping=True,
                             random_state=config.random_state, max_iter=200)
    if config.classifier == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                              l2_regularization=1.0, early_stopping=False,
                                              random_state=config.random_state)
    raise ValueError(f"classifier must be one of {CLASSIFIER_CHOICES}, got {config.classifier!r}")


def fit_router(train: PairData, config: TrainConfig, strong_model: str, weak_model: str) -> Router:
    """Fit a router on ``train``: choose C and the threshold by cross-validation, then refit.

    The encoder is fitted on all training prompts (it sees no labels). The classifier is
    cross-validated (``cv_folds`` stratified folds) for each C in ``C_GRID`` (logreg with
    ``C=None``) and the C with the best out-of-fold APGR is kept. The threshold is calibrated on
    those out-of-fold scores (every training row scored by a model that did not see it) to
    ``min_pgr`` or ``share``, and kept when the router is refitted on all rows.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    from router_ml.calibration import calibrate
    from router_ml.data import fingerprint
    from router_ml.evaluation import apgr
    from router_ml.router import proba_to_score

    y, w = make_labels(train.q_strong, train.q_weak, config.label)
    weights = w if config.label == "graded" else None
    _, counts = np.unique(y, return_counts=True)
    if len(train) < 20 or counts.min() < config.cv_folds:
        raise ValueError(f"training needs at least 20 labelled rows and {config.cv_folds} of each "
                         f"outcome, got {len(train)} rows with outcome counts {counts.tolist()}")
    router = build_router(config, strong_model, weak_model)
    X = router.encoder.fit_encode(train.prompts)
    cv = StratifiedKFold(config.cv_folds, shuffle=True, random_state=config.random_state)
    grid = C_GRID if config.classifier == "logreg" and config.C is None else (config.C,)
    best = None
    for C in grid:
        # One BLAS thread per fit, as in joblib's workers: the out-of-fold scores, hence C
        # and the threshold, are then the same bit for bit whatever n_jobs is.
        with threadpool_limits(1):
            proba = cross_val_predict(_classifier(config, C), X, y, cv=cv,
                                      method="predict_proba", n_jobs=config.n_jobs,
                                      params=None if weights is None else {"sample_weight": weights})
        oof = proba_to_score(proba, np.unique(y))
        try:
            a = apgr(oof, train.q_strong, train.q_weak)
        except ValueError:  # equal mean quality: APGR undefined, keep the first C
            a = float("-inf")
        logger.info("C=%s: out-of-fold APGR %.4f", C, a)
        if best is None or a > best[0]:
            best = (a, C, oof)
    cv_apgr, C, oof = best
    router.classifier = _classifier(config, C)
    router.fit(train.prompts, y, weights, features=X)
    t, record = calibrate(oof, share=config.share, q_strong=train.q_strong, q_weak=train.q_weak,
                          min_pgr=None if config.share is not None else config.min_pgr,
                          n=len(train), fingerprint=fingerprint(train.prompts))
    router.set_threshold(t, record)
    router.training.update({"config": config.to_dict(), "C": C, "cv_apgr": cv_apgr,
                            "sources": sorted(set(train.sources))})
    return router
