"""The length prior: how its weight is chosen, what it does to the score, and how training,
saving and routing carry it."""

from __future__ import annotations

import numpy as np
import pytest

from router_ml import load_router
from router_ml.core.metrics import apgr
from router_ml.core.prior import WEIGHTS, LengthPrior
from router_ml.learn.rows import Rows
from router_ml.learn.training import TrainConfig, fit_router

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]


def length_rows(n=240, seed=0, signal=0.9):
    """Prompts of 3 to 40 random words; the strong model is needed (strong right, weak wrong)
    on long prompts with probability ``signal`` and on short ones with 1 - signal."""
    rng = np.random.default_rng(seed)
    k = rng.integers(3, 41, n)
    prompts = [" ".join(rng.choice(WORDS, int(m))) + f" {i}" for i, m in enumerate(k)]
    need = rng.random(n) < np.where(k > np.median(k), signal, 1 - signal)
    q = np.column_stack([np.ones(n), (~need).astype(float)])
    return Rows(prompts, q, ("strong", "weak"), np.array(["g"] * n, dtype=object),
                np.array(["planted"] * n, dtype=object))


def planted_lengths(seed, n=600):
    """(rng, lengths, need, q_strong, q_weak): the strong model is needed on long prompts with
    probability 0.85, on short ones with 0.15; rng goes on drawing for the caller."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 2000, n).astype(float)
    need = rng.random(n) < np.where(lengths > np.median(lengths), 0.85, 0.15)
    return rng, lengths, need, np.ones(n), (~need).astype(float)


def test_the_weight_follows_whichever_signal_routes_better():
    rng, lengths, need, qs, qw = planted_lengths(1)
    n = len(lengths)
    noise = rng.random(n)
    # a learned score that is noise: the length gets the most weight allowed
    assert LengthPrior.fit(noise, lengths, qs, qw).weight == max(WEIGHTS) == 0.5
    # a score that knows the answer, lengths that are noise: the score decides alone
    good = np.where(need, 0.9, 0.1) + 0.01 * noise
    assert LengthPrior.fit(good, rng.permutation(lengths), qs, qw).weight == 0.0
    # the chosen weight is the best of the grid on these rows
    half = np.where(need, 0.6, 0.4) + 0.3 * noise
    p = LengthPrior.fit(half, lengths, qs, qw)
    best = max(apgr(LengthPrior(w, p.score_quantiles, p.length_quantiles).apply(half, lengths),
                    qs, qw) for w in WEIGHTS)
    assert apgr(p.apply(half, lengths), qs, qw) == pytest.approx(best, abs=1e-12)
    assert 0.0 < p.weight < max(WEIGHTS)


def test_the_blend_is_in_0_1_and_increases_with_score_and_length():
    p = LengthPrior(0.3, np.linspace(0.2, 0.8, 101), np.linspace(10, 1000, 101))
    s = p.apply([0.0, 0.2, 0.5, 0.8, 1.0], [500] * 5)
    # below and above every training score: F_score is 0 and 1; F_length(500) = 490 / 990
    assert (np.diff(s) >= 0).all() and s[1] < s[2] < s[3]
    assert s[0] == pytest.approx(0.3 * 490 / 990) and s[-1] == pytest.approx(0.7 + 0.3 * 490 / 990)
    L = p.apply([0.5] * 5, [0, 10, 300, 1000, 10**6])
    assert (np.diff(L) > 0).sum() >= 2 and (np.diff(L) >= 0).all()
    assert np.all((p.apply([-5, 7], [-1, 10**9]) >= 0) & (p.apply([-5, 7], [-1, 10**9]) <= 1))


@pytest.mark.parametrize("bad", [
    {"kind": "length", "weight": 1.5, "score_quantiles": [0, 1], "length_quantiles": [0, 1]},
    {"kind": "length", "weight": 0.5, "score_quantiles": [1, 0], "length_quantiles": [0, 1]},
    {"kind": "length", "weight": 0.5, "score_quantiles": [0], "length_quantiles": [0, 1]},
    {"kind": "length", "weight": 0.5, "score_quantiles": [0, float("nan")],
     "length_quantiles": [0, 1]},
    {"kind": "words", "weight": 0.5, "score_quantiles": [0, 1], "length_quantiles": [0, 1]},
])
def test_a_malformed_prior_is_refused_with_the_reason(bad):
    with pytest.raises(ValueError, match="prior"):
        LengthPrior.from_dict(bad)


def test_training_blends_length_in_when_it_routes_better_and_the_router_keeps_it(tmp_path):
    # TF-IDF normalises length away, so its score alone routes these rows poorly
    rows = length_rows()
    router = fit_router(rows, TrainConfig(encoder="tfidf", extra=(), C=1.0, coverage=None))
    w = router.training["length_prior_weight"]
    assert w in WEIGHTS and w > 0 and router.length_prior.weight == w
    test = length_rows(seed=5)
    s = router.score(test.prompts)
    plain = router._score(router.decision_function(test.prompts))
    np.testing.assert_allclose(s, router.length_prior.apply(plain, [len(p) for p in test.prompts]))
    assert apgr(s, test.q_strong, test.q_weak) > apgr(plain, test.q_strong, test.q_weak)
    # decisions compare the blended score with the threshold calibrated on it
    got = [d.model for d in router.route_batch(test.prompts)]
    assert got == np.where(s >= router.threshold, "strong", "weak").tolist()
    assert [d.score for d in router.route_batch(test.prompts[:5])] == pytest.approx(s[:5].tolist())
    assert f"(length prior, weight {w:g})" in router.route(test.prompts[0]).reason
    # saved and loaded: the same scores, the prior in the manifest
    router.save(tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    np.testing.assert_array_equal(loaded.score(test.prompts), s)
    assert loaded.manifest["prior"]["weight"] == w


def test_no_length_prior_keeps_the_plain_score(tmp_path):
    rows = length_rows()
    router = fit_router(rows, TrainConfig(encoder="tfidf", extra=(), C=1.0, coverage=None,
                                          length_prior=False))
    assert router.length_prior is None and "length_prior_weight" not in router.training
    test = length_rows(seed=5)
    np.testing.assert_array_equal(router.score(test.prompts),
                                  router._score(router.decision_function(test.prompts)))
    router.save(tmp_path / "r")
    assert load_router(tmp_path / "r").manifest["prior"] is None


def word_rows(seed: int = 3, n: int = 240) -> Rows:
    """A pair's rows where a word says which model a prompt needs and length says nothing."""
    rng = np.random.default_rng(seed)
    need = rng.random(n) < 0.5
    prompts = [" ".join(rng.choice(WORDS, int(rng.integers(3, 41)))) + (" prove" if h else " chat")
               for h in need]
    return Rows(prompts, np.column_stack([np.ones(n), (~need).astype(float)]), ("strong", "weak"),
                np.array(["g"] * n, dtype=object), np.array(["planted"] * n, dtype=object))


