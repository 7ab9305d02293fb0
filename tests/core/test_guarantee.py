"""The threshold with a stated guarantee (Learn-then-Test): on exchangeable data the quality
drop exceeds the target with probability at most delta."""

import numpy as np
import pytest

from router_ml.core.calibration import calibrate, threshold_with_guarantee
from router_ml.errors import CalibrationError


def _draw(rng, n):
    s = rng.random(n)
    qs = (rng.random(n) < 0.55 + 0.35 * s).astype(float)
    qw = (rng.random(n) < 0.55).astype(float)
    return s, qs, qw


def test_drop_exceeds_target_at_most_delta_of_the_time():
    rng = np.random.default_rng(0)
    # the true drop of a threshold t, from a very large sample of the same distribution
    s_big, qs_big, qw_big = _draw(rng, 400_000)
    misses = 0
    trials = 150
    for _ in range(trials):
        t, achieved = threshold_with_guarantee(*_draw(rng, 2000), max_drop=0.03, delta=0.1)
        weak = s_big < t
        true_drop = float(((qs_big - qw_big) * weak).mean())
        misses += true_drop > 0.03
        assert achieved["drop_upper_bound"] <= 0.03
    assert misses / trials <= 0.1


def test_guarantee_is_more_careful_than_the_point_estimate():
    s, qs, qw = _draw(np.random.default_rng(1), 3000)
    t_point, _ = calibrate(s, q_strong=qs, q_weak=qw, max_drop=0.02)
    t_safe, rec = calibrate(s, q_strong=qs, q_weak=qw, max_drop=0.02, delta=0.05)
    assert t_safe <= t_point
    assert rec.method == "guarantee" and rec.target == {"max_drop": 0.02, "delta": 0.05}


def test_unreachable_or_bad_targets_are_refused():
    s, qs, qw = _draw(np.random.default_rng(2), 30)
    with pytest.raises(CalibrationError, match="no threshold guarantees"):
        threshold_with_guarantee(s, qs, qw, max_drop=0.001, delta=0.01)
    with pytest.raises(CalibrationError, match="delta"):
        threshold_with_guarantee(s, qs, qw, max_drop=0.1, delta=1.5)
