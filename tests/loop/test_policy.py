"""Policy: rules file validation and matching, learned routing, validators, escalation and
fallback against a local OpenAI-compatible stub server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from llm_stub import Fail, Slow, StubLLM

from router_ml.loop.policy import (
    AllModelsFailedError,
    Completion,
    JsonSchemaValid,
    JsonValid,
    LiteLLMClient,
    NoRefusal,
    Policy,
    PolicyError,
    RuleConfigError,
    check_answer,
    conversation_text,
    load_rules,
    parse_rules,
)

CHEAP, STRONG = "gpt-4o-mini", "gpt-4o"
RULES_TOML = """
ladder = ["gpt-4o-mini", "gpt-4o"]
fallback = "claude-3.5-haiku"
max_escalations = 1

[tiers]
fast = "gemini-2.0-flash"

# models the router does not know, named below
[models."claude-3.5-haiku"]
[models."claude-opus-4"]
[models."gemini-2.0-flash"]

[[rules]]
name = "code"
task = "code"
model = "gpt-4o"

[[rules]]
name = "legal"
tags = ["legal", "medical"]
model = "claude-opus-4"

[[rules]]
name = "sql"
regex = "(?i)\\\\bselect\\\\b.*\\\\bfrom\\\\b"
model = "gpt-4o"