def test_at_weight_0_the_score_is_the_plain_scores_share_of_the_training_rows(tmp_path):
    # the words carry the signal and length none: weight 0, the prior stays as a scale
    rows = word_rows()
    prompts = rows.prompts
    router = fit_router(rows, TrainConfig(encoder="tfidf", extra=(), C=1.0, coverage=None))
    assert router.training["length_prior_weight"] == 0.0 and router.length_prior.weight == 0.0
    s = router.score(prompts)
    plain = router._score(router.decision_function(prompts))
    order = np.argsort(plain, kind="stable")
    assert (np.diff(s[order]) >= 0).all()  # the plain score's order
    np.testing.assert_allclose(s, router.length_prior.apply(plain, [len(p) for p in prompts]))
    # on the training share scale: about half the training prompts score below 0.5
    assert 0.3 < (s < 0.5).mean() < 0.7 and not np.allclose(s, plain)
    assert "(length prior, weight 0)" in router.route(prompts[0]).reason
    router.save(tmp_path / "r")
    np.testing.assert_array_equal(load_router(tmp_path / "r").score(prompts), s)


def test_with_held_out_sources_the_weight_is_chosen_by_the_mean_of_folds_and_sources():
    rng, lengths, need, qs, qw = planted_lengths(4)
    n = len(lengths)
    sources = np.where(rng.random(n) < 0.5, "a", "b")
    knows = np.where(need, 0.9, 0.1) + 0.01 * rng.random(n)  # out-of-fold: the score is right
    noise = rng.random(n)  # from a model without the row's source: it says nothing
    assert LengthPrior.fit(knows, lengths, qs, qw).weight == 0.0
    only = LengthPrior.fit(knows, lengths, qs, qw, held_out=(noise, sources), folds=False)
    assert only.weight == max(WEIGHTS)
    both = LengthPrior.fit(knows, lengths, qs, qw, held_out=(noise, sources))

    def criterion(w):
        levels = np.linspace(0, 1, 101)
        fold = apgr(LengthPrior(w, np.quantile(knows, levels), both.length_quantiles)
                    .apply(knows, lengths), qs, qw)
        held = LengthPrior(w, np.quantile(noise, levels), both.length_quantiles).apply(noise, lengths)
        per = [apgr(held[sources == s], qs[sources == s], qw[sources == s]) for s in "ab"]
        return (fold + np.mean(per)) / 2

    assert both.criterion_ == pytest.approx(max(criterion(w) for w in WEIGHTS), abs=1e-12)
    assert both.criterion_ == pytest.approx(criterion(both.weight), abs=1e-12)
    assert 0.0 < both.weight
    # the router keeps the out-of-fold scale, whatever chose the weight
    np.testing.assert_array_equal(both.score_quantiles, np.quantile(knows, np.linspace(0, 1, 101)))
    assert both.apgr_ == pytest.approx(apgr(both.apply(knows, lengths), qs, qw))
    with pytest.raises(ValueError, match="held-out"):
        LengthPrior.fit(knows, lengths, qs, qw, held_out=(noise[:-1], sources))


