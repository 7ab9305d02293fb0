"""Router: fit, score, route, calibrate, save and load on a synthetic set with a planted signal."""

import numpy as np
import pytest

from router_ml import Router, RoutingDecision, load_router
from router_ml.encoders import TfidfEncoder
from router_ml.evaluation import apgr
from router_ml.labels import PairData
from router_ml.protocols import _with_extra


def planted(n=400, seed=0):
    """Prompts that mention a proof need the strong model; small talk does not."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n) < 0.4
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    prompts = []
    for i, h in enumerate(hard):
        filler = " ".join(rng.choice(words, 5))
        prompts.append(f"prove the theorem about {filler} {i}" if h else f"say hello about {filler} {i}")
    q_strong = np.where(hard, 1.0, 1.0)
    q_weak = np.where(hard, rng.random(n) < 0.2, rng.random(n) < 0.95).astype(float)
    return prompts, q_strong, q_weak


@pytest.fixture(scope="module")
def fitted():
    prompts, qs, qw = planted()
    y = (qs > qw).astype(int)
    return Router(TfidfEncoder(min_df=1)).fit(prompts, y), prompts, qs, qw


def test_learns_planted_signal(fitted):
    router, *_ = fitted
    prompts, qs, qw = planted(200, seed=1)
    s = router.score(prompts)
    assert s.dtype == np.float64 and s.shape == (200,)
    assert ((s >= 0) & (s <= 1)).all()
    knows_hard = np.array([p.startswith("prove") for p in prompts], dtype=float)
    assert apgr(s, qs, qw) >= apgr(knows_hard, qs, qw) - 0.03 > 0.6


def test_route_and_batch(fitted):
    router, *_ = fitted
    router.threshold = 0.5
    d = router.route("prove the theorem about omega")
    assert isinstance(d, RoutingDecision) and d.model == router.strong_model and d.strong
    assert d.threshold == 0.5
    batch = router.route_batch(["say hello about beta", "prove the theorem about beta"])
    assert [x.model for x in batch] == [router.weak_model, router.strong_model]
    assert router.score([]).shape == (0,)


def test_calibrate_share_and_quality(fitted):
    router, prompts, qs, qw = fitted
    rec = router.calibrate(prompts, share=0.4)
    routed = (router.score(prompts) >= router.threshold).mean()
    assert rec.method == "share" and abs(routed - 0.4) < 0.05
    assert rec.achieved["share"] == pytest.approx(routed)
    rec = router.calibrate(prompts, q_strong=qs, q_weak=qw, max_drop=0.02)
    routed = router.score(prompts) >= router.threshold
    quality = np.where(routed, qs, qw).mean()
    assert qs.mean() - quality <= 0.02 + 1e-12
    assert rec.achieved["quality"] == pytest.approx(quality)
    assert rec.target == {"max_drop": 0.02}


def test_save_load_round_trip(fitted, tmp_path):
    router, prompts, qs, qw = fitted
    router.calibrate(prompts, q_strong=qs, q_weak=qw, min_pgr=0.9)
    router.save(tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    np.testing.assert_array_equal(loaded.score(prompts), router.score(prompts))
    assert loaded.threshold == router.threshold
    assert loaded.calibration == router.calibration
    assert (loaded.strong_model, loaded.weak_model) == (router.strong_model, router.weak_model)
    m = loaded.manifest
    assert m["format_version"] == 1 and "scikit-learn" in m["versions"]
    assert set(m["files"]) == {p.name for p in (tmp_path / "r").iterdir()} - {"manifest.json"}
    # saving again over it works and changes the threshold atomically
    loaded.threshold = 0.25
    loaded.save(tmp_path / "r")
    assert load_router(tmp_path / "r").threshold == 0.25
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary directory left


def test_fit_errors():
    with pytest.raises(ValueError, match="one class only"):
        Router().fit(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="zero prompts"):
        Router().fit([], [])
    with pytest.raises(ValueError, match="must differ"):
        Router(strong_model="x", weak_model="x")
    with pytest.raises(RuntimeError, match="not fitted"):
        Router().score(["a"])


def test_extra_rows_matching_a_test_question_are_dropped():
    def rows(prompts):
        n = len(prompts)
        return PairData(list(prompts), np.ones(n), np.zeros(n), np.array(["g"] * n, dtype=object),
                        np.array(["s"] * n, dtype=object))

    test = rows(["What is the capital of France, the country in western Europe?\nA. Paris\nB. Rome\nAnswer:"])
    train = rows(["Some other training question about rivers and mountains in Asia?"])
    extra = rows(["what is the capital of FRANCE, the country in western europe?",
                  "A different question about the capital of Spain and its rivers?"])
    merged, dropped = _with_extra(train, test, [extra])
    assert dropped == 1 and len(merged) == 2
    assert "the capital of Spain" in merged.prompts[1]


@pytest.mark.parametrize("classifier", ["logreg", "knn", "mlp", "hgb"])
@pytest.mark.parametrize("label", ["gain", "strong_better"])
def test_every_classifier_learns_saves_and_reloads(classifier, label, tmp_path):
    from router_ml.training import CLASSIFIER_CHOICES, TrainConfig, fit_router

    assert classifier in CLASSIFIER_CHOICES
    prompts, qs, qw = planted(300)
    # the weak model is sometimes better: three gain classes
    qw = np.where(np.arange(300) % 17 == 0, 1.0, qw)
    qs = np.where(np.arange(300) % 17 == 0, 0.0, qs)
    train = PairData(prompts=prompts, q_strong=qs, q_weak=qw, groups=["g"] * 300,
                     sources=["s"] * 300)
    # mlp and hgb get the dense statistics (hgb refuses sparse TF-IDF; mlp's early stopping
    # gives up on 300 TF-IDF rows); kNN keeps the sparse matrix in its saved file
    encoder = "stats" if classifier in ("mlp", "hgb") else "tfidf"
    config = TrainConfig(encoder=encoder, classifier=classifier, label=label, C=1.0, k=10)
    router = fit_router(train, config, "strong", "weak")
    router.save(tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    test_prompts, tqs, tqw = planted(200, seed=1)
    np.testing.assert_array_equal(loaded.score(test_prompts), router.score(test_prompts))
    assert apgr(loaded.score(test_prompts), tqs, tqw) > 0.6


def test_boosting_on_sparse_tfidf_is_a_clear_error():
    from router_ml.training import TrainConfig, build_router

    with pytest.raises(ValueError, match="'hgb' needs dense features.*not tfidf"):
        build_router(TrainConfig(encoder="tfidf+stats", classifier="hgb"), "a", "b")


def test_sentence_transformer_cache_is_used_without_the_model(tmp_path, monkeypatch, caplog):
    """Cached texts never load the model; a corrupt entry or one of another width is recomputed."""
    from router_ml.encoders import EmbeddingCache, SentenceTransformerEncoder, text_hash, clean

    enc = SentenceTransformerEncoder(cache_dir=tmp_path)
    texts = ["first prompt", "second prompt", "third prompt"]
    cached = np.arange(12, dtype=np.float32).reshape(3, 4)
    EmbeddingCache(tmp_path).put_many(enc.spec(), [clean(t) for t in texts], cached)
    monkeypatch.setattr(enc, "_load", lambda: pytest.fail("the model was loaded"))
    np.testing.assert_array_equal(enc.encode(texts), cached)

    computed = []

    def compute(batch):
        computed.append(list(batch))
        return np.full((len(batch), 4), 7, dtype=np.float32)

    monkeypatch.setattr(enc, "_compute", compute)
    h = text_hash(clean(texts[1]))
    (EmbeddingCache(tmp_path)._dir(enc.spec()) / h[:2] / f"{h}.npy").write_bytes(b"not numpy")
    out = enc.encode(texts)
    assert computed == [[clean(texts[1])]] and "corrupt entry" in caplog.text
    np.testing.assert_array_equal(out, [cached[0], np.full(4, 7), cached[2]])

    computed.clear()
    EmbeddingCache(tmp_path).put_many(enc.spec(), [clean(texts[2])], np.ones((1, 3), np.float32))
    out = enc.encode(texts)  # the 3-wide entry is a miss; the 4-wide model output fits
    assert computed == [[clean(texts[2])]] and out.shape == (3, 4)

    computed.clear()
    monkeypatch.setattr(enc, "_compute", lambda b: computed.append(list(b)) or np.ones((len(b), 5), np.float32))
    out = enc.encode(texts + ["a new prompt"])  # the model now gives 5-wide vectors
    assert out.shape == (4, 5) and len(computed[-1]) == 4 and "all are recomputed" in caplog.text


def test_fit_encode_equals_fit_then_encode():
    from router_ml.encoders import ConcatEncoder, StatsEncoder

    prompts, *_ = planted(60)
    for make in (TfidfEncoder, StatsEncoder, lambda: ConcatEncoder([StatsEncoder(), TfidfEncoder()])):
        a, b = make(), make()
        dense = [m.toarray() if hasattr(m, "toarray") else m for m in (
            a.fit_encode(prompts), b.fit(prompts).encode(prompts),
            a.encode(prompts[:5]), b.encode(prompts[:5]))]
        assert all(m.dtype == np.float32 for m in dense)
        np.testing.assert_array_equal(dense[0], dense[1])
        np.testing.assert_array_equal(dense[2], dense[3])
