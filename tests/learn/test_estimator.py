"""QualityEstimator: a scikit-learn multi-output regressor of each candidate's quality in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from conftest import unit_targets
from sklearn.utils.estimator_checks import parametrize_with_checks

from router_ml.core.heads import QualityHeads
from router_ml.learn.estimator import QualityEstimator

# scikit-learn's checks draw regression targets from the real line (standard normal values,
# class labels 0, 1, 2, ...); qualities must be in [0, 1], so fit refuses them with a
# ValueError. Everything else those checks test is run below on targets mapped into [0, 1].
RANGE = "regression targets outside [0, 1]: qualities must be in [0, 1]"
RANGE_CHECKS = (
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes",
    "check_sample_weights_pandas_series", "check_sample_weights_not_an_array",
    "check_sample_weights_list", "check_sample_weights_shape",
    "check_sample_weights_not_overwritten", "check_sample_weight_equivalence_on_dense_data",
    "check_sample_weight_equivalence_on_sparse_data", "check_dtype_object",
    "check_estimator_sparse_tag", "check_estimator_sparse_array",
    "check_estimator_sparse_matrix", "check_f_contiguous_array_estimator",
    "check_regressors_train", "check_regressor_data_not_an_array",
    "check_regressor_multioutput", "check_supervised_y_2d", "check_regressors_int",
    "check_non_transformer_estimators_n_iter", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_fit2d_1feature", "check_dict_unchanged",
    "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
    "check_fit2d_predict1d",
)
# Not about the range: the API gives regressors' unclipped values the knob compares
# (router_ml.core.router.Router.decision_function), which this check forbids for regressors.
API = {"check_regressors_no_decision_function":
       "decision_function is part of the API: the unclipped expected qualities"}


def _expected_failures(estimator) -> dict:
    return {**{name: RANGE for name in RANGE_CHECKS}, **API}


@parametrize_with_checks([QualityEstimator()], expected_failed_checks=_expected_failures)
def test_sklearn_conformance(estimator, check):
    check(estimator)


class UnitTargets(QualityEstimator):
    """The estimator on targets mapped into [0, 1] by a fixed logistic function (finite
    values only: NaN and infinity reach fit as they are), so that scikit-learn's checks reach
    everything behind the range check: clone, get_params, n_features_in_, sparse input,
    sample weights (also their equivalence with repeated rows), dtypes, memmaps, idempotence."""

    def fit(self, X, y, sample_weight=None):
        return super().fit(X, unit_targets(y), sample_weight=sample_weight)


UNIT_FAILURES = {
    # the R^2 is computed against the unmapped targets, which the fit never saw
    "check_regressors_train": "scored against the targets before the mapping",
    **API,
}


@parametrize_with_checks([UnitTargets()], expected_failed_checks=lambda e: UNIT_FAILURES)
def test_sklearn_conformance_on_unit_targets(estimator, check):
    check(estimator)


def planted(n=300, seed=0, d=6):
    """X (n, d); column 0 of Y is right where x0 > 0, column 1 where x1 > 0 (0/1 outcomes)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = np.column_stack([(X[:, 0] > 0), (X[:, 1] > 0), np.ones(n)]).astype(float)
    return X, Y


def test_clone_get_params_and_fit_returns_self():
    est = QualityEstimator(target="quality", C=0.3)
    c = clone(est)
    assert c is not est and c.get_params() == est.get_params()
    X, Y = planted()
    assert est.fit(X, Y) is est
    assert not hasattr(clone(est), "heads_")  # fitted state is not cloned
    assert est.n_features_in_ == 6 and est.n_outputs_ == 3
    assert (np.asarray(est.n_iter_) >= 1).all()


@pytest.mark.parametrize("target", ["gain", "quality"])
def test_predicts_each_models_planted_quality(target):
    X, Y = planted()
    est = QualityEstimator(target=target, C=10.0).fit(X, Y)
    Xt, Yt = planted(200, seed=1)
    P = est.predict(Xt)
    assert P.shape == (200, 3) and P.dtype == np.float64
    assert ((P >= 0) & (P <= 1)).all()
    # each model's prediction separates its right from its wrong prompts
    for j in (0, 1):
        assert P[Yt[:, j] == 1, j].mean() > P[Yt[:, j] == 0, j].mean() + 0.5
    np.testing.assert_allclose(P[:, 2], 1.0, atol=0.05)
    assert est.kinds_ == (["quality", "gain", "gain"] if target == "gain" else ["quality"] * 3)
    np.testing.assert_array_equal(est.predict(Xt), np.clip(est.decision_function(Xt), 0, 1))


