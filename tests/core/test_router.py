"""Router: fit, score, route, calibrate, save and load on synthetic sets with a planted signal
(a strong/weak pair, and three models each best on one kind of prompt)."""

import numpy as np
import pytest
from conftest import TIER_PRICES, TIERS, planted_tiers
from hypothesis import given, settings
from hypothesis import strategies as st

from router_ml import (
    CalibrationError,
    Router,
    RoutingDecision,
    UnknownModelError,
    load_router,
)
from router_ml.core import artifact
from router_ml.core.encoders import StatsEncoder, TfidfEncoder
from router_ml.core.metrics import apgr
from router_ml.core.prompts import prompt_text
from router_ml.core.state import RouterState
from router_ml.learn.rows import Rows
from router_ml.learn.protocols import Fold, with_extra
from router_ml.learn.spec import RouterSpec

PAIR = ["strong", "weak"]


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
    router = RouterSpec(TfidfEncoder(min_df=1), models=PAIR).fit(prompts, np.column_stack([qs, qw]))
    return router, prompts, qs, qw


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
    # gain scores: about 0.5 + 0.05 / 2 where the weak model is right 95 % of the time, about
    # 0.5 + 0.8 / 2 where it is right 20 %: 0.7 lies between
    router.threshold = 0.7
    d = router.route("prove the theorem about omega")
    assert isinstance(d, RoutingDecision) and d.model == router.strong_model and d.strong
    assert d.threshold == 0.7 and d.lam is None
    batch = router.route_batch(["say hello about beta", "prove the theorem about beta"])
    assert [x.model for x in batch] == [router.weak_model, router.strong_model]
    assert router.score([]).shape == (0,)


