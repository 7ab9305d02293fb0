"""A short run of benchmarks/bench_faults.py's scenario, in a child process: the endpoint with the
default router against the fault-injecting stub (the cheap model fails 30 % with HTTP 500 and
hangs 5 %; half-way its answers go bad). Invariants: no 5xx while the strong model is healthy,
one log row per request, and the report's escalation alert fires after the jump, not before."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("litellm")
pytest.importorskip("httpx")

from conftest import load_benchmark  # noqa: E402
from servers import child_env, uvicorn_thread  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


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


def short_run(log_dir: Path) -> dict:
    """The scenario, with the stub, the endpoint and the clients in this process: the
    summary, the failed requests, the log's row count and the alert check."""
    from router_ml.core.router import load_router
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.validators import NoRefusal
    from router_ml.serve.endpoint import create_app

    bench = load_benchmark("bench_faults")
    router = load_router(ROOT / "models" / "default")
    prompts = bench.prompt_pool(router, 32)
    plan = dict(bench.FAULTS_BEFORE)
    log = DecisionLog(log_dir, flush_seconds=0.5)
    # a healthy call gets a second
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
    return {"summary": bench.summarize(records),
            "failed": [r for r in records if r["status"] != 200], "requests": len(records),
            "log_rows": len(DecisionLog(log_dir).read()),
            "alert": bench.alert_check(log_dir, t0, t_jump, t_end, buckets=4)}


def test_faults_short_run(tmp_path):
    # In a child process: in pytest's own, with the heap of every test before it, a garbage
    # collection can hold every thread past the 1 s timeout of the healthy model's calls.
    import json
    import subprocess
    import sys

    code = ("import json, sys; from pathlib import Path; "
            "sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]).parent)]; "
            "import test_faults; print(json.dumps(test_faults.short_run(Path(sys.argv[2]))))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent),
                          str(tmp_path / "log")], capture_output=True, text=True, timeout=180,
                         env={**os.environ, **child_env()})
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    s = r["summary"]
    assert s["errors_5xx"] == 0 and s["errors"] == 0, (s, r["failed"])
    assert s["fallback"] > 0 and s["escalated"] > 0, s
    assert r["log_rows"] == r["requests"] >= 100
    alert = r["alert"]
    assert alert["fired_after_jump"] and not alert["fired_before_jump"], alert