def test_numpy_heads_equal_the_fitted_classifiers():
    X, Y = planted()
    est = QualityEstimator().fit(X, Y)
    assert isinstance(est.heads_, QualityHeads)
    Xt, _ = planted(50, seed=2)
    cols = [np.asarray(e.predict_proba(Xt)) @ np.asarray(e.classes_, dtype=float)
            for e in est.estimators_]
    np.testing.assert_allclose(est.heads_.decision_function(Xt),
                               QualityHeads.combine(est.kinds_, np.column_stack(cols)), atol=1e-12)


def test_gain_target_for_a_pair_is_the_expected_difference():
    """For 0/1 outcomes the gain head learns sign(q_m - q_ref), so q_ref - q_m is
    P(m worse) - P(m better): here, on two groups a logistic head fits exactly."""
    rng = np.random.default_rng(0)
    n = 6000
    group = rng.random(n) < 0.5
    X = np.column_stack([group, rng.standard_normal(n)]).astype(float)
    strong = (rng.random(n) < 0.8).astype(float)
    # group 1: the weak model answers like the strong one; group 0: right 30 % of the time
    weak = np.where(group, strong, rng.random(n) < 0.3).astype(float)
    est = QualityEstimator(C=100.0).fit(X, np.column_stack([strong, weak]))
    V = est.decision_function(np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert abs(V[0, 0] - V[0, 1]) < 0.02
    worse, better = 0.8 * 0.7, 0.2 * 0.3
    assert V[1, 0] - V[1, 1] == pytest.approx(worse - better, abs=0.03)
    assert V[:, 0] == pytest.approx([0.8, 0.8], abs=0.03)


def test_missing_outcomes_are_left_out_of_that_models_head():
    X, Y = planted()
    Ym = Y.copy()
    Ym[::3, 1] = np.nan
    a = QualityEstimator(target="quality").fit(X, Ym)
    b = QualityEstimator(target="quality").fit(X[np.isfinite(Ym[:, 1])], Y[np.isfinite(Ym[:, 1])])
    Xt, _ = planted(40, seed=3)
    np.testing.assert_allclose(a.predict(Xt)[:, 1], b.predict(Xt)[:, 1], atol=1e-10)


def test_soft_qualities_count_as_fractions_of_a_success():
    """A row with quality q equals q of a success plus 1 - q of a failure."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 3))
    q = rng.random(100)
    a = QualityEstimator(target="quality").fit(X, q[:, None])
    X2 = np.vstack([X, X])
    y2 = np.r_[np.ones(100), np.zeros(100)][:, None]
    b = QualityEstimator(target="quality").fit(X2, y2, sample_weight=np.r_[q, 1 - q])
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-6)


def test_one_dimensional_y_gives_one_dimensional_predictions():
    X, Y = planted()
    est = QualityEstimator().fit(X, Y[:, 0])
    assert est.predict(X[:5]).shape == (5,)


def test_other_classifiers_predict_without_numpy_heads():
    from sklearn.neighbors import KNeighborsClassifier

    X, Y = planted()
    est = QualityEstimator(classifier=KNeighborsClassifier(15)).fit(X, Y)
    assert est.heads_ is None
    P = est.predict(planted(50, seed=4)[0])
    assert P.shape == (50, 3) and ((P >= 0) & (P <= 1)).all()


def test_bad_targets_and_weights_are_clear_errors():
    X, Y = planted(40)
    with pytest.raises(ValueError, match=r"qualities must be in \[0, 1\]"):
        QualityEstimator().fit(X, Y * 2)
    with pytest.raises(ValueError, match="infinite"):
        QualityEstimator().fit(X, np.where(Y == 1, np.inf, 0))
    Yn = Y.copy()
    Yn[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"columns \[1\] hold no quality"):
        QualityEstimator().fit(X, Yn)
    with pytest.raises(ValueError, match="reference column 5 does not exist"):
        QualityEstimator(reference=5).fit(X, Y)
    with pytest.raises(ValueError, match="all are zero"):
        QualityEstimator().fit(X, Y, sample_weight=np.zeros(40))
    with pytest.raises(ValueError, match="sample_weight must be 40 finite non-negative"):
        QualityEstimator().fit(X, Y, sample_weight=-np.ones(40))
    with pytest.raises(ValueError, match="target"):
        QualityEstimator(target="strong_better").fit(X, Y)


# ------------------------------------------------------------------ neighbours

def _cosine_nearest(X, R, k):
    """Brute force: indices of the k rows of R with the highest cosine similarity to each row."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Rn = R / np.linalg.norm(R, axis=1, keepdims=True)
    return np.argsort(-(Xn @ Rn.T), axis=1, kind="stable")[:, :k]


def test_neighbours_average_each_head_with_scikit_learns_nearest_neighbours():
    """A gain head's neighbour value is scikit-learn's uniform cosine kNN on sign(q_m - q_ref),
    a quality head's the mean quality; each head's value is half logistic, half that."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(300, 8)), (rng.random((300, 2)) < 0.5).astype(float)
    Xt = rng.normal(size=(40, 8))
    plain = QualityEstimator().fit(X, Y).heads_.head_values(Xt)
    mixed = QualityEstimator(neighbours=20).fit(X, Y).heads_.head_values(Xt)
    sign = np.sign(Y[:, 1] - Y[:, 0]).astype(int)
    knn = KNeighborsClassifier(20, metric="cosine").fit(X, sign)
    np.testing.assert_allclose(mixed[:, 1], 0.5 * plain[:, 1]
                               + 0.5 * knn.predict_proba(Xt) @ knn.classes_, atol=1e-6)
    near = _cosine_nearest(Xt, X, 20)
    np.testing.assert_allclose(mixed[:, 0], 0.5 * plain[:, 0] + 0.5 * Y[near, 0].mean(axis=1),
                               atol=1e-6)


def test_neighbours_of_a_head_are_the_rows_that_have_its_label(monkeypatch):
    """With missing outcomes each head averages its k nearest rows that have a label, and
    scoring in batches gives what scoring one prompt at a time gives."""
    from router_ml.core.heads import Neighbours

    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(200, 6)), rng.random((200, 3))
    Y[rng.random((200, 3)) < 0.3] = np.nan
    Y[np.isnan(Y).all(axis=1), 0] = 0.5
    est = QualityEstimator(target="quality", neighbours=10).fit(X, Y)
    Xt = rng.normal(size=(25, 6))
    nb = est.heads_.neighbours
    got = nb.values(Xt)
    for j in range(3):
        have = np.flatnonzero(np.isfinite(Y[:, j]))
        near = have[_cosine_nearest(Xt, X[have], 10)]
        np.testing.assert_allclose(got[:, j], Y[near, j].mean(axis=1), atol=1e-6)
    monkeypatch.setattr(Neighbours, "BATCH", 4)
    np.testing.assert_allclose(nb.values(Xt), got, rtol=0, atol=0)
    np.testing.assert_allclose(np.vstack([nb.values(x[None]) for x in Xt]), got, atol=0)


def test_neighbours_keep_at_most_max_rows_and_refuse_what_they_cannot_do(monkeypatch):
    import scipy.sparse as sp
    from sklearn.neighbors import KNeighborsClassifier

    from router_ml.learn import estimator as module

    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(120, 5)), (rng.random((120, 2)) < 0.5).astype(float)
    monkeypatch.setattr(module, "MAX_NEIGHBOUR_ROWS", 50)
    est = QualityEstimator(neighbours=500).fit(X, Y)
    assert est.heads_.neighbours.reference.shape == (50, 5)
    # more neighbours than rows: every row, the same mean for every prompt
    v = est.heads_.neighbours.values(rng.normal(size=(3, 5)))
    assert np.ptp(v, axis=0).max() == 0
    with pytest.raises(ValueError, match="with classifier KNeighborsClassifier set neighbours=0"):
        QualityEstimator(neighbours=5, classifier=KNeighborsClassifier(3)).fit(X, Y)
    with pytest.raises(ValueError, match="needs dense features"):
        QualityEstimator(neighbours=5).fit(sp.csr_matrix(X), Y)
    with pytest.raises(ValueError, match="neighbours"):
        QualityEstimator(neighbours=-1).fit(X, Y)


def test_the_configs_neighbours_default_to_100_for_a_pair_with_dense_features():
    from router_ml.learn.config import NEIGHBOURS, TrainConfig, build_estimator, build_router

    assert build_estimator(TrainConfig()).neighbours == NEIGHBOURS == 100
    assert build_estimator(TrainConfig(encoder="tfidf+surface")).neighbours == 0
    assert build_estimator(TrainConfig(), n_models=3).neighbours == 0
    assert build_estimator(TrainConfig(neighbours=7), n_models=3).neighbours == 7
    assert build_estimator(TrainConfig(classifier="knn")).neighbours == 0
    assert build_router(TrainConfig(), ["a", "b", "c"]).estimator.neighbours == 0