def test_knob_setters_and_a_pandas_series_on_a_loaded_router(fitted, tmp_path):
    """set_threshold / set_lam without a record keep a manual one; route_batch, score and
    predict_quality take a pandas Series (what mlflow hands over) like a list."""
    pd = pytest.importorskip("pandas")
    router, *_ = fitted
    router.save(tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    loaded.set_threshold(0.7)
    assert loaded.threshold == 0.7 and loaded.calibration.method == "manual"
    assert loaded.calibration.target == {"threshold": 0.7}
    loaded.set_lam(0.0)
    assert loaded.lam == 0.0 and loaded.threshold is None
    assert loaded.calibration.target == {"lam": 0.0}
    loaded.set_threshold(0.7)
    prompts = ["say hello about beta", "prove the theorem about beta"]
    series = pd.Series(prompts, index=[10, 20], name="prompt")
    assert [d.model for d in loaded.route_batch(series)] == \
        [d.model for d in loaded.route_batch(prompts)] == [loaded.weak_model, loaded.strong_model]
    np.testing.assert_array_equal(loaded.score(series), loaded.score(prompts))
    np.testing.assert_array_equal(loaded.predict_quality(series), loaded.predict_quality(prompts))
    with pytest.raises(TypeError, match="prompts must be a list of str"):
        loaded.route_batch(pd.DataFrame({"prompt": prompts}))


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
    assert m["format_version"] == artifact.FORMAT_VERSION and "scikit-learn" in m["versions"]
    assert m["models"] == PAIR and m["knob"] == {"kind": "threshold", "value": router.threshold}
    assert set(m["files"]) == {p.name for p in (tmp_path / "r").iterdir()} - {"manifest.json"}
    # saving again over it works and changes the threshold atomically
    loaded.threshold = 0.25
    loaded.save(tmp_path / "r")
    assert load_router(tmp_path / "r").threshold == 0.25
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary directory left


def test_fit_errors():
    with pytest.raises(ValueError, match="zero prompts"):
        RouterSpec(models=PAIR).fit([], np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"qualities must have shape \(2, 2\)"):
        RouterSpec(models=PAIR).fit(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match=r"hold no quality at all"):
        RouterSpec(TfidfEncoder(min_df=1), models=PAIR).fit(["aa bb", "cc dd"], [[1, np.nan], [0, np.nan]])
    with pytest.raises(ValueError, match="must be distinct; repeated: x"):
        RouterSpec(models=["x", "x"])
    with pytest.raises(ValueError, match="at least two candidate models"):
        RouterSpec(models=["x"])
    with pytest.raises(ValueError, match="threshold or lam, not both"):
        RouterSpec(models=PAIR, threshold=0.5, lam=0.0)
    with pytest.raises(TypeError, match="takes a RouterState.*RouterSpec"):
        Router(models=PAIR)  # the unfitted router of router_ml 0.1 is a RouterSpec now


def test_extra_rows_matching_a_test_question_are_dropped(monkeypatch):
    from router_ml.learn import protocols

    def rows(prompts):
        n = len(prompts)
        return Rows(list(prompts), np.column_stack([np.ones(n), np.zeros(n)]), tuple(PAIR),
                    np.array(["g"] * n, dtype=object), np.array(["s"] * n, dtype=object))

    test = rows(["What is the capital of France, the country in western Europe?\nA. Paris\nB. Rome\nAnswer:"])
    train = rows(["Some other training question about rivers and mountains in Asia?"])
    extra = rows(["what is the capital of FRANCE, the country in western europe?",
                  "A different question about the capital of Spain and its rivers?"])
    monkeypatch.setattr(protocols, "_extra_rows", lambda names, models, data_dir: [extra])
    (f,) = with_extra([Fold("p", None, train, test)], ["extra"])
    assert f.dropped == 1 and len(f.train) == 2
    assert "the capital of Spain" in f.train.prompts[1]
    assert f.test is test


@pytest.mark.parametrize("classifier", ["logreg", "knn", "mlp", "hgb"])
@pytest.mark.parametrize("target", ["gain", "quality"])
def test_every_classifier_learns_saves_and_reloads(classifier, target, tmp_path):
    from router_ml.learn.training import CLASSIFIER_CHOICES, TrainConfig, fit_router

    assert classifier in CLASSIFIER_CHOICES
    prompts, qs, qw = planted(300)
    # the weak model is sometimes better: three gain classes
    qw = np.where(np.arange(300) % 17 == 0, 1.0, qw)
    qs = np.where(np.arange(300) % 17 == 0, 0.0, qs)
    train = Rows(prompts, np.column_stack([qs, qw]), ("strong", "weak"),
                 np.array(["g"] * 300, dtype=object), np.array(["s"] * 300, dtype=object))
    # mlp and hgb get the dense statistics (hgb refuses sparse TF-IDF; mlp's early stopping
    # gives up on 300 TF-IDF rows); kNN keeps the sparse matrix in its saved file
    encoder = "stats" if classifier in ("mlp", "hgb") else "tfidf"
    config = TrainConfig(encoder=encoder, classifier=classifier, target=target, C=1.0, k=10)
    router = fit_router(train, config)
    assert (router.strong_model, router.weak_model) == ("strong", "weak")
    router.save(tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    test_prompts, tqs, tqw = planted(200, seed=1)
    np.testing.assert_array_equal(loaded.score(test_prompts), router.score(test_prompts))
    assert apgr(loaded.score(test_prompts), tqs, tqw) > 0.6


@pytest.mark.parametrize("n_models", [2, 3])
def test_heads_are_chosen_by_grid_search_on_routing_quality(n_models, monkeypatch):
    """fit_router's heads are GridSearchCV's best with the routing scorer: the C of C_GRID
    (and, for more than two models, kNN heads) with the best mean held-out APGR (two
    models) or AIQ (three), recomputed here fold by fold; the exact tokenizer, when
    configured, prices the rows and stays on the router."""
    from sklearn.base import clone

    from router_ml.core.prices import row_costs
    from router_ml.core.transformer import resolve_st_model
    from router_ml.learn import selection, training
    from router_ml.learn.training import (
        TrainConfig,
        make_folds,
        routing_score,
        build_estimator,
        fit_router,
    )

    monkeypatch.setattr(selection, "C_GRID", (0.001, 0.1, 10.0))
    if n_models == 2:
        prompts, qs, qw = planted(240)
        train = Rows(prompts, np.column_stack([qs, qw]), ("strong", "weak"),
                     np.array(["g"] * 240, dtype=object), np.array(["s"] * 240, dtype=object))
        prices, tok = None, None
    else:
        prompts, Q, _ = planted_tiers(240, seed=5)
        train = Rows(prompts, Q, tuple(TIERS), np.array(["g"] * 240, dtype=object),
                     np.array(["s"] * 240, dtype=object))
        prices, tok = TIER_PRICES, resolve_st_model("all-MiniLM-L6-v2")
    config = TrainConfig(encoder="tfidf", extra=(), coverage=None, n_jobs=1, tokenizer=tok, k=15)
    router = fit_router(train, config, prices)
    X = training.build_encoder("tfidf").fit_transform(prompts)
    costs = None if prices is None else row_costs(prompts, train.models, None, prices,
                                                  tokenizer=router.tokenizer)
    candidates = [("logistic", C, build_estimator(config, C)) for C in selection.C_GRID]
    if n_models == 3:
        knn = TrainConfig(classifier="knn", k=15)
        candidates.append(("kNN", None, build_estimator(knn)))
    means = []
    for _, _, est in candidates:
        scores = []
        for tr, te in make_folds(config).split(X):
            fitted = clone(est).fit(X[tr], train.quality[tr])
            scores.append(routing_score(train.quality[te], fitted.decision_function(X[te]),
                                         None if costs is None else costs[te]))
        means.append(np.mean(scores))
    heads, C, _ = candidates[int(np.argmax(means))]
    assert (router.training["heads"], router.training["C"]) == (heads, C)
    if tok is not None:
        assert router.tokenizer is not None and router.training["config"]["tokenizer"] == tok
        exact = row_costs(prompts, train.models, None, prices, tokenizer=router.tokenizer)
        assert not np.allclose(exact, row_costs(prompts, train.models, None, prices))
        np.testing.assert_allclose(router.costs(prompts), exact)


def test_select_by_sources_leaves_one_source_out(monkeypatch):
    """select_by="sources": the C with the best mean APGR on held-out sources, over
    C_GRID_SOURCES, recomputed here source by source; "both": the best mean of that and the
    folds' score; one source falls back to folds."""
    from sklearn.base import clone

    from router_ml.learn import selection, training
    from router_ml.learn.training import (
        TrainConfig,
        make_folds,
        routing_score,
        build_estimator,
        fit_router,
    )

    monkeypatch.setattr(selection, "C_GRID_SOURCES", (0.001, 0.1, 10.0))
    prompts, qs, qw = planted(300)
    sources = np.array(["a", "b", "c"] * 100, dtype=object)
    Q = np.column_stack([qs, qw])
    train = Rows(prompts, Q, ("strong", "weak"), np.array(["g"] * 300, dtype=object), sources)
    config = TrainConfig(encoder="tfidf", extra=(), coverage=None, n_jobs=1, select_by="sources")
    router = fit_router(train, config)
    X = training.build_encoder("tfidf").fit_transform(prompts)
    by_source, by_fold = [], []
    for C in selection.C_GRID_SOURCES:
        scores = []
        for held in ("a", "b", "c"):
            te, tr = sources == held, sources != held
            est = clone(build_estimator(config, C)).fit(X[tr], Q[tr])
            scores.append(routing_score(Q[te], est.decision_function(X[te])))
        by_source.append(np.mean(scores))
        scores = []
        for tr, te in make_folds(config).split(X):
            est = clone(build_estimator(config, C)).fit(X[tr], Q[tr])
            scores.append(routing_score(Q[te], est.decision_function(X[te])))
        by_fold.append(np.mean(scores))
    assert router.training["C"] == selection.C_GRID_SOURCES[int(np.argmax(by_source))]
    both = fit_router(train, TrainConfig(encoder="tfidf", extra=(), coverage=None, n_jobs=1,
                                         select_by="both"))
    mean = (np.array(by_source) + np.array(by_fold)) / 2
    assert both.training["C"] == selection.C_GRID_SOURCES[int(np.argmax(mean))]
    one = Rows(prompts, Q, ("strong", "weak"), train.groups, np.array(["a"] * 300, dtype=object))
    assert fit_router(one, config).training["C"] in selection.C_GRID  # folds, the usual grid
    with pytest.raises(ValueError, match="select_by must be one of 'folds', 'sources', 'both'"):
        fit_router(train, TrainConfig(encoder="tfidf", select_by="groups"))


def test_an_unreachable_default_lam_target_keeps_the_closest_policy(caplog):
    """Training does not fail when no lam comes within max_drop of the best single model on the
    out-of-fold rows: it keeps the best-quality policy and the record says the target was not
    met; calibrate_lam (strict) still raises."""
    from router_ml.core.calibration import lam_for_target
    from router_ml.learn.training import TrainConfig, fit_router

    prompts, Q, _ = planted_tiers(240, seed=7)
    rng = np.random.default_rng(0)
    # labels no prompt feature predicts; the dearest model is best on average
    noise = (rng.random(Q.shape) < [0.7, 0.6, 0.6]).astype(float)
    train = Rows(prompts, noise, tuple(TIERS), np.array(["g"] * 240, dtype=object),
                 np.array(["s"] * 240, dtype=object))
    config = TrainConfig(encoder="tfidf", extra=(), coverage=None, n_jobs=1, max_drop=0.0,
                         classifier="logreg", C=1.0)
    router = fit_router(train, config, TIER_PRICES)
    rec = router.calibration
    assert rec.achieved["met"] is False and "no lam reaches" in caplog.text
    assert rec.achieved["quality"] < rec.achieved["best_single_quality"]
    V, C = rng.random((50, 3)), np.tile([3.0, 2.0, 1.0], (50, 1))
    Qs = (rng.random((50, 3)) < 0.5).astype(float)
    Qs[:, 0] = 1.0  # the dearest is always right, and V never prefers it
    V[:, 0] = -1.0
    with pytest.raises(CalibrationError, match="no lam reaches max_drop"):
        lam_for_target(V, Qs, C, max_drop=0.0)
    lam, r = lam_for_target(V, Qs, C, max_drop=0.0, strict=False)
    from router_ml.core.metrics import sweep

    assert r.achieved["met"] is False
    assert r.achieved["quality"] == pytest.approx(sweep(V, Qs, C).quality.max())


def test_the_heads_search_trains_on_a_small_table():
    """With 90 rows of three models the kNN candidate cannot have k = 100 neighbours in a
    60-row fold: the search caps k at the fold size instead of failing."""
    from router_ml.learn.training import TrainConfig, fit_router

    prompts, Q, _ = planted_tiers(90, seed=2)
    train = Rows(prompts, Q, tuple(TIERS), np.array(["g"] * 90, dtype=object),
                 np.array(["s"] * 90, dtype=object))
    router = fit_router(train, TrainConfig(encoder="tfidf", extra=(), n_jobs=1), TIER_PRICES)
    assert router.training["heads"] in ("logistic", "kNN")
    if router.training["heads"] == "kNN":
        assert router.estimator.classifier.n_neighbors <= 60
    assert router.predict_quality(prompts[:5]).shape == (5, 3)


def test_boosting_on_sparse_tfidf_is_a_clear_error():
    from router_ml.learn.training import TrainConfig, build_router

    with pytest.raises(ValueError, match="'hgb' needs dense features.*not tfidf"):
        build_router(TrainConfig(encoder="tfidf+stats", classifier="hgb"), ["a", "b"])


def test_sentence_transformer_cache_is_used_without_the_model(tmp_path, monkeypatch, caplog):
    """Cached texts never load the model; a corrupt entry or one of another width is recomputed."""
    from router_ml.core.encoders import clean, text_hash
    from router_ml.core.transformer import EmbeddingCache, SentenceTransformerEncoder

    enc = SentenceTransformerEncoder(cache_dir=tmp_path)
    texts = ["first prompt", "second prompt", "third prompt"]
    cached = np.arange(12, dtype=np.float32).reshape(3, 4)
    EmbeddingCache(tmp_path).put_many(enc.spec(), [clean(t) for t in texts], cached)
    monkeypatch.setattr(enc, "_load", lambda: pytest.fail("the model was loaded"))
    np.testing.assert_array_equal(enc.transform(texts), cached)

    computed = []

    def compute(batch):
        computed.append(list(batch))
        return np.full((len(batch), 4), 7, dtype=np.float32)

    monkeypatch.setattr(enc, "_compute", compute)
    h = text_hash(clean(texts[1]))
    (EmbeddingCache(tmp_path)._dir(enc.spec()) / h[:2] / f"{h}.npy").write_bytes(b"not numpy")
    out = enc.transform(texts)
    assert computed == [[clean(texts[1])]] and "corrupt entry" in caplog.text
    np.testing.assert_array_equal(out, [cached[0], np.full(4, 7), cached[2]])

    computed.clear()
    EmbeddingCache(tmp_path).put_many(enc.spec(), [clean(texts[2])], np.ones((1, 3), np.float32))
    out = enc.transform(texts)  # the 3-wide entry is a miss; the 4-wide model output fits
    assert computed == [[clean(texts[2])]] and out.shape == (3, 4)

    computed.clear()
    monkeypatch.setattr(enc, "_compute", lambda b: computed.append(list(b)) or np.ones((len(b), 5), np.float32))
    out = enc.transform(texts + ["a new prompt"])  # the model now gives 5-wide vectors
    assert out.shape == (4, 5) and len(computed[-1]) == 4 and "all are recomputed" in caplog.text


def test_encoders_are_scikit_learn_transformers(tmp_path):
    """clone, FeatureUnion, Pipeline, GridSearchCV and cross_val_predict take the encoders;
    fit_transform equals fit then transform; a saved FeatureUnion loads as a ConcatEncoder
    that gives the same matrix without scikit-learn."""
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict
    from sklearn.pipeline import FeatureUnion, Pipeline

    from router_ml.core.encoders import StatsEncoder
    from router_ml.core.features import ConcatEncoder, encoder_from_parts, encoder_parts, encoder_spec
    from router_ml.learn.estimator import QualityEstimator

    prompts, qs, qw = planted(120)
    Q = np.column_stack([qs, qw])
    union = lambda: FeatureUnion([("stats", StatsEncoder()), ("tfidf", TfidfEncoder(min_df=1))],
                                 transformer_weights={"tfidf": 2.0})
    for make in (TfidfEncoder, StatsEncoder, union):
        a, b = make(), clone(make())
        dense = [m.toarray() if hasattr(m, "toarray") else m for m in (
            a.fit_transform(prompts), b.fit(prompts).transform(prompts),
            a.transform(prompts[:5]), b.transform(prompts[:5]))]
        assert all(m.dtype == np.float32 for m in dense)
        np.testing.assert_array_equal(dense[0], dense[1])
        np.testing.assert_array_equal(dense[2], dense[3])
    assert clone(StatsEncoder(("log_chars",))).get_params() == {"stats": ("log_chars",)}
    with pytest.raises(ValueError, match="invalid parameter 'c' for TfidfEncoder"):
        TfidfEncoder().set_params(c=1)

    fitted = union().fit(prompts)
    loaded = encoder_from_parts(encoder_spec(fitted), encoder_parts(fitted))
    assert isinstance(loaded, ConcatEncoder) and loaded.weights == [1.0, 2.0]
    np.testing.assert_array_equal(loaded.transform(prompts).toarray(),
                                  fitted.transform(prompts).toarray())

    pipe = Pipeline([("encoder", union()), ("estimator", QualityEstimator())])
    search = GridSearchCV(pipe, {"estimator__C": [0.01, 1.0], "encoder__tfidf__min_df": [1, 2]},
                          cv=KFold(3, shuffle=True, random_state=0)).fit(prompts, Q)
    assert set(search.best_params_) == {"estimator__C", "encoder__tfidf__min_df"}
    oof = cross_val_predict(pipe, prompts, Q, cv=3)
    assert oof.shape == Q.shape and ((oof >= 0) & (oof <= 1)).all()


# ------------------------------------------------------------------ N models: the lam knob

@pytest.fixture(scope="module")
def tiers():
    prompts, Q, _ = planted_tiers()
    return RouterSpec(TfidfEncoder(min_df=1), models=TIERS, prices=TIER_PRICES).fit(prompts, Q)


def test_predict_quality_recovers_the_planted_best_model(tiers):
    prompts, Q, kind = planted_tiers(150, seed=1)
    P = tiers.predict_quality(prompts)
    assert P.shape == (150, 3) and P.dtype == np.float64 and ((P >= 0) & (P <= 1)).all()
    assert (P.argmax(axis=1) == kind).mean() > 0.95
    assert tiers.models == TIERS and tiers.lam == 0.0 and tiers.threshold is None


def test_lam_zero_picks_the_best_prediction_and_inf_the_cheapest(tiers):
    prompts, _, kind = planted_tiers(60, seed=2)
    P = tiers.decision_function(prompts)
    tiers.set_lam(0.0, None)
    ds = tiers.route_batch(prompts)
    assert [d.model for d in ds] == [TIERS[j] for j in P.argmax(axis=1)]
    assert {d.model for d in ds} == set(TIERS)  # both gpt-4o providers are chosen, by name
    d = ds[0]
    assert d.lam == 0.0 and d.threshold is None and not d.strong
    assert set(d.qualities) == set(TIERS) and d.score == d.qualities[d.model]
    assert d.cost == pytest.approx(tiers.costs([prompts[0]])[0, TIERS.index(d.model)])
    tiers.lam = float("inf")
    assert {d.model for d in tiers.route_batch(prompts)} == {"small"}
    tiers.lam = 0.0


def test_ties_go_to_the_cheaper_model():
    from router_ml.core.heads import choose

    V = np.array([[0.5, 0.5, 0.5], [0.9, 0.5, 0.5]])
    C = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 1.0]])
    np.testing.assert_array_equal(choose(V, C, 0.0), [1, 0])
    np.testing.assert_array_equal(choose(V, C, 0.2), [1, 1])  # 0.9 - 0.6 = 0.3 < 0.5 - 0.2
    np.testing.assert_array_equal(choose(V, C, np.inf), [1, 1])


