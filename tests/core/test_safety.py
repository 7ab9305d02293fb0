"""Safety: hostile prompts, bad training data, bad thresholds and targets, threads, fuzzing.

The contract checked here: every call either returns a finite score in [0, 1] or raises a
TypeError/ValueError (or one of router_ml's errors) whose message names the argument and what
is wrong; never NaN, never a score outside [0, 1], never a bare error from inside a library.
"""

from __future__ import annotations

import collections
import csv
import io
import itertools
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import PAIR, pair_qualities
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, ClassifierMixin

from router_ml import (
    CalibrationError,
    DataFormatError,
    DataNotFoundError,
    Router,
    RoutingDecision,
    UnknownModelError,
    load_router,
)
from router_ml.core.encoders import MAX_CHARS, TfidfEncoder
from router_ml.learn import sources, tables
from router_ml.learn.estimator import QualityEstimator
from router_ml.learn.rows import pair_data
from router_ml.learn.spec import RouterSpec

KINDS = ("tfidf", "static")
FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# One short sentence in each of 20 languages.
LANGUAGES = {
    "en": "What is the derivative of x squared?",
    "fr": "Quelle est la dérivée de x au carré ?",
    "de": "Was ist die Ableitung von x zum Quadrat?",
    "es": "¿Cuál es la derivada de x al cuadrado?",
    "it": "Qual è la derivata di x al quadrato?",
    "pt": "Qual é a derivada de x ao quadrado?",
    "nl": "Wat is de afgeleide van x kwadraat?",
    "pl": "Jaka jest pochodna x do kwadratu?",
    "tr": "x karenin türevi nedir?",
    "ru": "Какова производная икс в квадрате?",
    "uk": "Яка похідна ікс у квадраті?",
    "el": "Ποια είναι η παράγωγος του x στο τετράγωνο;",
    "ar": "ما هي مشتقة س تربيع؟",
    "he": "מהי הנגזרת של x בריבוע?",
    "hi": "x के वर्ग का अवकलज क्या है?",
    "bn": "x এর বর্গের অন্তরজ কী?",
    "th": "อนุพันธ์ของ x กำลังสองคืออะไร",
    "zh": "x的平方的导数是什么？",
    "ja": "xの二乗の導関数は何ですか？",
    "ko": "x 제곱의 도함수는 무엇입니까?",
}

VALID_PROMPTS = {
    "empty": "",
    "whitespace": " \t\n\r\u3000 ",
    "one MB": "prove the theorem " * 58_255,  # 1,048,590 characters
    "100k-char token": "x" * 100_000,
    "NUL and controls": "say\x00hello\x01\x02\x07\x08\x1b[31m\x7f\x9f to\x0c\x0b me",
    "lone surrogate": "prove \ud800 the \udfff theorem",
    "mixed scripts": ("Hello مرحبا שלום \u200f\u202eRTL\u202c 😀👍🏽👨‍👩‍👧 漢字 Ελληνικά "
                      "\ufeff\u200b"),
    **{f"lang-{k}": v for k, v in LANGUAGES.items()},
}

# (value, message the TypeError must match for route(value), for score([value])); a list
# item may also be a list of chat messages, which its message says
BAD_PROMPTS = {
    "None": (None, "prompt must be str, got NoneType", r"prompts\[0\] must be str.*, got NoneType"),
    "bytes": (b"hello", "prompt must be str, got bytes", r"prompts\[0\] must be str.*, got bytes"),
    "int": (7, "prompt must be str, got int", r"prompts\[0\] must be str.*, got int"),
    "NaN": (float("nan"), "prompt must be str, got float", r"prompts\[0\] must be str.*, got float"),
}


@pytest.fixture(scope="module")
def routers(make_router):
    """{"tfidf": Router, "static": Router}, fitted once for the module; do not mutate."""
    return {k: make_router(k) for k in KINDS}


def assert_valid_scores(s, n):
    assert isinstance(s, np.ndarray) and s.dtype == np.float64 and s.shape == (n,)
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all(), s