def test_prior_select_by_chooses_the_weight_on_left_out_sources_as_select_by_chooses_c():
    # in each source one word says which model is needed, and length says it too; a model
    # trained on the other source does not know the word, so only length carries over
    rng = np.random.default_rng(6)
    n = 400
    k = rng.integers(3, 41, n)
    need = rng.random(n) < np.where(k > np.median(k), 0.85, 0.15)
    src = np.where(np.arange(n) % 2 == 0, "a", "b")
    words = {("a", True): "zeta", ("a", False): "eta", ("b", True): "iota", ("b", False): "rho"}
    prompts = [" ".join(rng.choice(WORDS, int(m))) + f" {words[s, bool(h)]} {i}"
               for i, (m, s, h) in enumerate(zip(k, src, need))]
    rows = Rows(prompts, np.column_stack([np.ones(n), (~need).astype(float)]), ("strong", "weak"),
                np.array(["g"] * n, dtype=object), src.astype(object))
    weights = {by: fit_router(rows, TrainConfig(encoder="tfidf", extra=(), C=1.0, coverage=None,
                                                prior_select_by=by)).training["length_prior_weight"]
               for by in ("folds", "both", "sources")}
    assert weights["folds"] == 0.0 and weights["sources"] == max(WEIGHTS)
    assert weights["both"] > 0.0
    with pytest.raises(ValueError, match="prior_select_by must be one of"):
        fit_router(rows, TrainConfig(encoder="tfidf", extra=(), prior_select_by="source"))


def test_the_difficulty_estimators_prior_weight_is_chosen_on_left_out_sources_too():
    # as above: each source's own word says which model is needed, length says it in both;
    # the difficulty learned without a source does not know its word, so only length carries
    rng = np.random.default_rng(6)
    n = 400
    k = rng.integers(3, 41, n)
    need = rng.random(n) < np.where(k > np.median(k), 0.85, 0.15)
    src = np.where(np.arange(n) % 2 == 0, "a", "b")
    words = {("a", True): "zeta", ("a", False): "eta", ("b", True): "iota", ("b", False): "rho"}
    prompts = [" ".join(rng.choice(WORDS, int(m))) + f" {words[s, bool(h)]} {i}"
               for i, (m, s, h) in enumerate(zip(k, src, need))]
    rows = Rows(prompts, np.column_stack([np.ones(n), (~need).astype(float)]), ("strong", "weak"),
                np.array(["g"] * n, dtype=object), src.astype(object))

    def fit(by):
        return fit_router(rows, TrainConfig(estimator="difficulty", encoder="tfidf", extra=(),
                                            coverage=None, prior_select_by=by))

    by_folds, by_sources = fit("folds"), fit("sources")
    assert by_folds.training["length_prior_weight"] == 0.0
    assert by_sources.training["length_prior_weight"] == max(WEIGHTS)
    # the router keeps the estimator fitted on every row either way
    np.testing.assert_array_equal(by_folds.estimator.coef_, by_sources.estimator.coef_)


def test_a_fixed_prior_weight_is_kept_where_the_folds_would_choose_another():
    # the words carry the signal and length none: chosen, the weight is 0; fixed, it is kept
    rows = word_rows()
    prompts = rows.prompts
    config = TrainConfig(encoder="tfidf", extra=(), C=1.0, coverage=None, prior_weight=0.3)
    router = fit_router(rows, config)
    assert router.training["length_prior_weight"] == 0.3 and router.length_prior.weight == 0.3
    assert router.training["config"]["prior_weight"] == 0.3
    plain = router._score(router.decision_function(prompts))
    np.testing.assert_allclose(router.score(prompts),
                               router.length_prior.apply(plain, [len(p) for p in prompts]))
    with pytest.raises(ValueError, match=r"prior_weight must be in \[0, 1\].*1\.5"):
        fit_router(rows, TrainConfig(encoder="tfidf", extra=(), C=1.0, prior_weight=1.5))
    with pytest.raises(ValueError, match="prior_weight 0.3 is set but length_prior is off"):
        fit_router(rows, TrainConfig(encoder="tfidf", extra=(), C=1.0, prior_weight=0.3,
                                     length_prior=False))
