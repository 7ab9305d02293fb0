"""Routing that reads the whole request: each model's limits (context, tools, images, response
format) from the rules file's [models."name"] tables, and the conversation mode (free, sticky,
escalate-only), in the Python policy, the decision log and the endpoint."""

from __future__ import annotations

import pytest

from router_ml.loop.policy import ConversationMemory, NoCapableModelError, Policy, conversation_id
from router_ml.loop.rules import ModelLimits, Needs, RuleConfigError, parse_rules, request_needs

WEAK_ALWAYS, STRONG_ALWAYS = 1.0, 0.0  # a pair router's threshold: 1 sends to weak, 0 to strong
LIMITS = {"ladder": ["weak", "strong"],
          "models": {"weak": {"context_tokens": 1000, "tools": False, "vision": False,
                              "response_format": False},
                     "strong": {"context_tokens": 100_000}}}


def user(text, *earlier):
    msgs = []
    for t in earlier:
        msgs += [{"role": "user", "content": t}, {"role": "assistant", "content": "sure"}]
    return msgs + [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def router(make_router):
    return make_router("tfidf")


def _answer(model, messages):
    return f"answer of {model}"


@pytest.mark.parametrize("messages, params, why", [
    (user("x " * 2500), None, "past its context of 1000"),
    (user("hi"), {"max_tokens": 2000}, "past its context of 1000"),
    (user("hi"), {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ([{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                   {"type": "image_url", "image_url": {"url": "x"}}]}], None,
     "an image"),
    (user("hi"), {"response_format": {"type": "json_object"}}, "a response_format"),
])
def test_a_request_a_model_cannot_take_goes_to_one_that_can(router, messages, params, why):
    policy = Policy(router, parse_rules(LIMITS))
    d = policy.run(messages, _answer, params=params, threshold=WEAK_ALWAYS)
    assert (d.route, d.route_reason, d.model) == ("strong", "capability", "strong")
    assert d.capability.startswith("weak: ") and why in d.capability
    d = policy.run(user("hi"), _answer, threshold=WEAK_ALWAYS)  # a plain request still can
    assert (d.route, d.route_reason, d.capability) == ("weak", "learned", None)


def test_the_needs_of_a_request():
    assert request_needs("abcd" * 10) == Needs(tokens=10)
    n = request_needs(user("abcdefgh"), {"max_tokens": 5, "tools": [{}],
                                         "response_format": {"type": "json_schema"}})
    assert n == Needs(tokens=2 + 5, tools=True, response_format=True)
    assert request_needs(user("hi"), {"response_format": {"type": "text"}}).response_format is False
    assert ModelLimits().lacks(Needs(10**9, True, True, True)) is None


def test_escalation_and_fallback_skip_a_model_that_cannot_take_the_request(router):
    from router_ml.loop.policy import JsonValid

    rules = parse_rules({"ladder": ["weak", "mid", "strong"], "fallback": "spare",
                         "models": {"mid": {"tools": False}, "spare": {"tools": False}}})
    policy = Policy(router, rules, validators=[JsonValid()])
    tools = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    called = []

    def client(model, messages):
        called.append(model)
        return "not json" if model == "weak" else "{}"

    d = policy.run(user("hi"), client, params=tools, threshold=WEAK_ALWAYS)
    assert called == ["weak", "strong"] and d.model == "strong" and d.reason == "escalated"
    called.clear()

    def failing(model, messages):
        called.append(model)
        raise RuntimeError("down")

    from router_ml.loop.policy import AllModelsFailedError

    with pytest.raises(AllModelsFailedError):
        policy.run(user("hi"), failing, params=tools, threshold=WEAK_ALWAYS)
    assert called == ["weak", "strong"]  # neither mid nor the fallback, which lack tools


def test_no_model_that_can_take_it_is_a_clear_error(router):
    rules = parse_rules({"models": {"weak": {"vision": False}, "strong": {"vision": False}}})
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    with pytest.raises(NoCapableModelError, match="no model can take this request.*an image"):
        Policy(router, rules).decide(image)


@pytest.mark.parametrize("models, match", [
    ({"weak": {"context": 10}}, r"models\.weak\.context: unknown key"),
    ({"weak": {"context_tokens": 0}}, r"models\.weak\.context_tokens"),
    ({"weak": {"tools": "no"}}, r"models\.weak\.tools"),
])
def test_bad_model_limits_are_named(models, match):
    with pytest.raises(RuleConfigError, match=match):
        parse_rules({"models": models}, "rules.toml")


def test_a_bad_conversation_mode_is_named():
    with pytest.raises(RuleConfigError, match="conversation: must be one of free, sticky"):
        parse_rules({"conversation": "glued"}, "rules.toml")


def test_conversation_ids():
    a = conversation_id(user("second", "first"), {"user": "u1"})
    assert a == conversation_id(user("third", "first", "second"), {"user": "u1"})
    assert a != conversation_id(user("second", "first"), {"user": "u2"})
    assert a != conversation_id(user("second", "another first"), {"user": "u1"})
    assert conversation_id(user("x"), {"conversation": "c-42"}) == "c-42"
    assert conversation_id("a bare prompt") is None


@pytest.mark.parametrize("mode, first, second, expected, sticky", [
    ("free", STRONG_ALWAYS, WEAK_ALWAYS, "weak", False),
    ("sticky", STRONG_ALWAYS, WEAK_ALWAYS, "strong", True),
    ("sticky", WEAK_ALWAYS, STRONG_ALWAYS, "weak", True),
    ("escalate-only", STRONG_ALWAYS, WEAK_ALWAYS, "strong", True),
    ("escalate-only", WEAK_ALWAYS, STRONG_ALWAYS, "strong", False),
])
def test_the_conversation_mode(router, tmp_path, mode, first, second, expected, sticky):
    from router_ml.loop.decision_log import DecisionLog

    log = DecisionLog(tmp_path / "log")
    policy = Policy(router, parse_rules({"conversation": mode}), log=log)
    policy.run(user("first turn"), _answer, {"user": "u"}, threshold=first)
    d = policy.run(user("a follow-up", "first turn"), _answer, {"user": "u"}, threshold=second)
    assert d.model == expected and d.sticky is sticky
    assert d.route_reason == ("sticky" if sticky else "learned")
    # another conversation is not affected
    other = policy.run(user("a follow-up", "other first turn"), _answer, {"user": "u"},
                       threshold=second)
    assert other.sticky is False
    log.close()
    rows = log.read()
    assert [r["conversation"] for r in rows[:2]] == [d.conversation] * 2
    assert [r["sticky"] for r in rows] == [0, int(sticky), 0]


def test_conversation_memory_is_bounded_and_forgets():
    now = [0.0]
    mem = ConversationMemory(size=2, ttl=10, clock=lambda: now[0])
    mem.set("a", "x")
    mem.set("b", "y")
    mem.set("c", "z")
    assert mem.get("a") is None and mem.get("b") == "y"
    now[0] = 11
    assert mem.get("c") is None


def test_the_endpoint_reads_the_whole_request(router, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from servers import uvicorn_thread
    from servers import upstream_stub

    from router_ml.serve.endpoint import create_app

    up_app, seen = upstream_stub()
    with uvicorn_thread(up_app) as up:
        app = create_app(router, f"{up}/v1", api_key="k",
                         config=parse_rules({**LIMITS, "conversation": "sticky"}))
        with uvicorn_thread(app) as base:
            def chat(messages, model="router:1", headers=None, **kw):
                return httpx.post(f"{base}/v1/chat/completions", timeout=30, headers=headers,
                                  json={"model": model, "messages": messages, **kw})

            r = chat(user("hi"), tools=[{"type": "function", "function": {"name": "f"}}])
            assert r.status_code == 200, r.text
            assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == (
                "strong", "capability")
            r = chat(user("x " * 2500))
            assert r.headers["x-router-model"] == "strong"
            # a conversation named by its header keeps its model
            r = chat(user("first"), model="router:0", headers={"x-router-conversation": "c1"})
            assert r.headers["x-router-model"] == "strong"
            assert r.headers["x-router-conversation"] == "c1"
            r = chat(user("next", "first"), headers={"x-router-conversation": "c1"})
            assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == (
                "strong", "sticky")
            r = chat(user("next", "first"))  # no header, another id: learned (weak)
            assert r.headers["x-router-model"] == "weak"
            image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
            app2 = create_app(router, f"{up}/v1", api_key="k", config=parse_rules(
                {"models": {"weak": {"vision": False}, "strong": {"vision": False}}}))
            with uvicorn_thread(app2) as base2:
                r = httpx.post(f"{base2}/v1/chat/completions", timeout=30,
                               json={"model": "router", "messages": image})
                assert r.status_code == 400 and "no model can take" in r.text


def test_a_per_request_knob_keeps_the_routers_coverage_fallback():
    from pathlib import Path

    from router_ml import load_router

    router = load_router(Path(__file__).resolve().parents[2] / "models" / "default")
    router.fallback = router.strong_model
    uncovered = "日本語のテキストです。" * 5
    assert router.covered([uncovered])[0] == False  # noqa: E712 (numpy bool)
    assert router.score([uncovered])[0] < 0.5  # the knob below would send it to the weak model
    d = Policy(router).decide(uncovered, threshold=0.5)
    assert d.route == router.strong_model and d.threshold == 0.5 and d.coverage == 0.0
    covered = "What is 2+2?"
    assert Policy(router).decide(covered, threshold=0.0).route == router.strong_model
    assert Policy(router).decide(covered, threshold=1.0).route == router.weak_model
    with pytest.raises(ValueError, match="threshold"):
        router.route_batch([covered], threshold=1.5)


TASKS = {"coding": {"examples": ["Write a Python function that reverses a list",
                                 "Fix the bug in this JavaScript code", "Refactor this SQL query",
                                 "Implement a binary search in C++"]},
         "math": {"examples": ["Solve for x: 3x + 5 = 20", "What is the integral of x^2?",
                               "Compute 17 times 23", "Prove that the square root of 2 is irrational"]},
         "chit_chat": {"examples": ["hi, how are you?", "good morning!", "tell me a joke",
                                    "thanks, that was nice"]}}


def test_the_task_of_a_request_is_detected_and_rules_match_it(router, tmp_path):
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.monitoring import format_report, report

    log = DecisionLog(tmp_path / "log")
    rules = parse_rules({"tasks": TASKS, "rules": [{"name": "code", "task": "coding",
                                                    "model": "strong"}]})
    policy = Policy(router, rules, log=log)
    d = policy.run(user("Write a Python function that merges two sorted lists"), _answer,
                   threshold=WEAK_ALWAYS)
    assert (d.task, d.task_source) == ("coding", "detected") and -1 <= d.task_similarity <= 1
    assert (d.route_reason, d.rule, d.model) == ("rule", "code", "strong")
    d = policy.run(user("Solve for y: 2y - 4 = 10"), _answer, threshold=WEAK_ALWAYS)
    assert (d.task, d.task_source, d.route_reason) == ("math", "detected", "learned")
    d = policy.run(user("Write a Python function"), _answer, {"task": "math"},
                   threshold=WEAK_ALWAYS)
    assert (d.task, d.task_source, d.task_similarity, d.route_reason) == (
        "math", "given", None, "learned")
    log.close()
    rows = log.read()
    assert [(r["task"], r["task_source"]) for r in rows] == [
        ("coding", "detected"), ("math", "detected"), ("math", "given")]
    rep = report(tmp_path / "log")
    assert rep["tasks"]["math"]["share"] == pytest.approx(2 / 3)
    assert rep["tasks"]["coding"]["detected_share"] == 1.0
    assert rep["tasks"]["math"]["escalation_rate"] == 0.0
    assert "tasks (share, escalations)" in format_report(rep)


def test_without_task_types_nothing_is_detected(router):
    d = Policy(router, parse_rules({})).decide(user("Write a Python function"))
    assert (d.task, d.task_source) == (None, None)
    with_defaults = parse_rules({"tasks": {"extend_default": True}})
    assert {"code", "math", "chit_chat"} <= set(with_defaults.tasks)


def test_a_bad_task_table_is_named():
    with pytest.raises(RuleConfigError, match=r"rules.toml: tasks.coding.examples"):
        parse_rules({"tasks": {"coding": {"examples": []}}}, "rules.toml")
    with pytest.raises(RuleConfigError, match=r"tasks.coding.min_similarity"):
        parse_rules({"tasks": {"coding": {"examples": ["x"], "min_similarity": 3}}}, "rules.toml")


def test_the_endpoint_names_the_task(router):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from servers import uvicorn_thread
    from servers import upstream_stub

    from router_ml.serve.endpoint import create_app

    up_app, _ = upstream_stub()
    with uvicorn_thread(up_app) as up:
        app = create_app(router, f"{up}/v1", api_key="k", config=parse_rules({"tasks": TASKS}))
        with uvicorn_thread(app) as base:
            r = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
                "model": "router", "messages": user("Compute 12 times 31")})
            assert r.status_code == 200, r.text
            assert (r.headers["x-router-task"], r.headers["x-router-task-source"]) == (
                "math", "detected")
            r = httpx.post(f"{base}/v1/chat/completions", timeout=30, headers={
                "x-router-task": "coding"}, json={"model": "router", "messages": user("hi")})
            assert (r.headers["x-router-task"], r.headers["x-router-task-source"]) == (
                "coding", "given")


def test_the_production_guides_rules_file_works_with_the_default_router():
    import re
    import tomllib
    from pathlib import Path

    from router_ml import load_router

    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "production.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", page, re.S) if "[tasks.coding]" in b)
    config = parse_rules(tomllib.loads(re.sub(r"(?m)^    ", "", block)), "production.md")
    policy = Policy(load_router(root / "models" / "default"), config)
    d = policy.run(user("Write a Python function that sorts a dict by value"), _answer)
    assert (d.task, d.rule, d.model) == ("coding", "coding", "gpt-4-1106-preview")
    d = policy.run(user("hello"), _answer, params={"tools": [{"type": "function"}]})
    assert d.model == "gpt-4-1106-preview"
