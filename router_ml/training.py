"""Training a router from labelled pairs: the configuration and the fit-then-calibrate recipe."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from router_ml.labels import PairData, make_labels
from router_ml.protocols import fold
from router_ml.router import Router

logger = logging.getLogger(__name__)

ENCODER_CHOICES = ("tfidf", "static", "minilm", "tfidf+static")
CLASSIFIER_CHOICES = ("logreg", "knn", "mlp")


@dataclass
class TrainConfig:
    """How to train a router.

    encoder: ``tfidf`` (word 1-2-grams), ``static`` (model2vec embedding distilled from
    all-MiniLM-L6-v2), ``minilm`` (the transformer itself; slow, needs torch at run time) or
    ``tfidf+static``. classifier: ``logreg`` (C), ``knn`` (k neighbours) or ``mlp``.
    label: ``gain``, ``strong_better`` or ``graded`` (see :func:`router_ml.labels.make_labels`).
    Threshold: calibrated on a held-out 20 % of the training rows to ``min_pgr`` (share of
    the strong model's quality gain to keep), or to a strong-call ``share`` if given; the
    router is then refitted on all rows with that threshold.
    """

    encoder: str = "tfidf"
    classifier: str = "logreg"
    C: float = 1.0
    k: int = 100
    label: str = "gain"
    min_pgr: float | None = 0.8
    share: float | None = None
    static_weight: float = 1.0
    random_state: int = 0
    extra: tuple = ()
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["extra"] = list(self.extra)
        return d


def static_encoder():
    """The static embedding distilled from all-MiniLM-L6-v2, cached on disk after the first
    distillation (about a minute; needs torch once)."""
    from router_ml.encoders import StaticEncoder, default_cache_dir

    path = default_cache_dir() / "m2v-all-MiniLM-L6-v2-256"
    if (path / "model.safetensors").exists():
        return StaticEncoder.load(path, name="m2v-all-MiniLM-L6-v2-256")
    logger.info("distilling a static embedding from all-MiniLM-L6-v2 (once, about a minute)")
    enc = StaticEncoder.distill("all-MiniLM-L6-v2", pca_dims=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    enc.model_.save_pretrained(str(path))
    return enc


def build_router(config: TrainConfig, strong_model: str, weak_model: str) -> Router:
    """An unfitted router for a configuration."""
    from router_ml.encoders import ConcatEncoder, SentenceTransformerEncoder, TfidfEncoder

    if config.encoder == "tfidf":
        enc = TfidfEncoder()
    elif config.encoder == "static":
        enc = static_encoder()
    elif config.encoder == "minilm":
        enc = SentenceTransformerEncoder()
    elif config.encoder == "tfidf+static":
        enc = ConcatEncoder([TfidfEncoder(), static_encoder()], weights=[1.0, config.static_weight])
    else:
        raise ValueError(f"encoder must be one of {ENCODER_CHOICES}, got {config.encoder!r}")
    if config.classifier == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=config.C, max_iter=3000, random_state=config.random_state)
    elif config.classifier == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        clf = KNeighborsClassifier(n_neighbors=config.k, weights="distance", metric="cosine")
    elif config.classifier == "mlp":
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, early_stopping=True,
                            random_state=config.random_state, max_iter=200)
    else:
        raise ValueError(f"classifier must be one of {CLASSIFIER_CHOICES}, got {config.classifier!r}")
    return Router(enc, clf, strong_model=strong_model, weak_model=weak_model,
                  random_state=config.random_state)


def fit_router(train: PairData, config: TrainConfig, strong_model: str, weak_model: str) -> Router:
    """Fit a router on ``train`` and calibrate its threshold on a held-out part of it.

    The calibration rows are those with fold(prompt) == 0 (20 %, the same hash rule as the
    protocols); the threshold chosen there is kept when the router is refitted on all rows.
    """
    if len(train) < 10:
        raise ValueError(f"training needs at least 10 labelled rows, got {len(train)}")
    y, w = make_labels(train.q_strong, train.q_weak, config.label)
    weights = w if config.label == "graded" else None
    cal = np.array([fold(p) == 0 for p in train.prompts])
    if 0 < cal.sum() < len(cal) and 1 in y[~cal] and len(np.unique(y[~cal])) >= 2:
        probe = build_router(config, strong_model, weak_model)
        probe.fit([p for p, c in zip(train.prompts, cal) if not c], y[~cal],
                  None if weights is None else weights[~cal])
        cal_rows = train.subset(cal)
        if config.share is not None:
            record = probe.calibrate(cal_rows.prompts, share=config.share)
        else:
            record = probe.calibrate(cal_rows.prompts, q_strong=cal_rows.q_strong,
                                     q_weak=cal_rows.q_weak, min_pgr=config.min_pgr)
        threshold = probe.threshold
    else:
        record, threshold = None, 0.5
        logger.warning("too few rows to hold out a calibration set; threshold left at 0.5")
    router = build_router(config, strong_model, weak_model)
    router.fit(train.prompts, y, weights)
    if record is not None:
        router.set_threshold(threshold, record)
    router.training.update({"config": config.to_dict(), "sources": sorted(set(train.sources))})
    return router