[[rules]]
name = "realtime"
max_latency = "interactive"
tier = "fast"
"""


@pytest.fixture(scope="module")
def pair_router(planted_set):
    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder

    prompts, y = planted_set
    from conftest import pair_qualities

    router = RouterSpec(TfidfEncoder(min_df=1), models=[STRONG, CHEAP])
    return router.fit(list(prompts), pair_qualities(y))


@pytest.fixture()
def rules_file(tmp_path):
    p = tmp_path / "rules.toml"
    p.write_text(RULES_TOML)
    return p


def test_rules_file_loads_and_first_match_wins(rules_file, pair_router):
    cfg = load_rules(rules_file)
    assert [r.name for r in cfg.rules] == ["code", "legal", "sql", "realtime"]
    assert cfg.ladder == (CHEAP, STRONG) and cfg.fallback == "claude-3.5-haiku"
    policy = Policy(pair_router, cfg)
    reqs = [("write a haiku", {"task": "code", "tags": ["legal"]}),
            ("is this contract void", {"tags": ["legal"]}),
            ("SELECT name FROM users", None),
            ("hello", {"max_latency": "realtime"}),
            ("hello", {"max_latency": "batch"}),
            ("prove the theorem about the integral number 4", None),
            ("say hello to my friend number 5", {"task": "chat"})]
    ds = policy.decide_batch([r[0] for r in reqs], [r[1] for r in reqs])
    assert [(d.route_reason, d.rule, d.route) for d in ds] == [
        ("rule", "code", STRONG), ("rule", "legal", "claude-opus-4"), ("rule", "sql", STRONG),
        ("rule", "realtime", "gemini-2.0-flash"), ("learned", None, ds[4].route),
        ("learned", None, STRONG), ("learned", None, CHEAP)]
    for d in ds[4:]:
        assert 0 <= d.score <= 1 and d.threshold == pair_router.threshold
    assert all(len(d.prompt_sha256) == 64 and d.prompt == r[0] for d, r in zip(ds, reqs))
    assert all(d.score is None and d.qualities is None for d in ds[:4])


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_rules_in_json_and_yaml(tmp_path, fmt):
    data = {"rules": [{"name": "r", "task": "t", "model": "m"}], "ladder": ["m", "n"]}
    p = tmp_path / f"rules.{fmt}"
    if fmt == "json":
        p.write_text(json.dumps(data))
    else:
        import yaml

        p.write_text(yaml.safe_dump(data))
    assert load_rules(p).rules[0].model == "m"


@pytest.mark.parametrize("bad, key, words", [
    ({"rules": [{"name": "r", "taks": "x", "model": "m"}]}, "rules[0].taks", "unknown key"),
    ({"rules": [{"name": "r", "task": "x", "model": "m", "max_latency": "slow"}]},
     "rules[0].max_latency", "is not one of"),
    ({"rules": [{"name": "r", "task": "x"}]}, "rules[0]", "exactly one target"),
    ({"rules": [{"name": "r", "model": "m"}]}, "rules[0]", "at least one condition"),
    ({"rules": [{"name": "r", "task": "x", "tier": "nope"}]}, "rules[0].tier", "unknown tier"),
    ({"rules": [{"name": "r", "regex": "(", "model": "m"}]}, "rules[0].regex", "regular expression"),
    ({"ladder": "gpt-4o"}, "ladder", "not of type 'array'"),
    ({"max_escalations": -1}, "max_escalations", "minimum"),
    ({"rulez": []}, "rulez", "unknown key"),
])
def test_bad_rules_name_the_file_and_key(tmp_path, bad, key, words):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(RuleConfigError) as e:
        load_rules(p)
    msg = str(e.value)
    assert str(p) in msg and f"{key}:" in msg and words in msg


def test_unparseable_rules_file(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("rules = [")
    with pytest.raises(RuleConfigError, match="r.toml: cannot parse"):
        load_rules(p)
    with pytest.raises(RuleConfigError, match="does not exist"):
        load_rules(tmp_path / "missing.toml")


def test_messages_are_scored_on_user_turns(pair_router):
    msgs = [{"role": "system", "content": "SYSTEM PROMPT"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "ASSISTANT"},
            {"role": "user", "content": [{"type": "text", "text": "last question"}]}]
    text = conversation_text(msgs)
    # the router's rule (router.prompt_text): the user turns, newest first
    assert text == "last question\n\nfirst question"
    assert conversation_text([{"role": "user", "content": "x" * 9000 + "END"}]).endswith("END")
    d = Policy(pair_router).decide(msgs)
    assert d.score == pytest.approx(float(pair_router.score([text])[0]))
    with pytest.raises(TypeError):
        conversation_text([1, 2])


def test_no_router_and_no_rule_is_a_clear_error():
    policy = Policy(None, parse_rules({"rules": [{"name": "c", "task": "code", "model": "m"}]}))
    assert policy.decide("x", {"task": "code"}).route == "m"
    with pytest.raises(PolicyError, match="no router"):
        policy.decide("x")


def test_validators():
    schema = {"type": "object", "required": ["answer"],
              "properties": {"answer": {"type": "integer"}}}
    assert JsonValid()('```json\n{"a": 1}\n```').ok
    assert not JsonValid()("{a: 1}").ok
    v = JsonSchemaValid(schema)
    assert v('{"answer": 4}').ok
    bad = v('{"answer": "four"}')
    assert not bad.ok and "answer" in bad.message and "integer" in bad.message
    assert "not valid JSON" in v("four").message
    assert not NoRefusal()("I'm not sure what you mean.").ok
    assert not NoRefusal()("   ").ok
    assert NoRefusal()("Paris is the capital.").ok
    assert not check_answer([lambda t: (False, "too short")], "x").ok
    assert check_answer([lambda t: True, JsonValid()], "[1]").ok
    r = check_answer([lambda t: 1 / 0], "x")
    assert not r.ok and "ZeroDivisionError" in r.message
    import jsonschema

    with pytest.raises(jsonschema.SchemaError):
        JsonSchemaValid({"type": "nonsense"})


SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}


def test_escalation_and_fallback_against_the_stub(pair_router):
    behaviours = {CHEAP: lambda m: '{"answer": "not a number"}',
                  STRONG: lambda m: '{"answer": 4}',
                  "flaky": Fail(500),
                  "claude-3.5-haiku": lambda m: '{"answer": 5}',
                  "slow": Slow(2.0, '{"answer": 1}')}
    with StubLLM(behaviours, max_requests=50) as stub:
        client = LiteLLMClient(api_base=stub.url, api_key="test", timeout=0.5)
        policy = Policy(pair_router, ladder=[CHEAP, STRONG], max_escalations=1,
                        validators=[JsonSchemaValid(SCHEMA)])
        d = policy.run([{"role": "user", "content": "what day is it today number 1"}], client)
        assert d.route == CHEAP and d.route_reason == "learned"
        assert d.model == STRONG and d.reason == "escalated" and d.escalations == 1
        assert d.steps[0].from_model == CHEAP and "integer" in d.steps[0].message
        assert d.answer == '{"answer": 4}' and d.validator == "passed"
        assert d.input_tokens > 0 and d.cost_usd > 0
        # escalation capped: zero allowed, the failed answer is returned and flagged
        d0 = Policy(pair_router, ladder=[CHEAP, STRONG], max_escalations=0,
                    validators=[JsonSchemaValid(SCHEMA)]).run("what day is it today", client)
        assert d0.model == CHEAP and d0.validator == "failed" and not d0.steps
        # HTTP 500 -> next rung
        p500 = Policy(None, parse_rules({"rules": [{"name": "all", "regex": ".", "model": "flaky"}]}),
                      ladder=["flaky", STRONG])
        d = p500.run("anything", client)
        assert d.model == STRONG and d.reason == "fallback" and "500" in d.error
        # a timeout, ladder exhausted -> the configured fallback model
        ps = Policy(None, parse_rules({"rules": [{"name": "all", "regex": ".", "model": "slow"}],
                                       "fallback": "claude-3.5-haiku"}), ladder=["slow"])
        d = ps.run("anything", client)
        assert d.model == "claude-3.5-haiku" and d.steps[0].kind == "fallback"
        assert "Timeout" in d.error or "timed out" in d.error.lower()
        # everything fails -> a specific error carrying the decision, and it is logged
        logged = []
        pf = Policy(None, parse_rules({"rules": [{"name": "all", "regex": ".", "model": "flaky"}]}),
                    ladder=["flaky"], log=type("L", (), {"write": lambda s, x: logged.append(x)})())
        with pytest.raises(AllModelsFailedError) as e:
            pf.run("anything", client)
        assert e.value.decision.error and logged == [e.value.decision]
        assert stub.models_called().count(CHEAP) == 2


def test_caller_client_and_costs(pair_router):
    calls = []

    def client(model, messages):
        calls.append(model)
        return Completion("ok", 1000, 1000) if model == STRONG else "plain text answer"

    policy = Policy(pair_router, ladder=[CHEAP, STRONG], validators=[NoRefusal()])
    d = policy.run("prove the theorem about the integral number 0", client)
    assert calls == [STRONG] and d.cost_usd == pytest.approx((2.5 + 10.0) * 1000 / 1e6)
    assert d.strongest_cost_usd == pytest.approx(d.cost_usd)
    d = Policy(None, parse_rules({"rules": [{"name": "a", "regex": ".", "model": "unpriced"}]}),
               ladder=["unpriced"]).run("x", lambda m, msgs: Completion("y", 10, 10))
    assert d.cost_usd is None


def test_import_is_light():
    code = ("import sys, router_ml.loop.policy, router_ml.loop.monitoring, router_ml.loop.labeling; "
            "print(sorted(m for m in ('litellm', 'jsonschema', 'mlflow', 'matplotlib', 'scipy', "
            "'sklearn', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_default_ladder_runs_cheapest_first_and_lam_decisions_have_no_threshold(pair_router):
    from conftest import TIER_PRICES, TIERS, planted_tiers

    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder

    # a pair router lists the strong model first; its ladder starts with the weak one
    assert pair_router.models == [STRONG, CHEAP] and Policy(pair_router).ladder == (CHEAP, STRONG)
    prompts, Q, _ = planted_tiers(150)
    tiers = RouterSpec(TfidfEncoder(min_df=1), models=TIERS, prices=TIER_PRICES).fit(prompts, Q)
    policy = Policy(tiers)
    assert policy.ladder == ("small", "openai/gpt-4o", "azure/gpt-4o")
    assert policy.strongest == "azure/gpt-4o"
    d = policy.decide(prompts[0])
    assert d.route_reason == "learned" and d.route in TIERS and d.threshold is None


def test_arun_with_an_async_client_and_the_circuit_breaker():
    import asyncio

    from router_ml.loop.breaker import CircuitBreaker

    calls = []

    async def client(model, messages):
        calls.append(model)
        if model == "cheap":
            raise ConnectionError("refused")
        return Completion('{"answer": 4}', 10, 5)

    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown=30, clock=lambda: now[0])
    policy = Policy(None, parse_rules({"rules": [{"name": "all", "regex": ".", "model": "cheap"}]}),
                    ladder=["cheap", "strong"], breaker=breaker,
                    validators=[JsonSchemaValid(SCHEMA)])
    for _ in range(2):
        d = asyncio.run(policy.arun("q", client))
        assert (d.model, d.reason) == ("strong", "fallback") and "ConnectionError" in d.error
    assert breaker.state("cheap") == "open"
    d = asyncio.run(policy.arun("q", client))  # the open circuit is skipped without a call
    assert calls == ["cheap", "strong", "cheap", "strong", "strong"]
    assert d.reason == "fallback" and d.steps[0].message.startswith("CircuitOpen")
    now[0] = 31.0  # half-open: one trial call, which fails and opens it again
    d = asyncio.run(policy.arun("q", client))
    assert calls[-2:] == ["cheap", "strong"] and breaker.state("cheap") == "open"
    # the sync run shares the breaker; every circuit open: the route is tried anyway
    breaker.failure("strong"), breaker.failure("strong")
    with pytest.raises(AllModelsFailedError):
        Policy(None, parse_rules({"rules": [{"name": "all", "regex": ".", "model": "cheap"}]}),
               ladder=["cheap"], breaker=breaker).run("q", lambda m, ms: 1 / 0)
    from router_ml.loop.monitoring import QualitySampler

    with pytest.raises(PolicyError, match="BackgroundSampler"):
        asyncio.run(Policy(None, parse_rules({"rules": [{"name": "a", "regex": ".", "model": "m"}]}),
                           sampler=QualitySampler(lambda *a: 1.0)).arun("q", client))


def test_run_step_by_step_records_what_a_stream_does():
    policy = Policy(None, parse_rules({"rules": [{"name": "all", "regex": ".", "model": "cheap"}]}),
                    ladder=["cheap", "strong"], validators=[JsonValid()])
    run = policy.start("q")
    assert run.model == "cheap"
    assert run.answered(Completion("not json")) is False and run.model == "strong"
    assert run.decision.reason == "escalated"  # known before the answer is sent
    assert run.answered('{"a": 1}') is True and run.model is None
    run.broke(ConnectionError("reset"))
    d = run.finish()
    assert (d.model, d.reason, d.validator) == ("strong", "escalated", "passed")
    assert d.error.startswith("ConnectionError")