# ------------------------------------------------------------------ 1. route() and score() inputs

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(VALID_PROMPTS))
def test_odd_but_valid_prompts_get_a_score_in_0_1(routers, kind, case):
    router, prompt = routers[kind], VALID_PROMPTS[case]
    s = router.score([prompt])
    assert_valid_scores(s, 1)
    d = router.route(prompt)
    assert isinstance(d, RoutingDecision) and d.score == s[0]
    assert d.model == (router.strong_model if s[0] >= router.threshold else router.weak_model)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_odd_prompts_scores_like_one_by_one(routers, kind):
    router = routers[kind]
    prompts = list(VALID_PROMPTS.values())
    batch = router.score(prompts)
    assert_valid_scores(batch, len(prompts))
    # float32 features: a batch goes through a matrix product, one prompt through a vector
    # product, so the last bits of a float32 may differ; nothing more.
    np.testing.assert_allclose(batch, [router.score([p])[0] for p in prompts], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_long_prompts_are_cut_at_max_chars(routers, kind):
    """encoders.clean keeps the first MAX_CHARS characters: what follows never changes the score."""
    router = routers[kind]
    head = ("derive the equation of motion " * 400)[:MAX_CHARS]
    tails = ["", "x", "say hello " * 100_000, "\ud800" * 10]
    s = router.score([head + t for t in tails])
    assert (s == s[0]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_lone_surrogates_are_replaced(routers, kind):
    router = routers[kind]
    s = router.score(["prove \ud800 the \udfff theorem", "prove ? the ? theorem"])
    assert s[0] == s[1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_non_string_prompts_raise_type_error_naming_the_argument(routers, kind, case):
    router = routers[kind]
    value, route_msg, score_msg = BAD_PROMPTS[case]
    with pytest.raises(TypeError, match=route_msg):
        router.route(value)
    with pytest.raises(TypeError, match=score_msg):
        router.score([value])
    with pytest.raises(TypeError, match=score_msg.replace("0", "2")):
        router.route_batch(["ok", "fine", value])


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_containers_raise_type_error(routers, kind):
    router = routers[kind]
    with pytest.raises(TypeError, match=r"prompts\[1\] must be str.*, got int"):
        router.score(["hello", 3])
    with pytest.raises(TypeError, match="prompt must be str or a list of chat messages .*got list"):
        router.route(["hello", 3])
    with pytest.raises(TypeError, match="got a single str"):
        router.score("hello")
    with pytest.raises(TypeError, match="got a single bytes"):
        router.score(b"hello")
    for bad in (None, 5, {"a"}, (p for p in ["a"])):
        with pytest.raises(TypeError, match="prompts must be a list of str"):
            router.score(bad)
    assert router.score([]).shape == (0,)
    assert_valid_scores(router.score(("a tuple", "of prompts")), 2)
    assert_valid_scores(router.score(np.array(["a numpy", "array"])), 2)


def test_an_unfitted_router_cannot_route_or_save():
    spec = RouterSpec(models=PAIR)
    assert [n for n in ("score", "route", "route_batch", "save") if hasattr(spec, n)] == []
    with pytest.raises(TypeError, match="takes a RouterState"):
        Router(spec)


class _NaNClassifier(ClassifierMixin, BaseEstimator):
    """A classifier whose probabilities are NaN (a broken model)."""

    def fit(self, X, y, **kw):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.full((X.shape[0], len(self.classes_)), np.nan)


class _WildClassifier(_NaNClassifier):
    def predict_proba(self, X):
        rows = np.array([[-0.5, 1.5], [2.0, -1.0], [np.inf, -np.inf]])
        return np.tile(rows, (X.shape[0], 1))[:X.shape[0], :len(self.classes_)]


def test_a_broken_classifier_never_yields_nan_or_out_of_range(planted_set):
    prompts, y = planted_set
    r = RouterSpec(TfidfEncoder(min_df=1), QualityEstimator(classifier=_NaNClassifier()),
               models=PAIR).fit(list(prompts), pair_qualities(y))
    s = r.score(["a", "b"])
    assert_valid_scores(s, 2)
    assert (s == 1.0).all() and r.route("a").model == r.strong_model  # the safe side
    w = RouterSpec(TfidfEncoder(min_df=1), QualityEstimator(classifier=_WildClassifier()),
               models=PAIR).fit(list(prompts), pair_qualities(y))
    assert_valid_scores(w.score(["a", "b", "c"]), 3)


# ------------------------------------------------------------------ 2. training data

def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.usefixtures("isolated_datasets_cache")
class TestTrainingData:
    def test_empty_files_are_clear_errors(self, tmp_path):
        for name, text, msg in [("e.csv", "", "is empty"), ("e.jsonl", "", "is empty"),
                                ("h.csv", "prompt,big,small\n", "no data rows"),
                                ("b.jsonl", "\n\n", "cannot read as json")]:
            with pytest.raises(DataFormatError, match=rf"{name}: .*{msg}"):
                tables.load_table(_write(tmp_path, name, text))

    def test_missing_model_column_names_file_and_column(self, tmp_path):
        f = _write(tmp_path, "m.csv", "prompt,big\nhello,1\n")
        with pytest.raises(DataFormatError, match=r"m.csv: missing column 'small'"):
            tables.load_table(f, model_columns=["big", "small"])
        f = _write(tmp_path, "p.csv", "prompt\nhello\n")
        with pytest.raises(DataFormatError, match=r"p.csv: no model score columns"):
            tables.load_table(f)
        ds = tables.load_table(_write(tmp_path, "ok.csv", "prompt,big,small\nhi,1,0\nho,0,1\n"))
        with pytest.raises(UnknownModelError, match="unknown model 'huge'; known models"):
            pair_data(ds, "huge", "small")

    def test_all_scores_missing_is_an_error(self, tmp_path):
        f = _write(tmp_path, "none.csv", "prompt,big,small\nhi,,\nho,n/a,\n")
        with pytest.raises(DataFormatError, match=r"none.csv: no usable row \(no valid score: 2\)"):
            tables.load_table(f)
        f = _write(tmp_path, "none.jsonl", '{"prompt": "", "big": 1}\n{"prompt": null, "big": 0}\n')
        with pytest.raises(DataFormatError, match=r"no usable row \(empty or missing prompt: 2\)"):
            tables.load_table(f)

    @pytest.mark.parametrize("fmt", ["csv", "jsonl"])
    def test_nan_inf_negative_and_out_of_range_scores_are_left_empty(self, tmp_path, fmt):
        bad = ["nan", "inf", "-inf", "-1", "1.5", "-0.0001", "abc"]
        rows = [("ok", "1", "0")] + [(f"q{i}", v, "1") for i, v in enumerate(bad)]
        if fmt == "csv":
            f = _write(tmp_path, "s.csv", "prompt,big,small\n"
                       + "".join(f"{p},{a},{b}\n" for p, a, b in rows))
        else:
            lit = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "abc": '"abc"'}
            f = _write(tmp_path, "s.jsonl", "".join(
                f'{{"prompt": "{p}", "big": {lit.get(a, a)}, "small": {b}}}\n' for p, a, b in rows))
        ds = tables.load_table(f)
        q = sources.quality_matrix(ds, ["big", "small"])
        assert ds["prompt"] == [r[0] for r in rows]  # rows kept: "small" is valid
        np.testing.assert_array_equal(q[0], [1.0, 0.0])
        assert np.isnan(q[1:, 0]).all() and (q[1:, 1] == 1.0).all()  # never invented or clipped
        pairs = pair_data(ds, "big", "small")  # rows without both scores are dropped
        assert pairs.prompts == ["ok"]

    def test_judge_scale_out_of_range_and_unknown_scale(self, tmp_path):
        f = _write(tmp_path, "j.csv", "prompt,a,b\nx,0,10\ny,11,1\nz,-3,5.5\n")
        q = sources.quality_matrix(tables.load_table(f, scale="judge10"), ["a", "b"])
        assert np.isnan(q[:, 0]).all() and np.allclose(q[:, 1], [1.0, 0.0, 0.5])
        with pytest.raises(ValueError, match="scale must be 'unit' or 'judge10', got 'percent'"):
            tables.load_table(f, scale="percent")

    def test_conflicting_duplicates_are_merged_by_mean_whatever_the_order(self, tmp_path):
        rows = ["same question,1,0", " same question ,0,0", "same question,1,1", "other,1,0"]
        header = "prompt,big,small\n"
        a = tables.load_table(_write(tmp_path, "a.csv", header + "\n".join(rows) + "\n"))
        b = tables.load_table(_write(tmp_path, "b.csv", header + "\n".join(rows[::-1]) + "\n"))
        qa = dict(zip([p.strip() for p in a["prompt"]], sources.quality_matrix(a).tolist()))
        qb = dict(zip([p.strip() for p in b["prompt"]], sources.quality_matrix(b).tolist()))
        assert qa == qb and len(a) == 2
        np.testing.assert_allclose(qa["same question"], [2 / 3, 1 / 3])

    def test_one_outcome_only_predicts_a_tie_and_no_outcome_is_a_clear_error(self, tmp_path):
        f = _write(tmp_path, "one.csv",
                   "prompt,big,small\n" + "".join(f"q{i} word,1,1\n" for i in range(6)))
        pairs = pair_data(tables.load_table(f), "big", "small")
        # both models always right: nothing to learn, the router predicts exactly that
        r = RouterSpec(TfidfEncoder(min_df=1), models=pairs.models).fit(pairs.prompts, pairs.quality)
        np.testing.assert_array_equal(r.predict_quality(["q1 word", "new"]), 1.0)
        np.testing.assert_array_equal(r.score(["q1 word", "new"]), 0.5)
        q = pairs.quality.copy()
        q[:, 1] = np.nan
        with pytest.raises(ValueError, match=r"y columns \[1\] hold no quality at all"):
            RouterSpec(TfidfEncoder(min_df=1), models=pairs.models).fit(pairs.prompts, q)


def test_fit_argument_checks(planted_set):
    prompts, y = list(planted_set[0]), planted_set[1]
    Y = pair_qualities(y)
    cases = [
        (([], np.zeros((0, 2))), ValueError, "zero prompts"),
        ((prompts, Y[:-1]), ValueError, r"qualities must have shape \(80, 2\)"),
        ((prompts, y), ValueError, r"qualities must have shape \(80, 2\)"),
        ((prompts, Y * 2), ValueError, r"qualities must be in \[0, 1\]"),
        ((prompts, np.where(Y == 1, -1, 0)), ValueError, r"qualities must be in \[0, 1\]"),
        ((prompts, np.where(Y == 1, np.inf, 0)), ValueError, "infinite values"),
        ((prompts, np.where(Y >= 0, np.nan, 0)), ValueError, r"y columns \[0, 1\] hold no quality"),
        ((prompts[:-1] + [None], Y), TypeError, r"prompts\[79\] must be str, got NoneType"),
        (("one string", [[1, 0]]), TypeError, "got a single str"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            RouterSpec(TfidfEncoder(min_df=1), models=PAIR).fit(*args)
    for w in (np.full(80, np.nan), -np.ones(80), np.ones(3)):
        with pytest.raises(ValueError, match="sample_weight must be 80 finite non-negative"):
            RouterSpec(TfidfEncoder(min_df=1), models=PAIR).fit(prompts, Y, sample_weight=w)
    with pytest.raises(ValueError, match="all are zero"):
        RouterSpec(TfidfEncoder(min_df=1), models=PAIR).fit(prompts, Y, sample_weight=np.zeros(80))


def test_prompts_without_words_are_a_clear_tfidf_error():
    for prompts in (["", " "], ["a", "?"], ["😀", "\x00"]):
        with pytest.raises(ValueError, match=r"prompts: TF-IDF found no usable terms in 2"):
            RouterSpec(TfidfEncoder(), models=PAIR).fit(prompts, [[0, 1], [1, 0]])


def test_too_few_rows_for_the_classifier_or_the_calibration(planted_set):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    prompts, y = list(planted_set[0]), planted_set[1]
    clf = CalibratedClassifierCV(LogisticRegression(), cv=5)
    with pytest.raises(ValueError, match=r"CalibratedClassifierCV cannot be fitted on 6 rows"):
        RouterSpec(TfidfEncoder(min_df=1), QualityEstimator(classifier=clf),
               models=PAIR).fit(prompts[:6], pair_qualities(y[:6]))
    r = RouterSpec(TfidfEncoder(min_df=1), models=PAIR).fit(prompts, pair_qualities(y))
    with pytest.raises(CalibrationError, match="at least one prompt"):
        r.calibrate([], share=0.5)
    # one prompt is enough to calibrate; the achieved share is as coarse as the set
    rec = r.calibrate(prompts[:1], share=0.3)
    assert rec.achieved["share"] in (0.0, 1.0) and rec.n == 1


# ------------------------------------------------------------------ 3. thresholds and targets

@pytest.fixture
def tfidf(make_router):
    return make_router("tfidf")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.01, -1, 1.0001, 2])
def test_out_of_range_thresholds_are_refused(tfidf, value):
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got"):
        tfidf.threshold = value
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        RouterSpec(models=PAIR, threshold=value)
    assert tfidf.threshold == 0.5  # unchanged after a refused value


@pytest.mark.parametrize("value", ["0.5", None, True, [0.5]])
def test_non_numeric_thresholds_are_type_errors(tfidf, value):
    with pytest.raises(TypeError, match="threshold must be a number in"):
        tfidf.threshold = value


def test_threshold_ends(tfidf, planted_set):
    prompts = list(planted_set[0])
    tfidf.threshold = 0.0
    assert all(d.strong for d in tfidf.route_batch(prompts))
    tfidf.threshold = 1.0  # only a score of exactly 1.0 would go strong
    s = tfidf.score(prompts)
    assert [d.strong for d in tfidf.route_batch(prompts)] == list(s >= 1.0)


@pytest.mark.parametrize("share", [float("nan"), -0.1, 1.1, float("inf")])
def test_bad_shares_are_calibration_errors(tfidf, planted_set, share):
    with pytest.raises(CalibrationError, match=r"target share must be in \[0, 1\]"):
        tfidf.calibrate(list(planted_set[0]), share=share)
    assert tfidf.threshold == 0.5 and tfidf.calibration.method == "manual"


def test_share_type_errors(tfidf, planted_set):
    for share in ("0.3", True):
        with pytest.raises(TypeError, match="share must be a number"):
            tfidf.calibrate(list(planted_set[0]), share=share)


def test_share_exactly_zero_and_one(tfidf, planted_set):
    prompts = list(planted_set[0])
    s = tfidf.score(prompts)
    rec = tfidf.calibrate(prompts, share=0.0)
    assert tfidf.threshold == 1.0 and rec.achieved["share"] == (s >= 1.0).mean() == 0.0
    rec = tfidf.calibrate(prompts, share=1.0)
    assert tfidf.threshold == 0.0 and rec.achieved["share"] == 1.0
    assert all(d.strong for d in tfidf.route_batch(prompts))


def test_quality_targets(tfidf, planted_set):
    prompts, y = list(planted_set[0]), planted_set[1]
    qs = np.ones(len(prompts))
    qw = 1.0 - y.astype(float)  # the weak model fails exactly on the hard prompts
    with pytest.raises(CalibrationError, match=r"no threshold reaches PGR >= 1.5 on these 80"):
        tfidf.calibrate(prompts, q_strong=qs, q_weak=qw, min_pgr=1.5)
    for bad in (float("nan"), float("inf"), "0.9"):
        with pytest.raises(CalibrationError, match="quality target must be a finite number"):
            tfidf.calibrate(prompts, q_strong=qs, q_weak=qw, min_pgr=bad)
    with pytest.raises(CalibrationError, match="max_drop must be >= 0"):
        tfidf.calibrate(prompts, q_strong=qs, q_weak=qw, max_drop=-0.01)
    with pytest.raises(CalibrationError, match="strong model is not better"):
        tfidf.calibrate(prompts, q_strong=qw, q_weak=qw, min_pgr=0.5)
    with pytest.raises(CalibrationError, match="differ in length"):
        tfidf.calibrate(prompts, q_strong=qs[:-1], q_weak=qw, min_pgr=0.5)
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        tfidf.calibrate(prompts, q_strong=np.where(y == 1, np.nan, 1.0), q_weak=qw, min_pgr=0.5)
    with pytest.raises(CalibrationError, match=r"must be in \[0, 1\]"):
        tfidf.calibrate(prompts, q_strong=qs * 10, q_weak=qw, min_pgr=0.5)
    with pytest.raises(ValueError, match="either share or a quality target"):
        tfidf.calibrate(prompts, share=0.5, min_pgr=0.5)
    with pytest.raises(ValueError, match="give a calibration target"):
        tfidf.calibrate(prompts)
    with pytest.raises(ValueError, match="needs q_strong and q_weak"):
        tfidf.calibrate(prompts, min_pgr=0.5)
    assert tfidf.threshold == 0.5  # failed calibrations leave the threshold alone
    # documented edges: PGR 1 is reachable (route everything hard); a negative target or a
    # 100 % drop is met by the highest threshold
    tfidf.calibrate(prompts, q_strong=qs, q_weak=qw, min_pgr=1.0)
    assert all(d.strong for d, h in zip(tfidf.route_batch(prompts), y) if h)
    tfidf.calibrate(prompts, q_strong=qs, q_weak=qw, min_pgr=-1.0)
    assert tfidf.threshold == 1.0
    tfidf.calibrate(prompts, q_strong=qs, q_weak=qw, max_drop=1.0)
    assert tfidf.threshold == 1.0


# ------------------------------------------------------------------ 5. threads

@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_one_router_shared_by_8_threads(make_router, tmp_path, kind):
    """20,000 route() calls from 8 threads on one loaded router give the sequential results
    (for the static encoder this includes model2vec re-setting its Rust tokenizer's truncation
    on every call)."""
    make_router(kind).save(tmp_path / "r")
    router = load_router(tmp_path / "r")
    prompts = [f"{a} {b} {i}" for i, (a, b) in enumerate(itertools.product(
        VALID_PROMPTS.values(), ["prove it", "say hi", "", "\ud800"]))]
    prompts = [p[:2000] for p in prompts]  # keep the run short; long inputs are tested above
    expected = [router.route(p) for p in prompts]
    n_threads, total = 8, 20_000

    def work(k):
        bad = []
        for j in range(total // n_threads):
            i = (k * 7919 + j) % len(prompts)
            d = router.route(prompts[i])
            if d != expected[i]:
                bad.append((i, d))
        return bad

    with ThreadPoolExecutor(n_threads) as ex:
        results = list(ex.map(work, range(n_threads)))  # re-raises any worker's error
    assert results == [[]] * n_threads


# ------------------------------------------------------------------ 7. fuzzing

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)


@pytest.mark.parametrize("kind", KINDS)
def test_fuzz_route_and_score(routers, kind):
    router = routers[kind]

    @FUZZ
    @given(prompt=any_text, batch=st.lists(st.one_of(any_text, st.none(), st.integers(),
                                                     st.floats(), st.binary(max_size=5)),
                                           max_size=6))
    def check(prompt, batch):
        d = router.route(prompt)
        assert 0.0 <= d.score <= 1.0 and d.model in (router.strong_model, router.weak_model)
        if all(isinstance(p, str) for p in batch):
            assert_valid_scores(router.score(batch), len(batch))
        else:
            i = next(i for i, p in enumerate(batch) if not isinstance(p, str))
            with pytest.raises(TypeError, match=rf"prompts\[{i}\] must be str.*, got "):
                router.score(batch)

    check()


def _load_or_clear_error(path):
    try:
        ds = tables.load_table(path)
    except (DataFormatError, DataNotFoundError) as e:
        assert str(path) in str(e)  # the message names the file
        return None
    assert len(ds) > 0 and set(ds.column_names) == {"prompt", "source", "group", "quality"}
    q = sources.quality_matrix(ds)
    assert (np.isnan(q) | ((q >= 0) & (q <= 1))).all()  # in [0, 1] or missing, never invented
    assert (~np.isnan(q)).any(axis=1).all()  # every kept row has a valid score
    assert all(isinstance(p, str) and p.strip() for p in ds["prompt"])
    return ds


score_text = st.one_of(st.sampled_from(["1", "0", "0.5", "true", "False", "", "nan", "-1", "9",
                                        "inf", "1e-3", "n/a"]), st.text(max_size=4))
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 15), st.floats(),
                        st.text(max_size=8), st.sampled_from(["1", "0", "true", "nan", "9"]))
