"""The prompt statistics behind the default router: what each one measures."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_ml.core.encoders import STATS, StatsEncoder, prompt_stats

MC = ("Which of the following is NOT a prime number?\nA. 2\nB. 3\nC. 9\nD. 11\nAnswer:")


def stat(prompt: str, name: str) -> float:
    return float(prompt_stats([prompt])[0, STATS.index(name)])


def test_shape_and_finite_on_odd_prompts():
    odd = ["", " ", "\n\n", "x" * 50_000, "😀 Какова производная?", "A.", "A.\nB.", "(A)\n(B)\n"]
    X = prompt_stats(odd)
    assert X.shape == (len(odd), len(STATS)) == (8, 28) and X.dtype == np.float64
    assert np.isfinite(X).all()
    assert prompt_stats([]).shape == (0, 28)


def test_answer_choices_are_parsed():
    assert stat(MC, "choices") == 4
    assert stat(MC, "numeric_choice_share") == 1.0
    assert stat(MC, "stem_negations") == 1  # NOT
    assert stat(MC, "log_stem_chars") == pytest.approx(np.log1p(len(MC.split("\nA.")[0])))
    assert stat("Pick one:\n(A) red apple\n(B) green pear\n(C) blue sky", "choices") == 3
    # Roman-numeral statements before the choices are not choices
    roman = "Which are true?\nI. cats purr\nII. dogs bark\nA. I only\nB. II only\nC. I and II"
    assert stat(roman, "choices") == 3 and stat(roman, "roman_numerals") == 6
    assert stat("What is 2 + 2?", "choices") == 0


def test_without_choices_the_choice_statistics_are_zero():
    x = prompt_stats(["Natalia sold clips to 48 of her friends in April. How many?"])[0]
    for name in STATS[STATS.index("log_mean_choice_chars"):]:
        if name not in ("log_stem_chars", "stem_negations", "roman_numerals", "log_math_marks",
                        "all_none_both_of"):
            assert x[STATS.index(name)] == 0.0, name


def test_choice_overlap():
    same = "Q?\nA. the red house\nB. the red house\nC. the red house"
    apart = "Q?\nA. cat\nB. dog\nC. fish"
    assert stat(same, "choice_jaccard_min") == 1.0 and stat(apart, "choice_jaccard_max") == 0.0
    echo = "Is the mitochondria the powerhouse?\nA. mitochondria powerhouse\nB. nucleus"
    assert stat(echo, "stem_choice_overlap_max") == 1.0
    assert stat(echo, "stem_choice_overlap_gap") == 1.0
    assert stat(echo, "stem_choice_overlap_mean") == 0.5


def test_question_type_markers():
    assert stat("Which is true?\nA. x\nB. y\nC. all of the above", "all_none_both_of") == 1
    assert stat(r"Solve $x^2 = \sqrt{2}$", "log_math_marks") > stat("Solve x squared", "log_math_marks")
    assert stat("Which is not false and never least, except one?", "stem_negations") == 5


def test_encoder_standardises_and_round_trips():
    prompts = [MC, "hello there", "What is 12 * 7?", "Q?\nA. cat\nB. dog"] * 5
    enc = StatsEncoder().fit(prompts)
    X = enc.transform(prompts)
    assert X.shape == (20, 28) and X.dtype == np.float32
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-5)
    again = StatsEncoder.from_parts(enc.spec(), enc.parts())
    np.testing.assert_array_equal(again.transform(prompts), X)
    for names in (list(STATS[:12]), ["made_up"] + list(STATS[1:]), list(STATS[::-1]), []):
        with pytest.raises(ValueError, match="statistic"):
            StatsEncoder.from_parts({"kind": "stats", "stats": names}, enc.parts())


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=300)
       | st.text(max_size=100))
@settings(max_examples=300, deadline=None)
def test_surface_counts_of_ascii_and_other_text_agree_with_the_definitions(text):
    """The byte-level counts taken for ASCII text equal the per-character definitions
    (digits, operators +-*/=^$%, capitals by str.isupper), as for any other text."""
    from router_ml.core.encoders import SURFACE_STATS

    X = prompt_stats([text], surface_only=True)[0]
    n = max(len(text), 1)
    got = dict(zip(SURFACE_STATS, X))
    assert got["digit_share"] == pytest.approx(sum(c in "0123456789" for c in text) / n)
    assert got["log_operators"] == pytest.approx(np.log1p(sum(c in "+-*/=^$%" for c in text)))
    assert got["upper_share"] == pytest.approx(sum(c.isupper() for c in text) / n)