def test_route_reads_the_user_turns_of_chat_messages_newest_first(tiers):
    chat = [{"role": "system", "content": "say hello about everything"},
            {"role": "user", "content": "say hello about alpha"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "prove the theorem about beta"}]}]
    text = "prove the theorem about beta\n\nsay hello about alpha"
    assert prompt_text(chat) == text
    assert tiers.route(chat) == tiers.route(text)
    # one user turn: its text alone, system and assistant messages unread
    assert tiers.route([chat[0], chat[3]]) == tiers.route("prove the theorem about beta")
    with pytest.raises(ValueError, match="no message with role 'user'"):
        tiers.route([{"role": "system", "content": "x"}])


@pytest.mark.parametrize("target", [{"budget": None}, {"max_drop": 0.02}, {"dearest_share": 0.2}])
def test_calibrate_lam_achieves_what_the_record_says(tiers, target):
    prompts, Q, _ = planted_tiers(300, seed=3)
    C = tiers.costs(prompts)
    if "budget" in target:  # between the cheapest and the dearest model's mean cost
        target = {"budget": float(C[:, 2].mean() + 0.5 * (C[:, 1].mean() - C[:, 2].mean()))}
    before = tiers.lam
    try:
        rec = tiers.calibrate_lam(prompts, Q, **target)
        lam = rec.achieved["lam"]
        assert tiers.lam == (1e12 if lam is None else lam) and tiers.calibration == rec
        assert rec.n == 300 and rec.target == target
        pick = np.array([TIERS.index(d.model) for d in tiers.route_batch(prompts)])
        rows = np.arange(300)
        cost, quality = C[rows, pick].mean(), Q[rows, pick].mean()
        dearest = (pick == int(C.mean(axis=0).argmax())).mean()
        assert rec.achieved["mean_cost"] == pytest.approx(cost)
        assert rec.achieved["quality"] == pytest.approx(quality)
        assert rec.achieved["dearest_share"] == pytest.approx(dearest)
        assert rec.achieved["best_single_quality"] == pytest.approx(Q.mean(axis=0).max())
        if "budget" in target:
            assert cost <= target["budget"] * (1 + 1e-12)
            assert quality > Q[:, 2].mean()  # routing buys quality within the budget
        elif "max_drop" in target:
            assert quality >= Q.mean(axis=0).max() - 0.02 - 1e-12
            assert cost < C.mean(axis=0).max()
        else:
            assert abs(dearest - 0.2) < 0.05
    finally:
        tiers.set_lam(before, None)