json_value = st.one_of(json_scalar, st.lists(json_scalar, max_size=2),
                       st.dictionaries(st.text(max_size=3), json_scalar, max_size=2))
# rows that are mostly well formed, so that both outcomes (a Dataset, a clear error) occur
json_row = st.fixed_dictionaries(
    {"prompt": st.one_of(st.text(st.characters(codec=None), max_size=40), json_scalar)},
    optional={"a": json_value, "b": json_value, "c/d": json_value, "": json_value,
              "group": json_value})


@pytest.mark.usefixtures("isolated_datasets_cache")
def test_fuzz_load_table(tmp_path_factory):
    """Generated CSV/JSONL/Parquet content gives a Dataset or DataFormatError, nothing else."""
    folder = tmp_path_factory.mktemp("fuzz-tables")
    outcomes = collections.Counter()

    def check(suffix, text: str | bytes):
        p = folder / f"{uuid.uuid4().hex}{suffix}"
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        outcomes[_load_or_clear_error(p) is not None] += 1

    @FUZZ
    @given(rows=st.lists(st.tuples(st.text(st.characters(codec=None), max_size=40), score_text,
                                   score_text), max_size=6),
           header=st.sampled_from(["prompt,a,b", "prompt,a", "a,b,c", "prompt,prompt,a", ""]),
           junk=st.one_of(st.just(""), st.text(st.characters(codec=None), max_size=30)))
    def csv_rows(rows, header, junk):
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        check(".csv", (header + "\n" if header else "") + buf.getvalue() + junk)

    @FUZZ
    @given(rows=st.lists(json_row, max_size=6),
           junk=st.sampled_from(["", "", "", "\n", "{", "[]\n", "1\n", "\x00"]))
    def jsonl_rows(rows, junk):
        check(".jsonl", "".join(json.dumps(r) + "\n" for r in rows) + junk)

    @settings(FUZZ, max_examples=20)
    @given(raw=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".jsonl", ".parquet"]))
    def raw_bytes(raw, suffix):
        check(suffix, raw)

    csv_rows()
    jsonl_rows()
    raw_bytes()
    assert outcomes[True] and outcomes[False]  # both paths were exercised


