"""router_ml.serve: the OpenAI-compatible endpoint running the policy, against a stub upstream on
127.0.0.1 whose behaviour per model is set by markers in the prompt ([fail:weak], [slow:weak],
[badjson:weak], [break:strong]): routing, rules from metadata and headers, fallback on errors
and timeouts, escalation on response_format, streaming, the circuit breaker, the decision log,
feedback, quality sampling off the request path, metrics, the model list, and a graceful
shutdown of the real `router-ml serve` process."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("litellm")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from servers import child_env, free_port, process, uvicorn_thread  # noqa: E402

HARD, EASY = "prove the theorem about the integral number 4", "say hello to my friend number 5"
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}


def stub_upstream(judge_gate: threading.Event | None = None):
    """An OpenAI-compatible chat server. Answers 'echo:<model>' (as JSON '{"answer": 4}' when
    the request has a response_format), also as a stream. Markers in the last message:
    [fail:M] HTTP 500 for model M, [slow:M] M answers after 3 s, [badjson:M] M answers
    'not json', [break:M] M's stream breaks off after its first chunk. The model 'judge'
    waits for ``judge_gate`` (at most 10 s) and answers [[C]]. Records every request body."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    seen = []

    async def chat(request):
        body = await request.json()
        seen.append(body)
        model, text = body["model"], body["messages"][-1]["content"]
        if model == "judge":
            if judge_gate is not None:
                await asyncio.to_thread(judge_gate.wait, 10)
            answer = "Same quality. [[C]]"
        elif f"[fail:{model}]" in text:
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        elif f"[badjson:{model}]" in text:
            answer = "not json"
        else:
            answer = '{"answer": 4}' if body.get("response_format") else f"echo:{model}"
        if f"[slow:{model}]" in text:
            await asyncio.sleep(3)
        base = {"id": "chatcmpl-1", "created": 1, "model": model}
        if body.get("stream"):
            async def gen():
                for i, piece in enumerate([answer[:5], answer[5:]]):
                    chunk = {**base, "object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": piece}
                         if i == 0 else {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                    if f"[break:{model}]" in text:
                        raise RuntimeError("the stub breaks the stream off")
                end = {**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        return JSONResponse({**base, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer},
             "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]), seen


RULES = {"ladder": ["weak", "strong"], "max_escalations": 1, "tiers": {"fast": "weak"},
         "rules": [{"name": "code", "task": "code", "model": "strong"},
                   {"name": "legal", "tags": ["legal"], "model": "strong"},
                   {"name": "realtime", "max_latency": "realtime", "tier": "fast"}]}


@pytest.fixture(scope="module")
def upstream():
    gate = threading.Event()
    app, seen = stub_upstream(gate)
    with uvicorn_thread(app) as up:
        yield f"{up}/v1", seen, gate
    gate.set()


@pytest.fixture(scope="module")
def served(make_router, upstream, tmp_path_factory):
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.rules import parse_rules
    from router_ml.serve.endpoint import create_app

    router = make_router("tfidf")
    url, seen, _ = upstream
    log = DecisionLog(tmp_path_factory.mktemp("served") / "log")
    app = create_app(router, url, api_key="test-key", timeout=2, config=parse_rules(RULES),
                     log=log, breaker_failures=1000)
    with uvicorn_thread(app) as base:
        yield router, base, seen, app
    app.state.close()


def _chat(base, prompt, model="router", headers=None, **kw):
    return httpx.post(f"{base}/v1/chat/completions", timeout=30, headers=headers, json={
        "model": model, "messages": [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": prompt}], **kw})


def _stream(base, prompt, model="router", **kw):
    with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=30, json={
            "model": model, "stream": True,
            "messages": [{"role": "user", "content": prompt}], **kw}) as r:
        lines = [line for line in r.iter_lines() if line]
        return r, lines


def _text(lines):
    chunks = [json.loads(line[len("data: "):]) for line in lines if line != "data: [DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c.get("choices")), chunks


def _metric(text, name, labels=""):
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_health_and_the_model_list(served):
    router, base, _, _ = served
    r = httpx.get(f"{base}/health", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "models": router.models, "threshold": router.threshold,
                        "lam": None, "ladder": ["weak", "strong"]}
    openai = pytest.importorskip("openai")
    listed = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0).models.list()
    # only what a request may name; the router's candidates are listed beside it
    assert [m.id for m in listed.data] == ["router"]
    assert listed.data[0].model_extra["candidates"] == router.models


def test_completion_goes_to_the_routed_model(served):
    router, base, seen, _ = served
    for prompt in (HARD, EASY):
        expected = router.route(prompt).model
        r = _chat(base, prompt, temperature=0.2)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == f"echo:{expected}"
        assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == (expected, "learned")
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
        assert float(r.headers["x-router-score"]) == pytest.approx(router.route(prompt).score,
                                                                   abs=1e-6)
        assert seen[-1]["model"] == expected and seen[-1]["temperature"] == 0.2
        assert seen[-1]["messages"][-1]["content"] == prompt
    assert router.route(HARD).model != router.route(EASY).model  # both sides exercised


def test_knob_overrides_the_threshold_per_request(served):
    router, base, _, _ = served
    assert _chat(base, EASY, model="router:0").json()["choices"][0]["message"]["content"] \
        == f"echo:{router.strong_model}"
    assert _chat(base, HARD, model="router:1").headers["x-router-model"] == router.weak_model
    for bad in ("gpt-4o", "router:abc", "router:1.5"):
        r = _chat(base, EASY, model=bad)
        assert r.status_code == 400 and "router" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/v1/chat/completions", json={"model": "router", "messages": "hi"},
                   timeout=10)
    assert r.status_code == 400


def test_rules_read_metadata_and_headers(served):
    _, base, _, _ = served
    cases = [({"headers": {"x-router-task": "code"}}, "strong", "code"),
             ({"metadata": {"task": "code"}}, "strong", "code"),
             ({"headers": {"x-router-tags": "misc, legal"}}, "strong", "legal"),
             ({"metadata": {"tags": ["legal"]}}, "strong", "legal"),
             ({"headers": {"x-router-latency": "realtime"}, "model": "router:0"}, "weak",
              "realtime")]
    for kw, model, rule in cases:
        r = _chat(base, EASY if model == "strong" else HARD, **kw)
        assert r.status_code == 200, (kw, r.text)
        assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == (model, "rule"), kw
    r = _chat(base, EASY, headers={"x-router-latency": "soon"})
    assert r.status_code == 400 and "realtime" in r.json()["error"]["message"]
    r = _chat(base, EASY, metadata={"tags": "legal", "timeout": -1})
    assert r.status_code == 400 and "timeout" in r.json()["error"]["message"]


def test_fallback_on_an_error_and_on_a_timeout(served):
    _, base, seen, _ = served
    before = httpx.get(f"{base}/metrics", timeout=10).text
    r = _chat(base, f"{EASY} [fail:weak]", model="router:1")
    assert r.status_code == 200, r.text
    assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == ("strong", "fallback")
    assert [b["model"] for b in seen[-2:]] == ["weak", "strong"]
    # weak answers after 3 s; this request allows 1 s per call (the floor)
    r = _chat(base, f"{EASY} [slow:weak]", model="router:1", headers={"x-router-timeout": "1"})
    assert r.status_code == 200, r.text
    assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == ("strong", "fallback")
    after = httpx.get(f"{base}/metrics", timeout=10).text
    weak = '{model="weak"}'
    assert _metric(after, "router_ml_fallbacks_total", weak) == \
        _metric(before, "router_ml_fallbacks_total", weak) + 2
    assert _metric(after, "router_ml_upstream_errors_total", weak) == \
        _metric(before, "router_ml_upstream_errors_total", weak) + 2
    assert _metric(after, "router_ml_timeouts_total", weak) == \
        _metric(before, "router_ml_timeouts_total", weak) + 1
    # every model fails: a 502 that still says what happened
    r = _chat(base, f"{EASY} [fail:weak] [fail:strong]", model="router:1")
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
    assert r.headers["x-router-reason"] == "fallback" and r.headers["x-request-id"]


def test_response_format_escalates_an_invalid_answer(served):
    _, base, _, _ = served
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    r = _chat(base, f"{HARD} [badjson:weak]", model="router:1", response_format=fmt)
    assert r.status_code == 200, r.text
    assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == ("strong", "escalated")
    assert json.loads(r.json()["choices"][0]["message"]["content"]) == {"answer": 4}
    r = _chat(base, HARD, model="router:1", response_format=fmt)
    assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == ("weak", "learned")
    r = _chat(base, f"{HARD} [badjson:weak]", model="router:1",
              response_format={"type": "json_object"})
    assert r.headers["x-router-reason"] == "escalated"
    r = _chat(base, HARD, response_format={"type": "json_schema",
                                           "json_schema": {"schema": {"type": "nonsense"}}})
    assert r.status_code == 400 and "JSON Schema" in r.json()["error"]["message"]


def test_streaming(served):
    router, base, _, _ = served
    expected = router.route(HARD).model
    r, lines = _stream(base, HARD)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    text, chunks = _text(lines)
    assert text == f"echo:{expected}"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    # fallback before the first byte
    r, lines = _stream(base, f"{EASY} [fail:weak]", model="router:1")
    assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == ("strong", "fallback")
    assert _text(lines)[0] == "echo:strong"
    # with a validator the whole answer is checked (and escalated) before it is sent
    r, lines = _stream(base, f"{EASY} [badjson:weak]", model="router:1",
                       response_format={"type": "json_object"})
    assert r.headers["x-router-reason"] == "escalated" and _text(lines)[0] == '{"answer": 4}'
    # a stream that breaks off after it started ends with an error event
    r, lines = _stream(base, f"{EASY} [break:strong]", model="router:0")
    assert r.status_code == 200 and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][len("data: "):])["error"]["type"] == "upstream_error"
    assert _text(lines[:-2])[0] == "echo:"


def test_metrics_count_decisions_and_latency(served):
    router, base, _, _ = served
    before = httpx.get(f"{base}/metrics", timeout=10).text
    strong = f'{{model="{router.strong_model}"}}'
    n0 = _metric(before, "router_ml_decisions_total", strong)
    c0 = _metric(before, "router_ml_decision_seconds_count")
    for _ in range(3):
        assert _chat(base, HARD, model="router:0").status_code == 200
    after = httpx.get(f"{base}/metrics", timeout=10).text
    assert _metric(after, "router_ml_decisions_total", strong) == n0 + 3
    assert _metric(after, "router_ml_decision_seconds_count") == c0 + 3
    assert _metric(after, "router_ml_responses_total",
                   f'{{model="{router.strong_model}",reason="learned"}}') >= 3
    assert "router_ml_decision_seconds_bucket" in after


def test_the_log_and_feedback(make_router, upstream, tmp_path):
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.cli.monitor import report_main
    from router_ml.serve.endpoint import create_app

    url, _, _ = upstream
    log = DecisionLog(tmp_path / "log", flush_seconds=0.2)
    app = create_app(make_router("tfidf"), url, timeout=2, log=log)
    with uvicorn_thread(app) as base:
        ids = [_chat(base, p).headers["x-request-id"] for p in (HARD, EASY, f"{EASY} [fail:weak]")]
        r = httpx.post(f"{base}/v1/feedback", json={"request_id": ids[1], "score": 0.0}, timeout=10)
        assert r.status_code == 200 and r.json()["recorded"]
        assert httpx.post(f"{base}/v1/feedback", json={"request_id": "nope", "score": 1},
                          timeout=10).status_code == 404
        assert httpx.post(f"{base}/v1/feedback", json={"score": 1}, timeout=10).status_code == 400
    app.state.close()
    rows = DecisionLog(tmp_path / "log").read()
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert {r["request_id"]: r["feedback"] for r in rows}[ids[1]] == 0.0
    assert [r["reason"] for r in sorted(rows, key=lambda r: ids.index(r["request_id"]))][2] \
        == "fallback"
    assert report_main([str(tmp_path / "log")]) == 0


def test_feedback_without_a_log_says_how_to_get_one(make_router, upstream):
    from router_ml.serve.endpoint import create_app

    with uvicorn_thread(create_app(make_router("tfidf"), upstream[0])) as base:
        r = httpx.post(f"{base}/v1/feedback", json={"request_id": "x", "score": 1}, timeout=10)
    assert r.status_code == 409 and "--log" in r.json()["error"]["message"]


def test_quality_sampling_runs_off_the_request_path(make_router, upstream, tmp_path):
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.serve.endpoint import create_app

    url, seen, gate = upstream
    gate.clear()  # the judge answers only when the test lets it
    log = DecisionLog(tmp_path / "log")
    app = create_app(make_router("tfidf"), url, timeout=15, log=log, sample_rate=1.0,
                     judge="judge", sample_queue=1, seed=0)
    with uvicorn_thread(app) as base:
        ids = []
        for i in range(4):  # answered while the judge of the first sample is still waiting
            r = _chat(base, f"{EASY} {i}", model="router:1")
            assert r.status_code == 200 and r.headers["x-router-model"] == "weak"
            ids.append(r.headers["x-request-id"])
        dropped = _metric(httpx.get(f"{base}/metrics", timeout=10).text,
                          "router_ml_samples_dropped_total")
        assert not gate.is_set() and dropped >= 1
        gate.set()
        app.state.close()
    rows = DecisionLog(tmp_path / "log").read()
    assert len(rows) == 4
    judged = [r for r in rows if r["sampled"]]
    assert len(judged) == 4 - dropped
    assert all(r["strong_better"] == 0.5 and r["sample_answer"] == "echo:strong" for r in judged)
    assert sum(b["model"] == "judge" for b in seen) >= len(judged)


def test_the_circuit_opens_and_shows_in_metrics(make_router, upstream):
    from router_ml.serve.endpoint import create_app

    url, seen, _ = upstream
    app = create_app(make_router("tfidf"), url, timeout=2, breaker_failures=2,
                     breaker_cooldown=600)
    with uvicorn_thread(app) as base:
        for _ in range(2):
            assert _chat(base, f"{EASY} [fail:weak]", model="router:1").status_code == 200
        n = len(seen)
        r = _chat(base, EASY, model="router:1")
        assert (r.headers["x-router-model"], r.headers["x-router-reason"]) == ("strong", "fallback")
        assert [b["model"] for b in seen[n:]] == ["strong"]  # weak skipped without a call
        text = httpx.get(f"{base}/metrics", timeout=10).text
    assert _metric(text, "router_ml_circuit_state", '{model="weak"}') == 1.0
    assert _metric(text, "router_ml_circuit_opened_total", '{model="weak"}') == 1.0


def test_breaker_states():
    from router_ml.loop.breaker import CircuitBreaker

    now = [0.0]
    b = CircuitBreaker(failures=3, cooldown=10, clock=lambda: now[0])
    for _ in range(2):
        b.failure("m")
    b.success("m")  # a success resets the count
    for _ in range(2):
        b.failure("m")
    assert b.state("m") == "closed" and b.allow("m")
    b.failure("m")
    assert b.state("m") == "open" and not b.allow("m")
    now[0] = 10.0
    assert b.allow("m") and not b.allow("m")  # half-open: one trial at a time
    b.failure("m")
    assert b.state("m") == "open" and b.opened["m"] == 2
    now[0] = 20.0
    assert b.allow("m")
    b.success("m")
    assert b.state("m") == "closed" and b.states() == {}
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(failures=0)


def test_serve_refuses_to_start_without_upstream_or_router(tmp_path, capsys, monkeypatch):
    from router_ml.cli.serve import serve_main

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert serve_main(["--model", str(tmp_path)]) == 2
    assert "--upstream-base" in capsys.readouterr().err
    assert serve_main(["--model", str(tmp_path / "none"), "--upstream-base", "http://x"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert serve_main(["--model", str(ROOT / "models" / "default"), "--upstream-base",
                       "http://x", "--sample-rate", "0.1"]) == 2
    assert "--judge" in capsys.readouterr().err


def test_sigterm_drains_in_flight_requests_and_flushes_the_log(tmp_path, upstream):
    """The real `router-ml serve`: it says where it listens; SIGTERM while a request waits on a
    slow upstream answers that request, then exits with every row in the log."""
    from router_ml.loop.decision_log import DecisionLog

    url, seen, _ = upstream
    port, log_dir = free_port(), tmp_path / "log"
    cmd = [sys.executable, "-m", "router_ml.cli.main", "serve", "--model",
           str(ROOT / "models" / "default"), "--upstream-base", url, "--port", str(port),
           "--log", str(log_dir), "--flush-seconds", "60", "--timeout", "10"]
    out = tmp_path / "serve.log"
    with process(cmd, f"http://127.0.0.1:{port}/health", out, env=child_env()) as proc:
        base = f"http://127.0.0.1:{port}"
        assert _chat(base, EASY).status_code == 200
        result = {}
        n = len(seen)
        slow = threading.Thread(target=lambda: result.update(r=_chat(
            base, "[slow:gpt-4-1106-preview] [slow:Mixtral-8x7B-Instruct-v0.1] hi")))
        slow.start()
        deadline = time.monotonic() + 20
        while len(seen) == n and time.monotonic() < deadline:  # the request reached the stub
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        slow.join(30)
        # uvicorn re-raises the signal once it has shut down
        assert proc.wait(30) in (0, -signal.SIGTERM)
    assert result["r"].status_code == 200
    text = out.read_text()
    assert f"listening on http://127.0.0.1:{port}" in text and url in text
    assert "router:   " in text and "gpt-4-1106-preview" in text
    rows = DecisionLog(log_dir).read()
    assert len(rows) == 2  # the flush interval is 60 s: the shutdown wrote them


WARM_CHECK = r"""
import sys, threading, time
sys.path[:0] = [sys.argv[1], sys.argv[1].rsplit("/", 1)[0]]
from test_serving import stub_upstream
from servers import uvicorn_thread
import httpx
from router_ml.core.encoders import TfidfEncoder
from router_ml.learn.spec import RouterSpec
from router_ml.serve.endpoint import create_app

router = RouterSpec(TfidfEncoder(min_df=1), models=["strong", "weak"]).fit(
    ["prove it", "hi there", "integral of x", "say hello"] * 5,
    [[1, 0], [1, 1], [1, 0], [1, 1]] * 5)
app, seen = stub_upstream()
with uvicorn_thread(app) as up, uvicorn_thread(create_app(router, f"{up}/v1")) as base:
    started = len(seen)
    httpx.get(f"{base}/health", timeout=30)  # the client's own imports
    before = set(sys.modules)
    r = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
        "model": "router", "messages": [{"role": "user", "content": "hi there"}]})
    print(r.status_code, started, len(seen),
          sum(m.startswith("litellm") for m in set(sys.modules) - before))
"""


def test_startup_loads_what_the_first_call_would_import_and_sends_nothing():
    # LiteLLM's first call imports ~40 of its modules and builds their schemas (0.6-1 s
    # holding the event loop): on the first requests that stall ran into the timeouts of the
    # calls already in flight
    import os
    import subprocess

    out = subprocess.run([sys.executable, "-c", WARM_CHECK, str(Path(__file__).resolve().parent)],
                         capture_output=True, text=True, env={**os.environ, **child_env()},
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    status, started, sent, imported = map(int, out.stdout.split()[-4:])
    assert (status, started, sent) == (200, 0, 1)
    assert imported <= 2, f"the first request imported {imported} of LiteLLM's modules"


def test_the_docs_quick_start_serves_a_chat_request(tmp_path, upstream):
    """docs/serving.md's three commands, as written but for the upstream (the stub) and the
    port: the endpoint starts, /health answers, and the chat request gets the routed answer."""
    import shlex

    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)
                 if "/health" in b)
    serve, health, chat = block.strip().splitlines()
    url, _, _ = upstream
    port = free_port()
    argv = shlex.split(serve.rstrip("&"))
    assert argv[0] == ".venv/bin/router-ml" and argv[1] == "serve"
    argv = [sys.executable, "-m", "router_ml.cli.main", *argv[1:]]
    argv[argv.index("--upstream-base") + 1] = url
    argv[argv.index("--model") + 1] = str(ROOT / argv[argv.index("--model") + 1])
    with process([*argv, "--port", str(port)], f"http://127.0.0.1:{port}/health",
                 tmp_path / "serve.log", env=child_env()):
        base = f"http://127.0.0.1:{port}"
        h = shlex.split(health)
        assert h[:2] == ["curl", "-s"] and h[2] == "http://127.0.0.1:8000/health"
        assert httpx.get(h[2].replace("http://127.0.0.1:8000", base), timeout=30).status_code == 200
        c = shlex.split(chat)
        body = json.loads(c[c.index("-d") + 1])
        r = httpx.post(c[2].replace("http://127.0.0.1:8000", base), json=body, timeout=30)
    from router_ml import load_router

    routed = load_router(ROOT / "models" / "default").route(body["messages"][-1]["content"])
    assert r.status_code == 200 and r.headers["x-router-model"] == routed.model
    assert r.json()["choices"][0]["message"]["content"]