@given(seed=st.integers(0, 10_000), target=st.sampled_from(["max_drop", "budget"]))
@settings(max_examples=40, deadline=None)
def test_lam_for_target_is_optimal_over_every_knob_value(seed, target):
    """The exact sweep finds the cheapest lam within max_drop (the best quality within a
    budget): no knob value on a dense grid does better while meeting the target."""
    from router_ml.core.calibration import lam_for_target
    from router_ml.core.heads import choose

    rng = np.random.default_rng(seed)
    n, m = 40, 3
    V, Q = rng.random((n, m)), (rng.random((n, m)) < 0.6).astype(float)
    C = np.sort(rng.random((n, m)) * 1e-3, axis=1)[:, ::-1]
    rows = np.arange(n)
    goal = 0.05 if target == "max_drop" else float(C.mean(axis=0).mean())
    try:
        lam, rec = lam_for_target(V, Q, C, **{target: goal})
    except CalibrationError:
        rec = None  # then no knob value may meet the target either
    else:
        picked = choose(V, C, lam)
        assert rec.achieved["mean_cost"] == pytest.approx(C[rows, picked].mean())
        assert rec.achieved["quality"] == pytest.approx(Q[rows, picked].mean())
    for other in np.r_[0.0, np.geomspace(1e-2, 1e6, 600), np.inf]:
        p = choose(V, C, other)
        cost, quality = C[rows, p].mean(), Q[rows, p].mean()
        if target == "max_drop" and quality >= Q.mean(axis=0).max() - goal - 1e-12:
            assert rec is not None and rec.achieved["mean_cost"] <= cost + 1e-15
        if target == "budget" and cost <= goal * (1 + 1e-12):
            assert rec is not None and rec.achieved["quality"] >= quality - 1e-12