@pytest.mark.usefixtures("isolated_datasets_cache")
def test_a_lone_surrogate_prompt_is_skipped_and_counted(tmp_path, caplog):
    """JSON can escape a lone surrogate ("\\ud800"), which no UTF-8 table holds: that row is
    skipped with its reason, the others load; alone, it is a clear error naming the file."""
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"prompt": "\ud800", "a": 1}) + "\n"
                 + json.dumps({"prompt": "fine", "a": 0}) + "\n")
    with caplog.at_level("INFO"):
        ds = tables.load_table(p)
    assert ds["prompt"] == ["fine"]
    assert "prompt not valid Unicode (a lone surrogate): 1" in caplog.text
    p.write_text(json.dumps({"prompt": "\ud800", "a": False}) + "\n")
    assert _load_or_clear_error(p) is None


# ------------------------------------------------------------------ real data (small sample)

def test_real_gsm8k_sample(real_gsm8k):
    train, test = real_gsm8k.subset(np.arange(150)), real_gsm8k.subset(np.arange(150, 200))
    router = RouterSpec(TfidfEncoder(min_df=2), models=train.models).fit(train.prompts, train.quality)
    assert_valid_scores(router.score(test.prompts), len(test))
    hostile = [p + t for p, t in zip(test.prompts, itertools.cycle(
        ["\x00", "\ud800", " 😀\u200f", "x" * 20_000, ""]))]
    assert_valid_scores(router.score(hostile), len(test))
    rec = router.calibrate(test.prompts, q_strong=test.q_strong, q_weak=test.q_weak, max_drop=0.05)
    assert rec.method == "quality"
    assert rec.achieved["quality"] >= test.q_strong.mean() - 0.05 - 1e-12
