"""router_ml.learn.difficulty: one difficulty shared by every model, learned from every
outcome; planted data recover it, a source's base rate stays out of it, and the fitted heads
predict with numpy alone."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from router_ml.core.heads import QualityHeads
from router_ml.learn.difficulty import DifficultyEstimator, difficulty_label


def _planted(seed=0, n=900):
    """Four models of different ability on one difficulty (feature 0); two sources, each
    seeing other models, the second with a lenient judge (+1.5 logits on every model)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    d = X[:, 0]
    src = np.array(["strict"] * (n // 2) + ["lenient"] * (n - n // 2), dtype=object)
    ability = np.array([2.0, 0.5, 1.0, -0.5])
    Y = np.empty((n, 4))
    for m in range(4):
        z = ability[m] - 1.5 * d + np.where(src == "lenient", 1.5, 0.0)
        Y[:, m] = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    Y[src == "strict", 2:] = np.nan
    Y[src == "lenient", :1] = np.nan
    return X, Y, src, d, ability


def test_recovers_the_planted_difficulty_and_abilities():
    X, Y, src, d, ability = _planted()
    est = DifficultyEstimator().fit(X, Y, source=src)
    assert np.corrcoef(est.difficulty(X), d)[0, 1] > 0.95
    assert (est.s_ < 0).all()  # every model does worse on harder prompts
    # ability order, although no source sees every model
    assert list(np.argsort(-est.a_)) == list(np.argsort(-ability))
    # the lenient judge is a source offset, not easier prompts
    assert est.c_["lenient"] - est.c_["strict"] > 0.8
    assert abs(est.difficulty(X)[src == "lenient"].mean()
               - est.difficulty(X)[src == "strict"].mean()) < 0.2


def test_heads_predict_the_columns_with_numpy_alone():
    X, Y, src, _, _ = _planted()
    est = DifficultyEstimator(columns=[0, 1]).fit(X, Y, source=src)
    assert isinstance(est.heads_, QualityHeads) and est.heads_.kinds == ["quality", "quality"]
    P = est.predict(X[:50])
    assert P.shape == (50, 2) and ((P > 0) & (P < 1)).all()
    np.testing.assert_allclose(est.heads_.decision_function(X[:50]), P, atol=1e-12)
    z = est.a_[:2] + np.outer(est.difficulty(X[:50]), est.s_[:2])
    np.testing.assert_allclose(P, 1 / (1 + np.exp(-z)), atol=1e-10)
    assert clone(est).get_params() == est.get_params()


def test_the_label_is_standardised_within_each_source():
    Y = np.array([[1, 1], [0, 1], [0, 0], [1.0, np.nan], [0.9, np.nan], [0.1, np.nan]])
    src = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    lab = difficulty_label(Y, src)
    for s in ("a", "b"):
        m = src == s
        assert lab[m].mean() == pytest.approx(0, abs=1e-12)
        assert lab[m].std() == pytest.approx(1)
    assert lab[2] > lab[1] > lab[0]


@pytest.mark.parametrize("bad,match", [
    (lambda X, Y: (X, Y * 2), r"\[0, 1\]"),
    (lambda X, Y: (X[:-1], Y), "one row per row"),
    (lambda X, Y: (X, np.column_stack([Y, np.full(len(Y), np.nan)])), "no outcome"),
])
def test_bad_input_is_a_clear_error(bad, match):
    X, Y, src, _, _ = _planted(n=100)
    X, Y = bad(X, Y)
    with pytest.raises(ValueError, match=match):
        DifficultyEstimator().fit(X, Y, source=src[:len(Y)])


def test_columns_must_index_the_outcomes():
    X, Y, src, _, _ = _planted(n=100)
    with pytest.raises(ValueError, match="columns must index"):
        DifficultyEstimator(columns=[0, 7]).fit(X, Y, source=src)


def test_a_low_rank_term_learns_what_one_difficulty_cannot():
    """Two models good at one kind of prompt (feature 1 > 0), two at the other: one shared
    difficulty cannot say so, a rank-1 model x prompt term can; its heads stay linear (numpy
    alone) and equal the formula on the raw features."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 6)) * [1, 1, 1, 1, 1, 3] + 2.0  # unscaled, off-centre features
    kind = X[:, 1] - 2.0
    z = np.array([1.0, 0.5, 0.5, 0.0]) - (X[:, :1] - 2.0) + np.outer(kind, [1.5, 1.5, -1.5, -1.5])
    Y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    train, test = slice(0, 500), slice(500, None)

    def log_loss(est):
        P = np.clip(est.predict(X[test]), 1e-9, 1 - 1e-9)
        return -(Y[test] * np.log(P) + (1 - Y[test]) * np.log(1 - P)).mean()

    flat = DifficultyEstimator().fit(X[train], Y[train])
    low = DifficultyEstimator(rank=1).fit(X[train], Y[train])
    assert log_loss(low) < log_loss(flat) - 0.05
    assert low.rank_penalty_ in (1e-4, 1e-3, 1e-2, 1e-1)
    assert low.U_.shape == (4, 1) and low.V_.shape == (6, 1)
    # the two kinds' models load the term with opposite signs
    assert np.sign(low.U_[0, 0]) == np.sign(low.U_[1, 0]) != np.sign(low.U_[2, 0])
    zz = (low.a_ + np.outer(low.difficulty(X[test]), low.s_)
          + (X[test] - X[train].mean(0)) @ low.V_ @ low.U_.T)
    np.testing.assert_allclose(low.predict(X[test]), 1 / (1 + np.exp(-zz)), atol=1e-8)
    with pytest.raises(ValueError, match="rank"):
        DifficultyEstimator(rank=-1).fit(X[train], Y[train])