def test_an_unreachable_lam_target_is_a_calibration_error(tiers):
    prompts, Q, _ = planted_tiers(60, seed=4)
    cheapest = tiers.costs(prompts).mean(axis=0).min()
    with pytest.raises(CalibrationError, match="no lam reaches budget"):
        tiers.calibrate_lam(prompts, Q, budget=cheapest / 2)
    with pytest.raises(CalibrationError, match="exactly one of"):
        tiers.calibrate_lam(prompts, Q, budget=1.0, max_drop=0.1)
    with pytest.raises(CalibrationError, match="dearest_share must be"):
        tiers.calibrate_lam(prompts, Q, dearest_share=1.5)
    assert tiers.lam == 0.0 and tiers.calibration.method == "manual"


def test_missing_price_and_threshold_on_three_models_are_clear_errors(tiers):
    prompts, Q, _ = planted_tiers(30)
    prices = {m: p for m, p in TIER_PRICES.items() if m != "small"}
    r = RouterSpec(TfidfEncoder(min_df=1), models=TIERS, prices=prices).fit(prompts, Q)
    with pytest.raises(UnknownModelError, match=r"unknown model 'small'.*the router's price table"):
        r.costs(prompts)
    with pytest.raises(UnknownModelError, match="'small'"):
        r.route(prompts[0])  # lam needs costs
    with pytest.raises(ValueError, match="a threshold needs exactly two models"):
        tiers.threshold = 0.5
    with pytest.raises(ValueError, match="a threshold needs exactly two models"):
        RouterSpec(models=TIERS, threshold=0.5)
    for attr in ("strong_model", "weak_model"):
        with pytest.raises(AttributeError, match="two-model routers"):
            getattr(tiers, attr)
    with pytest.raises(AttributeError, match="two-model routers"):
        tiers.score(prompts)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        tiers.lam = -1.0


