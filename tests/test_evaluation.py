"""Routing metrics: exact values on hand-made cases and properties (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_ml.evaluation import apgr, cost_quality_curve, cpt, evaluate, pgr, plot_curves


def test_curve_by_hand():
    # Three prompts; gains (strong - weak) 1, 0, -1 in score order.
    scores = [0.9, 0.5, 0.1]
    qs = [1.0, 1.0, 0.0]
    qw = [0.0, 1.0, 1.0]
    c = cost_quality_curve(scores, qs, qw)
    np.testing.assert_allclose(c.share, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(c.quality, [2 / 3, 1.0, 1.0, 2 / 3])


def test_equal_scores_form_a_block_interpolated_linearly():
    scores = [0.5, 0.5, 0.5, 0.5]
    qs = [1, 1, 0, 1]
    qw = [0, 1, 0, 0]
    c = cost_quality_curve(scores, qs, qw)
    # the block holds gain 2 over 4 prompts: quality rises 0.5/4 per step
    np.testing.assert_allclose(c.quality, [0.25, 0.375, 0.5, 0.625, 0.75])


def test_apgr_and_cpt_values():
    scores = [4, 3, 2, 1]
    qs = [1, 1, 1, 1]
    qw = [0, 0, 1, 1]
    # PGR: 0, .5, 1, 1, 1 at shares 0,.25,.5,.75,1 -> trapezoid area = 0.75
    assert apgr(scores, qs, qw) == pytest.approx(0.75)
    c = cost_quality_curve(scores, qs, qw)
    p = pgr(c, 1.0, 0.5)
    assert cpt(c.share, p, 0.5) == pytest.approx(0.25)
    assert cpt(c.share, p, 0.75) == pytest.approx(0.375)  # interpolated between points


def test_report_fields():
    rng = np.random.default_rng(0)
    qs = rng.integers(0, 2, 300).astype(float)
    qw = rng.integers(0, 2, 300).astype(float)
    r = evaluate(rng.random(300), qs, qw)
    assert r.n == 300 and r.random_apgr == pytest.approx(0.5)
    assert r.oracle_apgr >= r.apgr
    assert set(r.to_dict()) >= {"n", "q_weak", "q_strong", "apgr", "cpt50", "cpt80", "auc",
                                "random_apgr", "oracle_apgr"}


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        evaluate([0.1, 0.2], [1], [0])
    with pytest.raises(ValueError, match="NaN"):
        evaluate([np.nan], [1], [0])
    with pytest.raises(ValueError, match="zero prompts"):
        evaluate([], [], [])
    with pytest.raises(ValueError, match="same mean quality"):
        evaluate([0.1, 0.2], [1, 0], [0, 1])


def test_plot_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    qs = rng.integers(0, 2, 50).astype(float)
    qw = np.zeros(50)
    qs[0] = 1
    path = tmp_path / "c.png"
    plot_curves({"r": rng.random(50)}, qs, qw, path, threshold_share=0.3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ properties

def cases(min_size=2):
    return st.integers(min_size, 40).flatmap(lambda n: st.tuples(
        # scores on a grid: ties happen, and a monotone transform cannot merge two scores
        st.lists(st.integers(0, 50).map(lambda i: i / 50), min_size=n, max_size=n),
        st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=n, max_size=n),
        st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=n, max_size=n),
    )).filter(lambda t: np.mean(t[1]) > np.mean(t[2]))  # the strong model is the better one


@settings(max_examples=100, deadline=None)
@given(cases())
def test_constant_score_gives_exactly_half(case):
    _, qs, qw = case
    assert apgr(np.full(len(qs), 0.3), qs, qw) == pytest.approx(0.5, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_oracle_is_at_least_any_score(case):
    s, qs, qw = case
    oracle = apgr(np.subtract(qs, qw), qs, qw)
    assert oracle >= apgr(s, qs, qw) - 1e-9


@settings(max_examples=100, deadline=None)
@given(cases())
def test_curve_endpoints_are_weak_and_strong_quality(case):
    s, qs, qw = case
    c = cost_quality_curve(s, qs, qw)
    assert c.quality[0] == pytest.approx(np.mean(qw))
    assert c.quality[-1] == pytest.approx(np.mean(qs))
    assert len(c.share) == len(s) + 1


@settings(max_examples=100, deadline=None)
@given(cases(), st.floats(0.1, 10), st.floats(-5, 5))
def test_invariant_to_affine_quality_rescaling(case, a, b):
    s, qs, qw = case
    base = apgr(s, qs, qw)
    assert apgr(s, a * np.asarray(qs) + b, a * np.asarray(qw) + b) == pytest.approx(base, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_invariant_to_increasing_score_transform(case):
    s, qs, qw = case
    base = apgr(s, qs, qw)
    assert apgr(np.exp(3 * np.asarray(s)) - 7, qs, qw) == pytest.approx(base, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(cases(), st.randoms(use_true_random=False))
def test_independent_of_row_order(case, rnd):
    s, qs, qw = case
    idx = list(range(len(s)))
    rnd.shuffle(idx)
    perm = lambda a: np.asarray(a)[idx]  # noqa: E731
    assert apgr(perm(s), perm(qs), perm(qw)) == pytest.approx(apgr(s, qs, qw), abs=1e-9)
