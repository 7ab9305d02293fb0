"""Routing metrics: exact values on hand-made cases and properties (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_ml.core.metrics import apgr, cost_quality_curve, cpt, pgr
from router_ml.learn.evaluation import evaluate, plot_curves


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


# ------------------------------------------------------------------ multi-model metrics

import json  # noqa: E402

from hypothesis.extra.numpy import arrays  # noqa: E402

from router_ml.core.metrics import aiq, choose, hull_value, knob_breakpoints, sweep, upper_hull
from router_ml.learn.evaluation import evaluate_multi, plot_multi

# Two rows, three models of fixed price 1, 2, 4 USD; the router predicts the true qualities.
#   row 0: q = [0, 1, 1]   -> model 1 (tie with model 2, cheaper); model 0 from lam = 1
#   row 1: q = [0, .5, 1]  -> model 2; model 1 from lam = .25; model 0 from lam = .5
HAND_Q = np.array([[0.0, 1.0, 1.0], [0.0, 0.5, 1.0]])
HAND_C = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])


def test_choose_by_hand():
    qhat = [[0.5, 1.0], [0.75, 0.75]]
    costs = [[1.0, 3.0], [2.0, 1.0]]
    assert choose(qhat, costs, 0).tolist() == [1, 1]  # row 1: a tie goes to the cheaper model
    assert choose(qhat, costs, 0.125).tolist() == [1, 1]
    assert choose(qhat, costs, 0.25).tolist() == [0, 1]  # 0.25 = 0.25: tie, cheaper model
    assert choose(qhat, costs, np.inf).tolist() == [0, 1]
    np.testing.assert_array_equal(knob_breakpoints(qhat, costs), [0.25])
    # equal cost: the lower index among identical lines, the better prediction at infinity
    assert choose([[0.5, 0.5]], [[1.0, 1.0]], 0.3).tolist() == [0]
    assert choose([[0.25, 0.5, 0.0]], [[1.0, 1.0, 2.0]], np.inf).tolist() == [1]


def test_sweep_by_hand():
    s = sweep(HAND_Q, HAND_Q, HAND_C)
    np.testing.assert_allclose(knob_breakpoints(HAND_Q, HAND_C), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(s.lam, [0, 0.375, 0.75, np.inf])
    np.testing.assert_allclose(s.cost, [3, 2, 1.5, 1])
    np.testing.assert_allclose(s.quality, [1, 0.75, 0.5, 0])
    np.testing.assert_allclose(s.choice_share, [[0, 0.5, 0.5], [0, 1, 0], [0.5, 0.5, 0], [1, 0, 0]])


def test_evaluate_multi_by_hand():
    r = evaluate_multi(HAND_Q, HAND_Q, HAND_C, ["a", "b", "c"])
    assert r.n == 2 and r.models == ("a", "b", "c") and r.best_model == "c"
    np.testing.assert_allclose(r.model_cost, [1, 2, 4])
    np.testing.assert_allclose(r.model_quality, [0, 0.75, 1])
    assert (r.lo, r.hi, r.best_cost, r.best_quality) == (1, 4, 4, 1)
    np.testing.assert_allclose(r.hull_cost, [1, 1.5, 2, 3])  # slopes 1, .5, .25: all vertices
    np.testing.assert_allclose(r.hull_quality, [0, 0.5, 0.75, 1])
    # trapezoids on [1, 1.5], [1.5, 2], [2, 3] and the flat [3, 4]: 2.3125 over a width of 3
    assert r.aiq == pytest.approx(2.3125 / 3) and r.oracle_aiq == pytest.approx(2.3125 / 3)
    assert r.max_quality == 1 and r.cost_share_at_best == pytest.approx(0.75)
    assert r.saving == pytest.approx(0.25)


def test_saving_reached_inside_a_hull_segment():
    # Models cost 1, 2, 5; the best single model (c, 0.75) costs 5. The oracle's points are
    # (1, .25), (1.25, .5), (3.25, 1): its hull reaches .75 halfway along the second segment,
    # at cost 2.25 = 45 % of model c's cost.
    q = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=float)
    c = np.tile([1.0, 2.0, 5.0], (4, 1))
    r = evaluate_multi(q, q, c, ["a", "b", "c"])
    assert r.best_model == "c" and r.best_quality == 0.75
    np.testing.assert_allclose(r.oracle_hull_cost, [1, 1.25, 3.25])
    assert r.oracle_cost_share_at_best == pytest.approx(0.45)
    assert r.oracle_saving == pytest.approx(0.55)
    assert r.oracle_aiq == pytest.approx((0.375 * 0.25 + 0.75 * 2 + 1.75) / 4)
    # a router that predicts nothing sends everything to the cheapest model and never reaches c
    flat = evaluate_multi(np.zeros_like(q), q, c, ["a", "b", "c"])
    assert len(flat.sweep.lam) == 1 and flat.sweep.lam[0] == 0
    assert flat.aiq == pytest.approx(0.25) and flat.max_quality == 0.25
    assert np.isnan(flat.cost_share_at_best) and np.isnan(flat.saving)
    d = flat.to_dict()
    assert d["saving"] is None and d["cost_share_at_best"] is None
    json.dumps(d, allow_nan=False)


def test_best_single_model_ties_go_to_the_cheaper():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = evaluate_multi(q, q, [[3.0, 1.0], [3.0, 1.0]], ["dear", "cheap"])
    assert r.best_model == "cheap" and r.best_cost == 1


def test_upper_hull_by_hand():
    # dominated (1, .25) at a tied cost, (2, .75) collinear, (2.5, .5) below, (4, .875) past the top
    x = [0, 1, 1, 2, 2.5, 3, 4]
    y = [0, 0.25, 0.5, 0.75, 0.5, 1.0, 0.875]
    hx, hy = upper_hull(x, y)
    np.testing.assert_array_equal(hx, [0, 1, 3])
    np.testing.assert_array_equal(hy, [0, 0.5, 1])
    hx, hy = upper_hull([2.0], [0.5])
    assert hx.tolist() == [2.0] and hy.tolist() == [0.5]


def test_hull_value_by_hand():
    hx, hy = [1.0, 3.0], [0.5, 1.0]
    assert np.isnan(hull_value(hx, hy, 0.5))
    assert hull_value(hx, hy, 2.0) == pytest.approx(0.75)
    assert hull_value(hx, hy, 10.0) == 1.0
    np.testing.assert_allclose(hull_value(hx, hy, np.array([[1.0, 3.0]])), [[0.5, 1.0]])


def test_aiq_by_hand():
    assert aiq([1, 3], [0.5, 1], 1, 5) == pytest.approx((0.75 * 2 + 2) / 4)
    # the hull starts left of lo: integrate the interpolated hull from lo
    assert aiq([0, 2], [0, 1], 1, 2) == pytest.approx(0.75)
    # the first point is at lo within 1e-12 (relative): counts from lo
    assert aiq([1 + 1e-13, 3], [0.5, 1], 1, 3) == pytest.approx(0.75)
    # clearly above lo: the unreached part adds nothing, the width stays hi - lo
    assert aiq([2, 3], [0.5, 1], 1, 3) == pytest.approx(0.75 / 2)
    assert aiq([4, 5], [0.5, 1], 1, 3) == 0.0
    assert aiq([1, 3], [0.5, 1], 2, 2) == pytest.approx(0.75)  # zero width: the value at lo
    with pytest.raises(ValueError, match="lo <= hi"):
        aiq([1, 3], [0.5, 1], 3, 1)


def test_plot_multi_writes_png(tmp_path):
    r = evaluate_multi(HAND_Q + 0.125, HAND_Q, HAND_C, ["a", "b", "c"])
    path = tmp_path / "m.png"
    fig = plot_multi(r, path, per_month=1e6, title="hand")
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig is not None


def test_plot_multi_on_given_axes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        r = evaluate_multi(HAND_Q, HAND_Q, HAND_C, ["a", "b", "c"])
        assert plot_multi(r, ax=ax) is fig
        labels = {t.get_text() for t in ax.texts}
        assert labels == {"a", "b", "c (best)"}
    finally:
        plt.close(fig)


def test_multi_bad_inputs():
    q, c = HAND_Q, HAND_C
    with pytest.raises(ValueError, match="q_true"):
        evaluate_multi(q, q[:1], c, "abc")
    with pytest.raises(ValueError, match="costs"):
        evaluate_multi(q, q, c[:, :2], "abc")
    with pytest.raises(ValueError, match="qhat"):
        evaluate_multi(q[0], q, c, "abc")
    with pytest.raises(ValueError, match="models"):
        evaluate_multi(q, q, c, "ab")
    nan = q.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="qhat holds NaN"):
        choose(nan, c, 0)
    with pytest.raises(ValueError, match="q_true holds NaN"):
        sweep(q, nan, c)
    with pytest.raises(ValueError, match="costs holds NaN"):
        knob_breakpoints(q, np.where(np.isnan(nan), np.nan, c))
    with pytest.raises(ValueError, match="costs holds negative"):
        choose(q, -c, 0)
    with pytest.raises(ValueError, match="lam"):
        choose(q, c, -1)
    with pytest.raises(ValueError, match="lam"):
        choose(q, c, np.nan)
    with pytest.raises(ValueError, match="differ in length"):
        upper_hull([1, 2], [1])
    with pytest.raises(ValueError, match="quality holds NaN"):
        upper_hull([1, 2], [1, np.nan])


def test_multi_to_dict_is_json():
    r = evaluate_multi(HAND_Q, HAND_Q, HAND_C, ["a", "b", "c"])
    d = r.to_dict()
    assert d["sweep"]["lam"][-1] is None  # inf
    assert d["hull_cost"] == [1.0, 1.5, 2.0, 3.0] and d["models"] == ["a", "b", "c"]
    back = json.loads(json.dumps(d, allow_nan=False))
    assert back["aiq"] == pytest.approx(r.aiq)


def test_multi_on_5000_rows_9_models():
    rng = np.random.default_rng(0)
    n, m = 5000, 9
    q = (rng.random((n, m)) < np.linspace(0.3, 0.9, m)).astype(float)
    c = np.geomspace(1e-4, 3e-2, m) * rng.uniform(0.5, 2, (n, 1))
    qhat = 0.3 * q + 0.7 * rng.random((n, m))
    r = evaluate_multi(qhat, q, c, [f"m{i}" for i in range(m)])
    assert r.aiq <= r.oracle_aiq and len(r.sweep.lam) > 1000


# ------------------------------------------------------------------ multi-model properties

@st.composite
def multi_cases(draw, max_n=10, max_m=5):
    """(qhat, q_true, costs) on dyadic grids: ties happen, and every breakpoint is exact."""
    n, m = draw(st.integers(1, max_n)), draw(st.integers(1, max_m))
    qhat = draw(arrays(np.float64, (n, m), elements=st.integers(0, 8).map(lambda i: i / 8)))
    q_true = draw(arrays(np.float64, (n, m), elements=st.sampled_from([0.0, 0.5, 1.0])))
    if draw(st.booleans()):  # any cost per cell, zero and ties included
        costs = draw(arrays(np.float64, (n, m), elements=st.integers(0, 6).map(lambda i: i / 4)))
    else:  # price per model times a length factor per row, as docs/protocols.md's cost(m, p)
        price = draw(arrays(np.float64, (1, m), elements=st.integers(1, 4).map(lambda i: i / 4)))
        length = draw(arrays(np.float64, (n, 1), elements=st.sampled_from([1.0, 2.0])))
        costs = price * length
    return qhat, q_true, costs


def _brute_choice(qhat, costs, key):
    """Per row, the column whose key(q, cost, index) is smallest: choose() written out."""
    n, m = qhat.shape
    return np.array([min(range(m), key=lambda j: key(qhat[i, j], costs[i, j], j))
                     for i in range(n)])


@settings(max_examples=150, deadline=None)
@given(multi_cases(), st.data())
def test_oracle_aiq_is_at_least_any_router(case, data):
    _, q_true, costs = case
    qhat = data.draw(arrays(np.float64, q_true.shape, elements=st.floats(0, 1)))
    r = evaluate_multi(qhat, q_true, costs, [str(j) for j in range(q_true.shape[1])])
    assert r.oracle_aiq >= r.aiq - 1e-9
    assert r.oracle_max_quality >= r.max_quality - 1e-12


@settings(max_examples=150, deadline=None)
@given(multi_cases())
def test_true_qualities_give_the_oracle_report(case):
    _, q_true, costs = case
    r = evaluate_multi(q_true, q_true, costs, [str(j) for j in range(q_true.shape[1])])
    assert r.aiq == r.oracle_aiq and r.max_quality == r.oracle_max_quality
    np.testing.assert_array_equal(r.hull_cost, r.oracle_hull_cost)
    np.testing.assert_array_equal(r.hull_quality, r.oracle_hull_quality)
    np.testing.assert_array_equal(r.cost_share_at_best, r.oracle_cost_share_at_best)  # NaN-safe
    np.testing.assert_array_equal(r.saving, r.oracle_saving)
    # the oracle's lam = 0 point is at least as good as the best single model: always reached
    assert r.max_quality >= r.best_quality
    if r.best_cost > 0:
        assert 0 <= r.cost_share_at_best <= 1 + 1e-12


@settings(max_examples=150, deadline=None)
@given(multi_cases())
def test_sweep_ends_are_argmax_and_all_cheapest(case):
    qhat, q_true, costs = case
    rows = np.arange(len(qhat))
    s = sweep(qhat, q_true, costs)
    assert s.lam[0] == 0 and np.all(np.diff(s.lam) > 0) and np.all(np.diff(s.cost) <= 1e-12)
    top = _brute_choice(qhat, costs, lambda q, c, j: (-q, c, j))
    cheap = _brute_choice(qhat, costs, lambda q, c, j: (c, -q, j))
    np.testing.assert_array_equal(choose(qhat, costs, 0), top)
    np.testing.assert_array_equal(choose(qhat, costs, np.inf), cheap)
    assert s.cost[0] == pytest.approx(costs[rows, top].mean(), abs=1e-12)
    assert s.quality[0] == pytest.approx(q_true[rows, top].mean(), abs=1e-12)
    assert s.cost[-1] == pytest.approx(costs[rows, cheap].mean(), abs=1e-12)
    assert s.quality[-1] == pytest.approx(q_true[rows, cheap].mean(), abs=1e-12)
    if len(s.lam) > 1:
        assert s.lam[-1] == np.inf
    hx, _ = upper_hull(s.cost, s.quality)
    assert hx[0] == pytest.approx(costs.min(axis=1).mean(), abs=1e-12)
    np.testing.assert_allclose(s.choice_share.sum(axis=1), 1.0)


@settings(max_examples=150, deadline=None)
@given(multi_cases(), st.randoms(use_true_random=False))
def test_aiq_independent_of_row_order(case, rnd):
    qhat, q_true, costs = case
    idx = list(range(len(qhat)))
    rnd.shuffle(idx)
    names = [str(j) for j in range(qhat.shape[1])]
    a = evaluate_multi(qhat, q_true, costs, names)
    b = evaluate_multi(qhat[idx], q_true[idx], costs[idx], names)
    assert b.aiq == pytest.approx(a.aiq, abs=1e-9)
    assert b.oracle_aiq == pytest.approx(a.oracle_aiq, abs=1e-9)
    np.testing.assert_allclose(b.hull_cost, a.hull_cost, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(multi_cases(), st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_breakpoints_are_exact(case, us):
    qhat, q_true, costs = case
    m = qhat.shape[1]
    bps = knob_breakpoints(qhat, costs)
    assert np.all(bps > 0) and np.all(np.diff(bps) > 0)
    per_row = [knob_breakpoints(qhat[i:i + 1], costs[i:i + 1]) for i in range(len(qhat))]
    assert all(len(b) <= m - 1 for b in per_row)
    np.testing.assert_array_equal(np.unique(np.concatenate(per_row)), bps)
    edges = np.r_[0.0, bps]
    for i, b in enumerate(bps):
        gap_left = b - edges[i]
        gap_right = (bps[i + 1] - b) if i + 1 < len(bps) else b
        below = choose(qhat, costs, b - gap_left / 3)
        above = choose(qhat, costs, b + gap_right / 3)
        assert (below != above).any()
        # (at b itself the tie goes to the cheaper model only where b is exact in floating
        # point, e.g. b = 1/6 is not: test_choose_by_hand checks an exact one)
    # between breakpoints the choice is constant: the sweep's policy of that interval
    s = sweep(qhat, q_true, costs)
    rows = np.arange(len(qhat))
    for u in us:
        k = min(int(u * (len(bps) + 1)), len(bps))  # the interval [edges[k], next breakpoint)
        left = edges[k]
        right = bps[k] if k < len(bps) else 2 * max(left, 1.0)
        lam = left + (0.05 + 0.9 * u) * (right - left)
        ch = choose(qhat, costs, lam)
        np.testing.assert_array_equal(ch, choose(qhat, costs, s.lam[k]))
        assert s.cost[k] == pytest.approx(costs[rows, ch].mean(), abs=1e-12)
        assert s.quality[k] == pytest.approx(q_true[rows, ch].mean(), abs=1e-12)
        np.testing.assert_allclose(s.choice_share[k], np.bincount(ch, minlength=m) / len(ch))


def test_spearman_is_scipys_and_zero_without_a_warning_for_a_constant_input():
    import warnings

    from scipy.stats import spearmanr

    from router_ml.learn.evaluation import spearman

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.integers(0, 5, 50)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spearman(np.ones(10), a[:10]) == 0.0