# ------------------------------------------------------------------ the pair is the N = 2 case

def _pair_prices(strong_output=10.0, weak_output=0.6):
    # output prices only: every prompt costs the same, whatever its length
    return {"strong": {"input": 0.0, "output": strong_output},
            "weak": {"input": 0.0, "output": weak_output}}


def assert_lam_equals_threshold(router, prompts):
    """At a fixed cost per request, lam decides like threshold 0.5 + lam * (c_s - c_w) / 2."""
    C = router.costs(prompts)
    assert np.ptp(C, axis=0).max() == 0  # the same cost for every prompt
    dc = C[0, 0] - C[0, 1]
    s = np.unique(router.score(prompts))
    # thresholds between neighbouring scores (no exact ties) and at the two ends
    ts = np.r_[s[0] / 2, (s[:-1] + s[1:])[:: max(1, len(s) // 25)] / 2, (s[-1] + 1) / 2]
    compared = 0
    for t in ts:
        lam = 2 * (t - 0.5) / dc
        if lam < 0:
            continue
        router.set_lam(lam, None)
        by_lam = [d.model for d in router.route_batch(prompts)]
        router.set_threshold(0.5 + lam * dc / 2, None)
        by_threshold = [d.model for d in router.route_batch(prompts)]
        assert by_lam == by_threshold, t
        compared += 1
    assert compared >= 5


def test_lam_equals_threshold_for_a_pair_on_synthetic_data(fitted):
    router, prompts, *_ = fitted
    pair = Router(RouterState(router.encoder, router.estimator, PAIR, threshold=0.5,
                              prices=_pair_prices()))
    assert pair.threshold == 0.5 and pair.lam is None
    assert (pair.strong_model, pair.weak_model) == ("strong", "weak")
    np.testing.assert_array_equal(pair.score(prompts), router.score(prompts))
    V = pair.decision_function(prompts)
    np.testing.assert_allclose(pair.score(prompts), np.clip(0.5 + (V[:, 0] - V[:, 1]) / 2, 0, 1))
    assert_lam_equals_threshold(pair, prompts)
    # a lam decision on a pair names the model and carries no threshold
    pair.set_lam(0.0, None)
    d = pair.route(prompts[0])
    assert d.threshold is None and d.lam == 0.0 and d.model in PAIR


def test_lam_equals_threshold_for_a_pair_on_the_mmlu_protocol(shared):
    from router_ml.learn.protocols import STRONG_MODEL, WEAK_MODEL, protocol_folds

    (f,) = protocol_folds("mmlu", shared)
    idx = np.random.default_rng(0).choice(len(f.train), 1500, replace=False)
    train = f.train.subset(np.sort(idx))
    prices = {STRONG_MODEL: {"input": 0.0, "output": 30.0},
              WEAK_MODEL: {"input": 0.0, "output": 0.6}}
    router = RouterSpec(StatsEncoder(), models=[STRONG_MODEL, WEAK_MODEL],
                        prices=prices).fit(train.prompts, train.quality)
    assert (router.strong_model, router.weak_model) == (STRONG_MODEL, WEAK_MODEL)
    s = router.score(f.test.prompts)
    assert s.shape == (len(f.test),) and ((s >= 0) & (s <= 1)).all()
    assert apgr(s, f.test.q_strong, f.test.q_weak) > 0.5
    assert_lam_equals_threshold(router, f.test.prompts)


def test_a_routers_parts_are_read_only_and_its_knob_is_not(fitted):
    """A Router is built from a RouterState and nothing else: its parts cannot be written from
    outside; the knob, the fallback and the tokenizer can (they make a new state)."""
    router = fitted[0]
    for name in ("encoder", "estimator", "prices", "training", "evaluation", "coverage",
                 "length_prior", "score_rule", "calibration", "manifest", "state"):
        with pytest.raises(AttributeError):
            setattr(router, name, None)
    state = router.state
    router.threshold = 0.3
    assert router.state is not state and state.threshold != 0.3
    assert router.state.threshold == 0.3 and router.calibration.method == "manual"
    router.set_threshold(state.threshold, state.calibration)
    assert router.state == state
