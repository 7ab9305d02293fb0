"""router_ml.serve.endpoint: the OpenAI-compatible endpoint against a stub upstream on 127.0.0.1
(it echoes the model it was asked for), non-streaming and streaming, health and metrics."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("litellm")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from servers import uvicorn_thread  # noqa: E402

HARD, EASY = "prove the theorem about the integral number 4", "say hello to my friend number 5"


def stub_upstream():
    """An OpenAI-compatible chat server that answers 'echo:<model>' (also as a stream), and
    fails with HTTP 500 for the model name 'broken'. Records every request body."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    seen = []

    async def chat(request):
        body = await request.json()
        seen.append(body)
        model = body["model"]
        if body["messages"][-1]["content"] == "make the upstream fail":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        base = {"id": "chatcmpl-1", "created": 1, "model": model}
        if body.get("stream"):
            async def gen():
                for i, piece in enumerate(["echo:", model]):
                    chunk = {**base, "object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": piece}
                         if i == 0 else {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                end = {**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        return JSONResponse({**base, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"echo:{model}"},
             "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]), seen


@pytest.fixture(scope="module")
def served(make_router):
    from router_ml.serve.endpoint import create_app

    router = make_router("tfidf")
    upstream, seen = stub_upstream()
    with uvicorn_thread(upstream) as up:
        app = create_app(router, f"{up}/v1", api_key="test-key", timeout=20)
        with uvicorn_thread(app) as base:
            yield router, base, seen


def _chat(base, prompt, model="router", **kw):
    return httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
        "model": model, "messages": [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": prompt}], **kw})


def _metric(text, name, labels=""):
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_health(served):
    router, base, _ = served
    r = httpx.get(f"{base}/health", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "models": router.models, "threshold": router.threshold,
                        "lam": None}


def test_completion_goes_to_the_routed_model(served):
    router, base, seen = served
    for prompt in (HARD, EASY):
        expected = router.route(prompt).model
        r = _chat(base, prompt, temperature=0.2)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] == f"echo:{expected}"
        assert r.headers["x-router-model"] == expected
        assert float(r.headers["x-router-score"]) == pytest.approx(router.route(prompt).score,
                                                                   abs=1e-6)
        assert seen[-1]["model"] == expected and seen[-1]["temperature"] == 0.2
        assert seen[-1]["messages"][-1]["content"] == prompt
    assert router.route(HARD).model != router.route(EASY).model  # both sides exercised


def test_knob_overrides_the_threshold_per_request(served):
    router, base, _ = served
    assert _chat(base, EASY, model="router:0").json()["choices"][0]["message"]["content"] \
        == f"echo:{router.strong_model}"
    assert _chat(base, HARD, model="router:1").headers["x-router-model"] == router.weak_model
    for bad in ("gpt-4o", "router:abc", "router:1.5"):
        r = _chat(base, EASY, model=bad)
        assert r.status_code == 400 and "router" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/v1/chat/completions", json={"model": "router", "messages": "hi"},
                   timeout=10)
    assert r.status_code == 400


def test_streaming_returns_sse_chunks(served):
    router, base, _ = served
    expected = router.route(HARD).model
    with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=30, json={
            "model": "router", "stream": True,
            "messages": [{"role": "user", "content": HARD}]}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c.get("choices"))
    assert text == f"echo:{expected}"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_metrics_count_decisions_latency_and_upstream_errors(served):
    router, base, _ = served
    before = httpx.get(f"{base}/metrics", timeout=10).text
    strong = f'{{model="{router.strong_model}"}}'
    n0 = _metric(before, "router_ml_decisions_total", strong)
    c0 = _metric(before, "router_ml_decision_seconds_count")
    e0 = _metric(before, "router_ml_upstream_errors_total")
    for _ in range(3):
        assert _chat(base, HARD, model="router:0").status_code == 200
    r = _chat(base, "make the upstream fail", model="router:0")
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
    after = httpx.get(f"{base}/metrics", timeout=10).text
    assert _metric(after, "router_ml_decisions_total", strong) == n0 + 4
    assert _metric(after, "router_ml_decision_seconds_count") == c0 + 4
    assert _metric(after, "router_ml_upstream_errors_total") == e0 + 1
    assert "router_ml_decision_seconds_bucket" in after


def test_serve_refuses_to_start_without_upstream_or_router(tmp_path, capsys, monkeypatch):
    from router_ml.serve.endpoint import serve_main

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert serve_main(["--model", str(tmp_path)]) == 2
    assert "--upstream-base" in capsys.readouterr().err
    assert serve_main(["--model", str(tmp_path / "none"), "--upstream-base", "http://x"]) == 2
    assert "not a directory" in capsys.readouterr().err
