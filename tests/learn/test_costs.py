"""Prices, traffic and monthly costs; the budget threshold (exact cases and hypothesis)."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_ml import Router
from router_ml.core.calibration import CalibrationRecord
from router_ml.core.encoders import StatsEncoder
from router_ml.core.state import RouterState
from router_ml.core.prices import BUILTIN_SOURCE, ModelPrice, PriceTable, load_prices
from router_ml.errors import (
    CalibrationError,
    DataFormatError,
    DataNotFoundError,
    UnknownModelError,
)
from router_ml.learn.budget import (
    TrafficProfile,
    cost_curve,
    cost_summary,
    merge_dcrouter_prices,
    monthly_cost,
    monthly_cost_at_threshold,
    quality_sampling_cost,
    router_monthly_cost,
    saving,
    threshold_for_budget,
)

STRONG, WEAK = "gpt-4o", "gpt-4o-mini"
TRAFFIC = TrafficProfile(requests_per_month=1_000_000, input_tokens=500, output_tokens=200)


# ---------------------------------------------------------------------------- the price table


def test_gpt4o_million_requests_cost_exactly_3250_per_month():
    # 1e6 * (500 * 2.50 + 200 * 10.00) / 1e6 USD
    assert monthly_cost("gpt-4o", TRAFFIC) == 3250.0


@pytest.mark.parametrize("model, inp, out", [
    ("gpt-4o", 2.50, 10.0), ("gpt-4o-mini", 0.15, 0.60), ("claude-opus-4", 15.0, 75.0),
    ("claude-3.5-haiku", 0.80, 4.0), ("gemini-1.5-pro", 1.25, 5.0),
    ("gemini-2.0-flash", 0.10, 0.40), ("gpt-4-1106-preview", 10.0, 30.0),
    ("Mixtral-8x7B-Instruct-v0.1", 0.24, 0.24),
])
def test_builtin_prices(model, inp, out):
    assert load_prices()[model] == ModelPrice(inp, out)


def test_builtin_table_holds_the_data_pair_by_its_exact_names():
    from router_ml.learn.protocols import STRONG_MODEL, WEAK_MODEL

    names = list(load_prices())
    assert STRONG_MODEL in names and WEAK_MODEL in names


def test_lookup_ignores_case_and_organisation_prefix():
    prices = load_prices()
    assert prices["openai/GPT-4o"] == prices["gpt-4o"]
    assert prices["mistralai/mixtral-8x7b-instruct-v0.1"].input == 0.24


def test_another_providers_price_is_never_taken():
    """openai/gpt-4o and azure/gpt-4o are two models: one does not take the other's price;
    a provider's model falls back to its bare name's list price, a bare name to the one
    provider that lists it."""
    table = PriceTable({"openai/gpt-4o": {"input": 2.5, "output": 10},
                        "gpt-4o-mini": {"input": 0.15, "output": 0.6},
                        "azure/o1": {"input": 15, "output": 60}})
    with pytest.raises(UnknownModelError, match="'azure/gpt-4o'.*openai/gpt-4o is another "
                                                "provider's model"):
        table["azure/gpt-4o"]
    assert table["OpenAI/GPT-4o"].input == 2.5
    assert table["openai/gpt-4o-mini"].input == 0.15  # the bare list price
    assert table["gpt-4o"].input == 2.5 and table["o1"].input == 15  # one provider lists it
    two = PriceTable({"openai/gpt-4o": {"input": 2.5, "output": 10},
                      "azure/gpt-4o": {"input": 2.75, "output": 11}})
    assert two["azure/gpt-4o"].input == 2.75 and two["openai/gpt-4o"].input == 2.5
    with pytest.raises(UnknownModelError, match="azure/gpt-4o, openai/gpt-4o are another"):
        two["gpt-4o"]  # ambiguous: which provider?
    from router_ml.core.prices import prompt_costs

    with pytest.raises(UnknownModelError, match="'azure/gpt-4o'.*the router's price table"):
        prompt_costs(["hi"], ["openai/gpt-4o", "azure/gpt-4o"],
                     {"openai/gpt-4o": {"input": 2.5, "output": 10}})


def test_prompt_costs_with_an_exact_tokenizer(tmp_path):
    """A tokenizer replaces the ceil(len / 4) approximation: a callable's count, or a Hugging
    Face tokenizer.json read from disk (--tokenizer), whose token count prices the prompt."""
    from router_ml.core.prices import load_tokenizer, prompt_costs
    from router_ml.core.transformer import resolve_st_model

    prices = {"big": {"input": 10.0, "output": 0.0}, "small": {"input": 1.0, "output": 0.0}}
    prompts = ["a b c d e f g h", "supercalifragilistic"]
    approx = prompt_costs(prompts, ["big", "small"], prices)
    np.testing.assert_allclose(approx[:, 0], np.ceil(np.array([15, 20]) / 4) * 10 / 1e6)
    counted = prompt_costs(prompts, ["big", "small"], prices, tokenizer=lambda s: len(s.split()))
    np.testing.assert_allclose(counted, [[80 / 1e6, 8 / 1e6], [10 / 1e6, 1 / 1e6]])
    tok = load_tokenizer(resolve_st_model("all-MiniLM-L6-v2"))
    exact = prompt_costs(prompts, ["big"], prices, tokenizer=tok)
    want = [len(tok.encode(p).ids) * 10 / 1e6 for p in prompts]
    np.testing.assert_allclose(exact[:, 0], want)
    assert exact[0, 0] != approx[0, 0]
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not a tokenizer")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer file"):
        load_tokenizer(tmp_path)


def test_unknown_model_names_model_and_builtin_table():
    with pytest.raises(UnknownModelError, match="no-such-model") as e:
        monthly_cost("no-such-model", TRAFFIC)
    assert BUILTIN_SOURCE in str(e.value)
    assert "load_prices" in str(e.value)  # says what to do


def test_unknown_model_names_the_price_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-model": {"input": 1, "output": 2}}))
    with pytest.raises(UnknownModelError) as e:
        load_prices(path, builtin=False)["gpt-4o"]
    assert str(path) in str(e.value) and "'gpt-4o'" in str(e.value)


def test_json_file_overrides_and_extends(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"gpt-4o": {"input": 2.0, "output": 8.0},
                                           "acme/my-model": {"input": 0.5, "output": 1.5}},
                                "unit": "USD per million tokens"}))
    prices = load_prices(path)
    assert prices["gpt-4o"] == ModelPrice(2.0, 8.0)
    assert prices["my-model"] == ModelPrice(0.5, 1.5)
    assert prices["gpt-4o-mini"] == ModelPrice(0.15, 0.60)  # the rest of the built-in table
    assert str(path) in prices.source


def test_toml_file_overrides_and_extends(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('[models."gpt-4o"]\ninput = 2\noutput = 8\n\n'
                    '[models."my-model"]\ninput = 0.5\noutput = 1.5\n')
    prices = load_prices(path)
    assert prices["gpt-4o"] == ModelPrice(2.0, 8.0)
    assert prices["my-model"] == ModelPrice(0.5, 1.5)
    # a flat table (no "models" key) works too
    flat = tmp_path / "flat.toml"
    flat.write_text('["gpt-4o"]\ninput = 3\noutput = 9\n')
    assert load_prices(flat)["gpt-4o"] == ModelPrice(3.0, 9.0)


def test_yaml_file(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "prices.yaml"
    path.write_text("models:\n  gpt-4o: {input: 2.0, output: 8.0}\n")
    assert load_prices(path)["gpt-4o"] == ModelPrice(2.0, 8.0)


@pytest.mark.parametrize("text, field", [
    ('{"gpt-4o": {"input": -1, "output": 10}}', "input"),
    ('{"gpt-4o": {"input": 2.5, "output": NaN}}', "output"),
    ('{"gpt-4o": {"input": "2.5", "output": 10}}', "input"),
    ('{"gpt-4o": {"input": true, "output": 10}}', "input"),
])
def test_bad_price_values_name_the_field_and_file(tmp_path, text, field):
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"'gpt-4o'.*{field}") as e:
        load_prices(path)
    assert str(path) in str(e.value)


def test_bad_price_values_in_code():
    with pytest.raises(ValueError, match="output"):
        ModelPrice(1.0, -0.5)
    with pytest.raises(ValueError, match="input"):
        PriceTable({"m": {"input": float("inf"), "output": 1}})


@pytest.mark.parametrize("name, text, match", [
    ("p.json", "{not json", "not valid JSON"),
    ("p.toml", "input = = 2", "not valid TOML"),
    ("p.csv", "model,input,output", "unsupported"),
    ("p.json", '{"gpt-4o": {"input": 1}}', "lacks the field 'output'"),
    ("p.json", '{"gpt-4o": 2.5}', "must map to"),
    ("p.json", '{"gpt-4o": {"input": 1, "output": 1}, "GPT-4o": {"input": 2, "output": 2}}',
     "listed twice"),
    ("p.json", "[]", "expected a mapping"),
])
def test_malformed_price_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataFormatError, match=match) as e:
        load_prices(path)
    assert str(path) in str(e.value)


def test_missing_price_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_prices(tmp_path / "nope.json")


def _dcrouter_dir(tmp_path):
    d = tmp_path / "llmrouter-dcrouter"
    d.mkdir()
    (d / "llm_candidates.json").write_text(json.dumps({
        "qwen2.5-7b-instruct": {"input_price": 0.2, "output_price": 0.2, "size": "7B"},
        "mixtral-8x7b-instruct-v0.1": {"input_price": 0.6, "output_price": 0.6},
    }))
    return tmp_path


def test_merge_dcrouter_prices_adds_models_and_keeps_list_prices(tmp_path):
    data_dir = _dcrouter_dir(tmp_path)
    prices = merge_dcrouter_prices(data_dir=data_dir)
    assert prices["qwen2.5-7b-instruct"] == ModelPrice(0.2, 0.2)
    assert prices["Mixtral-8x7B-Instruct-v0.1"] == ModelPrice(0.24, 0.24)
    assert "llm_candidates.json" in prices.source
    over = merge_dcrouter_prices(load_prices(), data_dir=data_dir, override=True)
    assert over["Mixtral-8x7B-Instruct-v0.1"] == ModelPrice(0.6, 0.6)


# ---------------------------------------------------------------------------- traffic


@pytest.mark.parametrize("kwargs, field", [
    ({"requests_per_month": -1, "input_tokens": 1, "output_tokens": 1}, "requests_per_month"),
    ({"requests_per_month": float("nan"), "input_tokens": 1, "output_tokens": 1},
     "requests_per_month"),
    ({"requests_per_month": 1, "input_tokens": -5, "output_tokens": 1}, "input_tokens"),
    ({"requests_per_month": 1, "input_tokens": 1, "output_tokens": [1, float("nan")]},
     "output_tokens"),
    ({"requests_per_month": 1, "input_tokens": [1, 2], "output_tokens": [1, 2, 3]},
     "different numbers"),
])
def test_bad_traffic_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrafficProfile(**kwargs)


def test_profile_from_prompts_counts_four_characters_per_token():
    p = TrafficProfile.from_prompts(["a" * 400, "b" * 800], 1000, output_tokens=100)
    np.testing.assert_allclose(p.input_tokens, [100, 200])
    assert p.mean_input_tokens == 150 and p.n_prompts == 2


def test_profile_from_prompts_with_a_tokenizer():
    words = TrafficProfile.from_prompts(["one two three", "four"], 10, 5,
                                        tokenizer=lambda s: s.split())
    np.testing.assert_allclose(words.input_tokens, [3, 1])
    counts = TrafficProfile.from_prompts(["x"], 10, 5, tokenizer=lambda s: 42)
    np.testing.assert_allclose(counts.input_tokens, [42])


# ---------------------------------------------------------------------------- monthly costs


def test_router_cost_and_saving_by_hand():
    weak, strong = monthly_cost(WEAK, TRAFFIC), monthly_cost(STRONG, TRAFFIC)
    assert weak == pytest.approx(1e6 * (500 * 0.15 + 200 * 0.60) / 1e6)  # 195
    assert router_monthly_cost(0.0, TRAFFIC, strong=STRONG, weak=WEAK) == pytest.approx(weak)
    assert router_monthly_cost(1.0, TRAFFIC, strong=STRONG, weak=WEAK) == pytest.approx(strong)
    cost = router_monthly_cost(0.25, TRAFFIC, strong=STRONG, weak=WEAK)
    assert cost == pytest.approx(195 + 0.25 * (3250 - 195))
    usd, pct = saving(0.25, TRAFFIC, strong=STRONG, weak=WEAK)
    assert usd == pytest.approx(3250 - cost)
    assert pct == pytest.approx(100 * (3250 - cost) / 3250)
    s = cost_summary(0.25, TRAFFIC, strong=STRONG, weak=WEAK)
    assert (s.always_weak, s.always_strong, s.router) == pytest.approx((195, 3250, cost))
    arr = router_monthly_cost(np.array([0.0, 0.5, 1.0]), TRAFFIC, strong=STRONG, weak=WEAK)
    np.testing.assert_allclose(arr, [195, (195 + 3250) / 2, 3250])


def test_bad_share():
    with pytest.raises(ValueError, match="share"):
        router_monthly_cost(1.5, TRAFFIC)


def test_per_prompt_tokens_follow_the_routed_prompts():
    # The long prompt has the highest score: routing it alone costs more than the mean share.
    scores = [0.9, 0.1]
    profile = TrafficProfile(100, input_tokens=[3000, 1000], output_tokens=0)
    prices = PriceTable({"s": {"input": 10, "output": 0}, "w": {"input": 1, "output": 0}})
    cost = monthly_cost_at_threshold(scores, 0.5, profile, prices, strong="s", weak="w")
    assert cost == pytest.approx(100 * (3000 * 10 + 1000 * 1) / 2 / 1e6)
    curve = cost_curve(scores, profile, prices, strong="s", weak="w")
    assert curve.usd_per_month[0] == pytest.approx(monthly_cost("w", profile, prices))
    assert curve.usd_per_month[-1] == pytest.approx(monthly_cost("s", profile, prices))
    # forward and inverse for a plot axis, extrapolated past the ends
    for x in (-0.05, 0.0, 0.25, 0.5, 0.8, 1.0, 1.05):
        assert curve.share_at(curve.at(x)) == pytest.approx(x)
    assert curve.at(1.1) > curve.at(1.0)
    cheap_strong = cost_curve(scores, profile, prices, strong="w", weak="s")
    assert not cheap_strong.increasing
    with pytest.raises(ValueError, match="cannot be inverted"):
        cheap_strong.share_at(1.0)
    with pytest.raises(ValueError, match="2 prompts but 3 scores"):
        cost_curve([0.1, 0.2, 0.3], profile, prices, strong="s", weak="w")


def test_quality_sampling_cost():
    c = quality_sampling_cost(0.3, 0.02, TRAFFIC, strong=STRONG)
    assert c.samples_per_month == pytest.approx(1e6 * 0.7 * 0.02)
    assert c.usd_per_month == pytest.approx(14_000 * 3250 / 1e6)
    with pytest.raises(ValueError, match="rate"):
        quality_sampling_cost(0.3, -0.1, TRAFFIC)


# ---------------------------------------------------------------------------- budget threshold


def test_budget_below_always_weak_is_a_calibration_error():
    scores = np.linspace(0, 1, 11)
    with pytest.raises(CalibrationError, match="below the cost of sending every request to the weak"):
        threshold_for_budget(scores, 100.0, TRAFFIC, strong=STRONG, weak=WEAK)


def test_budget_above_always_strong_gives_share_one():
    scores = np.linspace(0, 1, 11)
    t, rec = threshold_for_budget(scores, 10_000.0, TRAFFIC, strong=STRONG, weak=WEAK)
    assert rec.achieved["share"] == 1.0 and t == 0.0
    assert rec.achieved["monthly_cost_usd"] == pytest.approx(3250)
    t, rec = threshold_for_budget(scores, 3250.0, TRAFFIC, strong=STRONG, weak=WEAK)
    assert rec.achieved["share"] == 1.0


def test_budget_by_hand_and_record_usable_by_router():
    scores = np.arange(10) / 10  # 0.0 .. 0.9
    budget = 195 + 0.35 * (3250 - 195)  # room for 3.5 of 10 prompts: 3 go strong
    t, rec = threshold_for_budget(scores, budget, TRAFFIC, strong=STRONG, weak=WEAK,
                                  q_strong=np.ones(10), q_weak=np.r_[np.zeros(5), np.ones(5)],
                                  prompts=[f"p{i}" for i in range(10)])
    assert t == pytest.approx(0.7)
    assert isinstance(rec, CalibrationRecord) and rec.method == "budget"
    assert rec.achieved["share"] == pytest.approx(0.3)
    assert rec.achieved["monthly_cost_usd"] <= budget
    assert rec.achieved["quality"] == pytest.approx(0.5)  # top 3 scores are weak-right rows
    assert rec.target["budget_usd_per_month"] == budget and rec.n == 10 and rec.fingerprint
    json.dumps(rec.to_dict(), allow_nan=False)  # fits the manifest
    router = Router(RouterState(StatsEncoder(), object(), [STRONG, WEAK], threshold=0.5))
    router.set_threshold(t, rec)
    assert router.threshold == t and router.calibration.method == "budget"


@pytest.mark.parametrize("budget", [-1.0, float("nan"), "100"])
def test_bad_budget(budget):
    with pytest.raises(CalibrationError, match="budget"):
        threshold_for_budget([0.5], budget, TRAFFIC)


scores_st = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(scores=scores_st, frac=st.floats(0, 1.2), per_prompt=st.booleans(), data=st.data())
def test_budget_threshold_is_the_largest_share_within_budget(scores, frac, per_prompt, data):
    s = np.asarray(scores)
    n = len(s)
    if per_prompt:
        tin = data.draw(st.lists(st.integers(0, 4000), min_size=n, max_size=n))
        profile = TrafficProfile(50_000, tin, 300)
    else:
        profile = TRAFFIC
    lo, hi = monthly_cost(WEAK, profile), monthly_cost(STRONG, profile)
    budget = lo + frac * (hi - lo)
    try:
        t, rec = threshold_for_budget(s, budget, profile, strong=STRONG, weak=WEAK)
    except CalibrationError:
        # only possible when scores of exactly 1.0 go strong at any threshold
        assert (s >= 1.0).any()
        return
    k = int((s >= t).sum())
    cost = monthly_cost_at_threshold(s, t, profile, strong=STRONG, weak=WEAK)
    assert cost <= budget + 1e-6
    assert rec.achieved["share"] == pytest.approx(k / n)
    assert rec.achieved["monthly_cost_usd"] == pytest.approx(cost)
    # maximal: the next lower distinct score would go over budget
    lower = s[s < t]
    if len(lower):
        nxt = monthly_cost_at_threshold(s, float(lower.max()), profile, strong=STRONG, weak=WEAK)
        assert nxt > budget - 1e-6
    if frac >= 1:
        assert rec.achieved["share"] == 1.0


@settings(max_examples=100, deadline=None)
@given(share=st.floats(0, 1), requests=st.floats(0, 1e9), tin=st.floats(0, 1e4),
       tout=st.floats(0, 1e4))
def test_router_cost_lies_between_the_two_models_and_scales_with_traffic(share, requests, tin, tout):
    p = TrafficProfile(requests, tin, tout)
    lo, hi = monthly_cost(WEAK, p), monthly_cost(STRONG, p)
    c = router_monthly_cost(share, p, strong=STRONG, weak=WEAK)
    assert lo * (1 - 1e-12) <= c <= hi * (1 + 1e-12) + 1e-12
    double = router_monthly_cost(share, TrafficProfile(2 * requests, tin, tout),
                                 strong=STRONG, weak=WEAK)
    assert double == pytest.approx(2 * c)
    _, pct = saving(share, p, strong=STRONG, weak=WEAK)
    assert -1e-9 <= pct <= 100 + 1e-9
    assert math.isfinite(pct)


@settings(max_examples=100, deadline=None)
@given(scores=scores_st)
def test_cost_curve_is_monotone_from_weak_to_strong(scores):
    c = cost_curve(scores, TRAFFIC, strong=STRONG, weak=WEAK)
    assert c.usd_per_month[0] == pytest.approx(monthly_cost(WEAK, TRAFFIC))
    assert c.usd_per_month[-1] == pytest.approx(monthly_cost(STRONG, TRAFFIC))
    assert (np.diff(c.usd_per_month) >= -1e-9).all()


def test_a_price_from_costs_of_one_token_count_is_their_mean():
    """All rows of one token count: no slope to fit; one price for input and output that
    gives the mean observed cost per request."""
    from router_ml.learn.price_fit import price_from_costs

    costs = np.array([0.001, 0.003, np.nan, 0.002])
    d = price_from_costs([100, 100, 100, 100], costs)
    assert d.method == "mean" and d.rows == 3 and d.input == d.output
    assert d.fitted_mean_cost == pytest.approx(0.002) == pytest.approx(d.mean_cost)
    with pytest.raises(ValueError, match="no observed cost"):
        price_from_costs([1, 2], [np.nan, np.nan])


def test_the_documented_price_file_reads_as_its_prices():
    """docs/training.md's price file examples (JSON and TOML) read as the same prices."""
    import re
    from pathlib import Path

    from router_ml.core.prices import read_price_file

    text = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    blocks = {lang: body for lang, body in re.findall(r"^```(json|toml)\n(.*?)^```", text,
                                                      re.M | re.S)}
    assert set(blocks) == {"json", "toml"}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        got = {}
        for lang, body in blocks.items():
            (Path(d) / f"prices.{lang}").write_text(body)
            got[lang] = read_price_file(Path(d) / f"prices.{lang}")
    assert got["json"] == got["toml"]
    assert got["json"]["openai/gpt-4o"] == {"input": 2.5, "output": 10.0}
    assert set(got["json"]) == {"openai/gpt-4o", "gpt-4o-mini", "llama-3.1-8b"}
