"""A short run of benchmarks/bench_faults.py's scenario, in this process: the endpoint with the
default router against the fault-injecting stub (the cheap model fails 30 % with HTTP 500 and
hangs 5 %; half-way its answers go bad). Invariants: no 5xx while the strong model is healthy,
one log row per request, and the report's escalation alert fires after the jump, not before."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("litellm")
pytest.importorskip("httpx")

from conftest import load_benchmark  # noqa: E402
from servers import uvicorn_thread  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_faults")


def test_the_stub_injects_each_fault(bench):
    import httpx

    plan = {"m": {"error": 1.0}}
    with uvicorn_thread(bench.stub_app(plan)) as up:
        post = lambda **kw: httpx.post(f"{up}/v1/chat/completions", timeout=10, json={  # noqa: E731
            "model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})
        assert post().status_code == 500
        plan["m"] = {"refusal": 1.0}
        assert "sorry" in post().json()["choices"][0]["message"]["content"]
        plan["m"] = {"bad_json": 1.0}
        assert post(response_format={"type": "json_object"}).json()["choices"][0]["message"][
            "content"] == "sure, here it is"
        plan["m"] = {"malformed": 1.0}
        with pytest.raises(ValueError):
            post().json()
        plan["m"] = {}
        assert post(response_format={"type": "json_object"}).json()["choices"][0]["message"][
            "content"] == '{"answer": 4}'


def test_faults_short_run(bench, tmp_path):
    from router_ml.core.load import load_router
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.validators import NoRefusal
    from router_ml.serve.endpoint import create_app

    t_start = time.monotonic()
    router = load_router(ROOT / "models" / "default")
    prompts = bench.prompt_pool(router, 32)
    plan = dict(bench.FAULTS_BEFORE)
    log = DecisionLog(tmp_path / "log", flush_seconds=0.5)
    # the stub, the endpoint and the clients share this process: a healthy call gets a second
    with uvicorn_thread(bench.stub_app(plan, hang_seconds=1.5, slow_seconds=0.05)) as up:
        app = create_app(router, f"{up}/v1", timeout=1.0, connect_timeout=1.0, log=log,
                         # buckets here last under 2 s: an open circuit would hide the
                         # cheap model's answers for a whole bucket (the benchmark's are 16 s)
                         validators=[NoRefusal()], breaker_failures=10, breaker_cooldown=0.2)
        with uvicorn_thread(app) as base:
            url = f"{base}/v1/chat/completions"
            t0 = time.time()
            first = asyncio.run(bench.load(url, prompts, 6, 3.0, 600, timeout=20))
            t_jump = time.time()
            plan.clear()
            plan.update(bench.FAULTS_AFTER)
            second = asyncio.run(bench.load(url, prompts, 6, 3.0, 600, timeout=20))
            t_end = time.time()
        app.state.close()
    records = first + second
    s = bench.summarize(records)
    rows = DecisionLog(tmp_path / "log").read()
    failed = [r for r in records if r["status"] != 200]
    assert s["errors_5xx"] == 0 and s["errors"] == 0, (s, failed)
    assert s["fallback"] > 0 and s["escalated"] > 0, s
    assert len(rows) == len(records) >= 100
    alert = bench.alert_check(tmp_path / "log", t0, t_jump, t_end, buckets=4)
    assert alert["fired_after_jump"] and not alert["fired_before_jump"], alert
    assert time.monotonic() - t_start < 90
