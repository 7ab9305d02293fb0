"""The quality report: the suite rule that picks the default, and the paired bootstrap."""


import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_quality")


def row(apgr, se=None, cpt50=0.3):
    r = {"apgr": apgr, "cpt50": cpt50, "n": 10, "oracle_apgr": 1.2}
    if se is not None:
        r["minus_default"], r["minus_default_se"] = 0.0, se
    return r


def results(default_a, default_b, stats_a, stats_b):
    def proto(d, s):
        return {"pair": True, "published": None, "target": 0.6,
                "rows": {"random": row(0.5), "length": row(0.55), "default": d, "stats": s}}
    return {"a": proto(row(default_a), row(stats_a, 0.01)),
            "b": proto(row(default_b), row(stats_b, 0.01))}


def test_suite_mean_and_the_rule(bench):
    suite = bench._suite(results(0.70, 0.60, 0.80, 0.54), ["default", "stats"])
    assert suite["default"] == (pytest.approx(0.65), [])
    # stats has the higher mean but falls below the length baseline on b
    assert suite["stats"] == (pytest.approx(0.67), ["b"])
    md = bench.to_markdown(results(0.70, 0.60, 0.80, 0.54), ["default", "stats"])
    assert "fails on b" in md and "meets the rule" in md
    assert "| **mean** |" in md
    # a failure says how far below the length baseline, with the paired error, where known
    res = results(0.70, 0.60, 0.80, 0.54)
    res["b"]["rows"]["stats"].update(minus_length=-0.01, minus_length_se=0.02)
    assert "fails on b (-0.010±0.020 against length)" in bench.to_markdown(res, ["default", "stats"])


def test_below_random_by_more_than_the_error_fails(bench):
    suite = bench._suite(results(0.70, 0.56, 0.70, 0.48), ["default", "stats"])
    assert suite["stats"][1] == ["b"]


def test_paired_bootstrap_se(bench):
    rng = np.random.default_rng(0)
    qs, qw = (rng.random(400) < 0.85).astype(float), (rng.random(400) < 0.6).astype(float)
    good = (qs - qw) + rng.normal(0, 1, 400)
    assert bench.paired_se(good, good, qs, qw) == 0.0
    se = bench.paired_se(good, rng.random(400), qs, qw)
    assert 0.005 < se < 0.2


def test_the_two_products_are_scored_by_their_own_protocols(bench):
    def rows(**by_config):
        return {"pair": True, "rows": {c: {"apgr": v} for c, v in by_config.items()}}

    res = {"arena-rated": {"chat": True, "pair": False,
                           "rows": {"a": {"rho": 0.4}, "b": {"rho": 0.0}}},
           "loso-mmlu": rows(a=0.5, b=0.7), "loso-gsm8k": rows(a=0.6, b=0.7),
           "loso-arena-hard": rows(a=0.7, b=0.7),
           "textbook": {"textbook": True, "pair": False,
                        "rows": {"a": {"auc": 0.8}, "b": {"auc": 0.9}}},
           "mmlu": rows(a=0.5, b=0.9)}
    a, b = bench.product_scores(res, "a"), bench.product_scores(res, "b")
    # real chat half, the left-out sources and the textbook prompts a quarter each
    assert a["zero-shot"] == pytest.approx(0.5 * 0.7 + 0.25 * 0.6 + 0.25 * 0.8)
    assert b["zero-shot"] == pytest.approx(0.5 * 0.5 + 0.25 * 0.7 + 0.25 * 0.9)
    assert a["zero-shot"] > b["zero-shot"]  # real chat decides, not the benchmarks' own rows
    # a score counts only when every protocol of it was run
    assert np.isnan(a["own logs"])
    del res["loso-gsm8k"]["rows"]["a"]
    assert np.isnan(bench.product_scores(res, "a")["zero-shot"])


def test_textbook_auc_counts_ties_half():
    tb = load_benchmark("bench_textbook")
    assert tb.auc([3, 2], [1, 0]) == 1.0
    assert tb.auc([0, 1], [2, 3]) == 0.0
    assert tb.auc([1, 1], [1, 0]) == 0.75


def test_the_default_is_chosen_by_zero_shot_among_those_that_keep_everyday_prompts_weak(bench):
    def rows(**v):
        return {"pair": True, "rows": {c: {"apgr": x} for c, x in v.items()}}

    res = {"arena-rated": {"chat": True, "pair": False,
                           "rows": {"a": {"rho": 0.5}, "b": {"rho": 0.4}, "c": {"rho": 0.1}}},
           "loso-mmlu": rows(a=0.6, b=0.6, c=0.6), "loso-gsm8k": rows(a=0.6, b=0.6, c=0.6),
           "loso-arena-hard": rows(a=0.6, b=0.6, c=0.6),
           "textbook": {"textbook": True, "pair": False, "rows": {
               c: {"auc": 0.8, "cheap_strong_share": share}
               for c, share in (("a", 0.30), ("b", 0.25), ("c", 0.0))}}}
    # a scores highest but sends 30 % of the everyday prompts to the strong model
    assert bench.choose_zero_shot(res, ["a", "b", "c"]) == "b"
    assert bench.choose_zero_shot(res, ["a"]) is None
