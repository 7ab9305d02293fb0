"""The quality report: what it says about targets, and the score averaging of ensembles."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality",
                                                  ROOT / "benchmarks" / "bench_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def row(apgr, cpt50=0.3, cpt80=0.6):
    return {"apgr": apgr, "cpt50": cpt50, "cpt80": cpt80, "q_weak": 0.7, "q_strong": 0.8,
            "oracle_apgr": 1.2}


def report(default_mmlu, default_gsm8k):
    rows = lambda d, other: {"random": row(0.5), "length": row(0.6), "default": d, "stats": other}
    return {"protocols": {
        "mmlu": {"n": 10, "rows": rows(default_mmlu, row(0.74)), "published": None, "target_apgr": 0.72},
        "gsm8k": {"n": 5, "rows": rows(default_gsm8k, row(0.61)), "published": {"apgr": 0.622, "cpt50": 0.336},
                  "target_apgr": 0.70}},
        "diagnostics": {}}


def test_targets_need_apgr_and_the_mmlu_cpt(bench):
    md = bench.to_markdown(report(row(0.73, cpt50=0.25), row(0.71)))
    assert "- mmlu: default APGR 0.730 (CPT(50%) 25.0 %, target at most 22 %), target 0.72: not met" in md
    assert "- gsm8k: default APGR 0.710, target 0.7: met" in md
    assert "Best of the 2 configurations below: stats with 0.740" in md
    md = bench.to_markdown(report(row(0.73, cpt50=0.20), row(0.69)))
    assert "target 0.72: met" in md and "target 0.7: not met" in md


def test_main_table_has_cpt80_and_both_qualities(bench):
    md = bench.to_markdown(report(row(0.73, cpt80=0.555), row(0.71)))
    line = next(x for x in md.splitlines() if x.startswith("| mmlu |"))
    assert "| 0.700 | 0.800 |" in line and "55.5 %" in line and "| 1.200 |" in line


def test_rank_mean_is_a_rank_average(bench):
    a = np.array([0.1, 0.5, 0.9, 0.3])
    np.testing.assert_allclose(bench.rank_mean(a, a * 100), [0, 2 / 3, 1, 1 / 3])
    np.testing.assert_allclose(bench.rank_mean(a, -a), [0.5] * 4)


def test_paired_bootstrap_se(bench):
    rng = np.random.default_rng(0)
    qs, qw = (rng.random(400) < 0.85).astype(float), (rng.random(400) < 0.6).astype(float)
    good = (qs - qw) + rng.normal(0, 1, 400)
    assert bench.paired_se(good, good, qs, qw) == 0.0
    se = bench.paired_se(good, rng.random(400), qs, qw)
    assert 0.005 < se < 0.2
