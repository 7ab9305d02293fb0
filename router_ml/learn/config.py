"""How to train a router: :class:`TrainConfig`, the default router's recipe
(:data:`DEFAULT_ROUTER`), and the encoder, estimator and router a configuration builds
(the default's static embedding is an input, committed and checked by sha256).
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from router_ml.learn.rows import TARGETS

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
    them that describe any prompt, not a multiple-choice layout), ``length`` (log characters
    alone), ``static`` (model2vec
    embedding distilled from all-MiniLM-L6-v2, 64 dimensions in int8; ``static256``: 256 in
    float16) and ``minilm`` (the transformer itself; slow,
    needs torch at run time).
    classifier: the heads of the :class:`~router_ml.learn.estimator.QualityEstimator`: ``auto``
    (two models: ``logreg``; more: ``logreg`` or ``knn``, whichever routes the held-out
    folds best), ``logreg``
    (C chosen per head from ``C_GRID`` by cross-validation, or fixed by ``C``), ``knn`` (k
    neighbours), ``mlp`` or ``hgb`` (histogram gradient boosting; dense features only).
    neighbours: logistic heads are averaged, half and half, with the mean label of this many
    nearest training rows (:class:`router_ml.core.heads.Neighbours`, numpy alone; 0: the
    logistic heads alone; None: 100 for a pair with dense features, else 0). It applies to
    the heads (estimator ``heads``, and the heads from scratch the warm start compares itself
    with).
    target: ``gain`` (the first model is the reference: for a pair, the strong one) or
    ``quality`` (see :mod:`router_ml.learn.estimator`).
    extra: sources whose rows of the same models are added to the training rows (rows that
    match a protocol's test question are dropped); default: arena-hard-v1's chat prompts.
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
    over the wider ``C_GRID_SOURCES``) or ``both`` (the mean of the two scores; the default);
    folds when the rows come from one source. The knob is calibrated on shuffled folds.
    length_prior: two models: blend the learned score with the prompt's length, with the
    weight (0 to 0.5) that routes the out-of-fold predictions best (:mod:`router_ml.core.prior`;
    at weight 0 the score is the plain score's share of the training rows, in the same
    order).
    prior_weight: with ``length_prior``, a fixed weight in [0, 1] instead of the one chosen
    (None: chosen from :data:`router_ml.core.prior.WEIGHTS`; the default router fixes 0.25).
    prior_select_by: how the prior's weight is chosen, as ``select_by`` chooses C: ``folds``
    (the default) or with rows from several sources ``sources`` or ``both``, where each source
    is also predicted by a model fitted without it (for the difficulty estimator: without
    that source's outcomes and any outcome row of its prompts).
    n_jobs: parallel cross-validation fits (joblib; None = one, -1 = every core).
    estimator: ``heads`` (the :class:`~router_ml.learn.estimator.QualityEstimator`'s heads on
    the training rows: ``target``, ``classifier``, ``C``, ``select_by`` apply) or
    ``difficulty`` (:class:`~router_ml.learn.difficulty.DifficultyEstimator`: one difficulty
    shared by every model, learned from every model's outcomes on the training rows and on
    the ``outcomes`` sources; a pair's score is then 1 - q_weak, see
    :func:`router_ml.core.router.pair_score`; the default router, :data:`DEFAULT_ROUTER`).
    ``warm``
    (:class:`~router_ml.learn.warm.WarmStartEstimator`): the default's difficulty and
    abilities, learned from the ``outcomes`` sources, corrected by the training rows (a team's
    own logs train it by default).
    outcomes: with ``difficulty``, the sources whose every model's outcomes it learns from as
    well (:data:`router_ml.learn.protocols.OUTCOME_SOURCES`; a protocol drops the rows that
    match its test questions).
    rank: with ``difficulty``, the rank of a low-rank model x prompt term beside the shared
    difficulty (0: none; :class:`~router_ml.learn.difficulty.DifficultyEstimator`'s ``rank``).

    Which choices won on which evidence, with the numbers: docs/quality.md.
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
    prior_weight: float | None = None
    prior_select_by: str = "folds"
    estimator: str = "heads"
    outcomes: tuple = ()
    rank: int = 0
    neighbours: int | None = None

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
                             "in router_ml/learn/config.py on purpose")
    parts = {"vectors": np.load(io.BytesIO(data["vectors.npy"]), allow_pickle=False),
             "tokenizer": data["tokenizer.json"].decode("utf-8")}
    spec = {"kind": "static", "name": STATIC_NAME, "dim": 64, "normalize": True}
    return StaticEncoder.from_parts(spec, parts)


ESTIMATORS = ("heads", "difficulty", "warm")


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


def build_estimator(config: TrainConfig, C: float | None = None, n_models: int = 2):
    from router_ml.learn.estimator import QualityEstimator

    if config.target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {config.target!r}")
    classifier = build_classifier(config)
    return QualityEstimator(target=config.target, C=C or config.C or 1.0, classifier=classifier,
                            random_state=config.random_state,
                            neighbours=(0 if classifier is not None
                                        else neighbours_of(config, n_models)))


# how many nearest training rows the logistic heads are averaged with by default
NEIGHBOURS = 100


def neighbours_of(config: TrainConfig, n_models: int = 2) -> int:
    """The logistic heads' neighbours: ``config.neighbours``, or by default NEIGHBOURS for a
    pair with dense features; 0 with a TF-IDF part (its training rows would be kept dense) or
    more than two models (where ``auto`` weighs logistic against kNN heads instead: dcrouter's
    AIQ fell from 0.596 to 0.564 with the neighbours, docs/quality.md)."""
    if config.neighbours is not None:
        return config.neighbours
    return 0 if "tfidf" in config.encoder.split("+") or n_models > 2 else NEIGHBOURS


def build_classifier(config: TrainConfig):
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


def build_router(config: TrainConfig, models, prices=None):
    """An unfitted router (a :class:`~router_ml.learn.spec.RouterSpec`) for a configuration."""
    from router_ml.learn.spec import RouterSpec

    return RouterSpec(build_encoder(config.encoder), build_estimator(config, n_models=len(models)),
                      models=list(models), prices=prices)


# The default router's recipe (train.py without --table; make bench-quality's "default"): the
# difficulty estimator on the static embedding, learned from every model's outcomes on MMLU,
# GSM8K and arena-hard-v1, with the length prior at a fixed weight 0.25. Chosen by the
# zero-shot score of make bench-quality (real chat half, left-out sources and the textbook
# prompts a quarter each; docs/quality.md): dcrouter's outcomes and a prior weight chosen on
# the pooled rows (0.5, where length routes MMLU and GSM8K unusually well) ranked real chat
# and everyday prompts worse.
DEFAULT_ROUTER = TrainConfig(estimator="difficulty", encoder="static", length_prior=True,
                             prior_weight=0.25, outcomes=("mmlu", "gsm8k", "arena-hard"))
