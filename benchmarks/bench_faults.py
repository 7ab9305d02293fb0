"""Fault injection: ``router-ml serve`` against an upstream whose cheap model fails, loopback only.

    python benchmarks/bench_faults.py [--model models/default] [--clients 16]
        [--baseline-seconds 30] [--seconds 160] [--max-requests 14000]

Starts a stub OpenAI-compatible upstream with failure modes per model (HTTP 500 at a rate,
hangs past the router's timeout, slow answers, malformed bodies, refusals, invalid JSON for
JSON requests) and ``router-ml serve`` (rules-free policy, refusal check, 1 s timeout, circuit
breaker, decision log, 3 % quality sampling with a judge at the stub), as separate processes
on 127.0.0.1. Concurrent clients send a fixed pool of prompts (half routed to the cheap model;
a fifth of the requests ask for ``response_format`` ``json_object``):

1. a run without faults (the latency baseline);
2. the fault run: the cheap model fails 30 % (HTTP 500) and hangs 5 %, with a little of every
   other fault; half-way its answers go bad (refusals 30 %, invalid JSON 50 %) and
   escalations jump. The strong model stays healthy (2 % slow answers).

``--scenario hostile`` runs instead, with both models healthy, normal clients beside hostile
ones that send tiny and short timeouts against hanging answers, 5 MB bodies, 60,000-deep JSON,
fields outside the allow-list (``base_url``) and prompts whose answers are 20 MB; it prints the
normal clients' errors, what the hostile ones got, circuit openings, log rows against the
requests that reached the policy, and the server's RSS.

Prints a table: requests, client-visible errors (5xx), escalations, fallbacks, timeouts,
circuit openings, log rows against requests, p50/p99 latency added against the run without
faults, the server's RSS before and after, whether the report's escalation alert fired within
one report bucket after the jump (and not before it), and the policy's own overhead per
request against the plain ``router.route`` (in this process). Not part of ``make test``;
``tests/serve/test_faults.py`` runs a short version of the same scenario.
"""

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import wait  # noqa: E402  (the benchmarks' own helper)

ROOT = Path(__file__).resolve().parent.parent
CHEAP, STRONG, JUDGE = "Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview", "judge"
HEALTHY = {STRONG: {"slow": 0.02}}
FAULTS_BEFORE = {CHEAP: {"error": 0.30, "timeout": 0.05, "slow": 0.02, "malformed": 0.01,
                         "refusal": 0.01, "bad_json": 0.02}, **HEALTHY}
FAULTS_AFTER = {CHEAP: {"error": 0.30, "timeout": 0.05, "slow": 0.02, "malformed": 0.01,
                        "refusal": 0.30, "bad_json": 0.50}, **HEALTHY}
TEMPLATES = ["Write a haiku about {w}.", "Write a short poem about {w}.",
             "Solve for x: {a}x + {b} = {c}. Show every step.", "Give me a fun fact about {w}.",
             "Prove that the sum of the first {a} odd numbers is a perfect square.",
             "Which of the following is a prime number? A. {a} B. {b} C. {c} D. 9",
             "A train travels {a} miles in {b} hours. What is its average speed?",
             "Explain in detail how {w} works, with examples."]
WORDS = ["the sea", "autumn", "a cat", "mountains", "coffee", "the moon", "rain", "a bicycle",
         "volcanoes", "bread", "trains", "music"]


# ---------------------------------------------------------------------------- the stub upstream


def stub_app(plan: dict, *, seed: int = 0, hang_seconds: float = 3.0, slow_seconds: float = 0.2):
    """A chat server whose model M misbehaves per ``plan[M]`` = {fault: probability}: ``error``
    (HTTP 500), ``timeout`` (answers after ``hang_seconds``), ``slow`` (after
    ``slow_seconds``), ``malformed`` (a body that is not JSON), ``refusal`` ("I'm sorry, I
    can't help with that."), ``bad_json`` (not JSON where the request asks for JSON). The judge
    answers "[[C]]", or "Sure: answer." (no verdict) one time in ten. ``POST /_faults`` with a
    JSON plan replaces ``plan``. ``plan`` may also be changed in place."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    rng = random.Random(seed)

    async def chat(request):
        body = await request.json()
        model = body["model"]
        wants_json = bool(body.get("response_format"))
        last = body["messages"][-1].get("content") or ""
        if "[hang]" in last:  # a hostile client's prompt: every model hangs for it
            await asyncio.sleep(hang_seconds)
        if "[huge]" in last:  # ... or answers 20 MB
            return Response(b'{"id": "x", "object": "chat.completion", "created": 1, "model": "'
                            + model.encode() + b'", "choices": [{"index": 0, "finish_reason": '
                            b'"stop", "message": {"role": "assistant", "content": "'
                            + b"x" * 20_000_000 + b'"}}]}', media_type="application/json")
        if model == JUDGE:
            text = "Sure: answer." if rng.random() < 0.1 else "Both are fine. [[C]]"
        else:
            f = plan.get(model, {})
            u = rng.random()
            for fault in ("error", "timeout", "malformed", "refusal", "bad_json", "slow"):
                p = f.get(fault, 0.0)
                if u < p:
                    break
                u -= p
            else:
                fault = None
            if fault == "error":
                return JSONResponse({"error": {"message": "injected", "type": "server_error"}},
                                    status_code=500)
            if fault == "timeout":
                await asyncio.sleep(hang_seconds)
            elif fault == "slow":
                await asyncio.sleep(slow_seconds)
            elif fault == "malformed":
                return Response(b'{"choices": [', media_type="application/json")
            if fault == "refusal":
                text = "I'm sorry, I can't help with that."
            elif wants_json:
                text = "sure, here it is" if fault == "bad_json" else '{"answer": 4}'
            else:
                text = f"An answer from {model}."
        return JSONResponse({"id": "x", "object": "chat.completion", "created": 1, "model": model,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 20, "completion_tokens": 8,
                                       "total_tokens": 28}})

    async def faults(request):
        new = await request.json()
        plan.clear()
        plan.update(new)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/_faults", faults, methods=["POST"])])


# ---------------------------------------------------------------------------- traffic


def prompt_pool(router, n: int = 64, seed: int = 0) -> list[str]:
    """n prompts from the templates, half of them routed to the router's weak model."""
    rng = random.Random(seed)
    weak, strong = [], []
    while len(weak) < n // 2 or len(strong) < n - n // 2:
        batch = [t.format(w=rng.choice(WORDS), a=rng.randint(2, 99), b=rng.randint(2, 99),
                          c=rng.randint(2, 99)) for t in rng.choices(TEMPLATES, k=64)]
        for p, d in zip(batch, router.route_batch(batch)):
            (weak if d.model == router.weak_model else strong).append(p)
        if len(weak) + len(strong) > 50 * n:
            raise SystemExit("the router sends almost every template prompt to one model; "
                             "pass another --model")
    pool = weak[:n // 2] + strong[:n - n // 2]
    rng.shuffle(pool)
    return pool


async def load(url: str, prompts: list[str], clients: int, seconds: float, max_requests: int,
               *, json_share: float = 0.2, timeout: float = 60.0) -> list[dict]:
    """``clients`` concurrent clients for ``seconds`` (at most ``max_requests`` requests) against
    ``url`` (a /v1/chat/completions). One record per request: t (Unix s), ms, status (0: no
    response; then ``error`` says why), model, reason."""
    import httpx

    out, sent = [], 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        async def worker(k):
            nonlocal sent
            i = k
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                prompt = prompts[i % len(prompts)]
                body = {"model": "router", "messages": [{"role": "user", "content": prompt}]}
                if (i * 7919) % 100 < 100 * json_share:
                    body["messages"][0]["content"] += " Reply as JSON."
                    body["response_format"] = {"type": "json_object"}
                i += clients
                t, t0 = time.time(), time.perf_counter()
                try:
                    r = await client.post(url, json=body)
                    rec = {"status": r.status_code, "model": r.headers.get("x-router-model"),
                           "reason": r.headers.get("x-router-reason")}
                except httpx.HTTPError as e:
                    rec = {"status": 0, "model": None, "reason": None,
                           "error": f"{type(e).__name__}: {e}"}
                out.append({"t": t, "ms": (time.perf_counter() - t0) * 1000, **rec})

        await asyncio.gather(*(worker(k) for k in range(clients)))
    return out


HOSTILE_KINDS = ("tiny-timeout", "short-timeout", "huge-body", "huge-answer", "deep",
                 "forbidden-field")


def hostile_request(kind: str, prompt: str) -> dict:
    """The httpx.post keywords of one hostile request of ``kind``."""
    msgs = [{"role": "user", "content": prompt}]
    if kind == "tiny-timeout":
        return {"json": {"model": "router", "messages": msgs},
                "headers": {"x-router-timeout": "0.001"}}
    if kind == "short-timeout":  # every model hangs past it: no circuit may open for it
        return {"json": {"model": "router", "messages": [{"role": "user",
                                                          "content": prompt + " [hang]"}]},
                "headers": {"x-router-timeout": "1"}}
    if kind == "huge-body":
        return {"json": {"model": "router", "messages": [{"role": "user",
                                                          "content": "x" * 5_000_000}]}}
    if kind == "huge-answer":
        return {"json": {"model": "router", "messages": [{"role": "user",
                                                          "content": prompt + " [huge]"}]}}
    if kind == "deep":
        return {"content": "[" * 60_000 + "]" * 60_000,
                "headers": {"content-type": "application/json"}}
    return {"json": {"model": "router", "messages": msgs, "base_url": "http://127.0.0.1:9/v1"}}


async def hostile_load(url: str, prompts: list[str], clients: int, hostile: int,
                       seconds: float) -> tuple[list[dict], list[dict]]:
    """``clients`` normal clients beside ``hostile`` hostile ones (cycling through
    HOSTILE_KINDS) for ``seconds``: (the normal records, the hostile records with their kind)."""
    import httpx

    normal, bad = [], []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=60) as client:
        async def good(k):
            i = k
            while time.monotonic() < deadline:
                body = {"model": "router",
                        "messages": [{"role": "user", "content": prompts[i % len(prompts)]}]}
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, json=body)
                    rec = {"status": r.status_code, "reason": r.headers.get("x-router-reason")}
                except httpx.HTTPError as e:
                    rec = {"status": 0, "reason": None, "error": type(e).__name__}
                normal.append({"ms": (time.perf_counter() - t0) * 1000, **rec})

        async def evil(k):
            i = k
            while time.monotonic() < deadline:
                kind = HOSTILE_KINDS[i % len(HOSTILE_KINDS)]
                i += 1
                try:
                    r = await client.post(url, **hostile_request(kind, prompts[i % len(prompts)]))
                    bad.append({"kind": kind, "status": r.status_code})
                except httpx.HTTPError as e:
                    bad.append({"kind": kind, "status": 0, "error": type(e).__name__})

        await asyncio.gather(*(good(k) for k in range(clients)),
                             *(evil(k) for k in range(hostile)))
    return normal, bad


def hostile_table(res: dict) -> str:
    n, h = res["normal"], res["hostile"]
    got = ", ".join(f"{kind}: " + " ".join(f"{s}x{c}" for s, c in sorted(v.items()))
                    for kind, v in h["by_kind"].items())
    rows = [("normal requests / errors (non-200)", f"{n['requests']:,} / {n['errors']}"),
            ("normal p50 / p99 (ms)", f"{n['p50_ms']:.1f} / {n['p99_ms']:.1f}"),
            ("hostile requests / 5xx beyond the expected 502s", f"{h['requests']:,} / "
                                                                 f"{h['unexpected']}"),
            ("what the hostile requests got (status x count)", got),
            ("circuit openings", f"{res['circuit_opened']}"),
            ("log rows / requests that reached the policy",
             f"{res['log_rows']:,} / {res['routed']:,}"),
            ("server RSS before / after (MB)",
             f"{res['rss_before_mb']:.0f} / {res['rss_after_mb']:.0f} "
             f"({100 * (res['rss_after_mb'] / res['rss_before_mb'] - 1):+.1f} %)")]
    return "\n".join(["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


# what each hostile kind should get: refused before routing (not logged), or routed (logged)
EXPECTED = {"tiny-timeout": 400, "short-timeout": 502, "huge-body": 413, "huge-answer": 502,
            "deep": 400, "forbidden-field": 400}


def alert_check(log_dir, t_start: float, t_jump: float, t_end: float, buckets: int) -> dict:
    """Whether the report's escalation alert fires for the log up to one bucket past the jump,
    and whether it stays quiet up to the jump. A bucket is (t_end - t_start) / buckets."""
    from router_ml.loop.monitoring import report

    width = (t_end - t_start) / buckets
    before_n = max(2, int((t_jump - t_start) / width))
    since = t_jump - before_n * width  # whole buckets before the jump, the last one after it
    before = report(log_dir, since, t_jump, buckets=before_n)
    after = report(log_dir, since, t_jump + width, buckets=before_n + 1)
    fired = lambda rep: any(a.startswith("escalations rose") for a in rep["alerts"])  # noqa: E731
    return {"fired_before_jump": fired(before), "fired_after_jump": fired(after),
            "rate_before": before["escalation"]["rate"],
            "rate_last_bucket": after["escalation"]["buckets"][-1]["rate"],
            "bucket_seconds": width}


def policy_overhead(router, prompts: list[str], n: int = 3000) -> dict:
    """p50 (ms) of ``router.route`` against the policy's whole request path without a model
    call (decide, answer, validate, cost, the Decision's log write), interleaved."""
    from router_ml.loop.clients import Completion
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.policy import Policy
    from router_ml.loop.validators import NoRefusal

    with tempfile.TemporaryDirectory() as tmp:
        log = DecisionLog(tmp, flush_seconds=1.0)
        policy = Policy(router, validators=[NoRefusal()], log=log)
        answer = Completion("An answer.", 20, 8)
        plain, full = [], []
        for i in range(n):
            msgs = [{"role": "user", "content": prompts[i % len(prompts)]}]
            t0 = time.perf_counter()
            router.route(msgs)
            t1 = time.perf_counter()
            run = policy.start(msgs)
            run.answered(answer)
            run.finish()
            plain.append(t1 - t0)
            full.append(time.perf_counter() - t1)
        log.close()
    p, f = np.median(plain) * 1000, np.median(full) * 1000
    return {"route_p50_ms": round(p, 3), "policy_p50_ms": round(f, 3),
            "overhead_p50_ms": round(f - p, 3)}


def summarize(records: list[dict]) -> dict:
    ms = np.array([r["ms"] for r in records])
    return {"requests": len(records),
            "errors": sum(r["status"] != 200 for r in records),
            "errors_5xx": sum(r["status"] >= 500 or r["status"] == 0 for r in records),
            "escalated": sum(r["reason"] == "escalated" for r in records),
            "fallback": sum(r["reason"] == "fallback" for r in records),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


# ---------------------------------------------------------------------------- the run


def _stop(procs):
    for proc in reversed(procs):  # the server first: it drains and flushes its log
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, data):
    import urllib.request

    req = urllib.request.Request(url, json.dumps(data).encode(),
                                 {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def _rss_mb(pid):
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6


def _metric_sum(base, name):
    import urllib.request

    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def table(res: dict) -> str:
    f, b, a, o = res["faults"], res["baseline"], res["alert"], res["overhead"]
    rows = [("requests (without faults / with faults)", f"{b['requests']:,} / {f['requests']:,}"),
            ("client-visible errors (5xx or no answer)", f"{b['errors_5xx']} / {f['errors_5xx']}"),
            ("escalated / fell back (of the fault run)", f"{f['escalated']:,} / {f['fallback']:,}"),
            ("upstream timeouts, circuit openings", f"{res['timeouts']:,}, {res['circuit_opened']:,}"),
            ("log rows / requests", f"{res['log_rows']:,} / {res['requests_total']:,}"),
            ("p50 / p99 without faults (ms)", f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f}"),
            ("p50 / p99 with faults (ms)", f"{f['p50_ms']:.1f} / {f['p99_ms']:.1f}"),
            ("added by the faults p50 / p99 (ms)",
             f"{f['p50_ms'] - b['p50_ms']:.1f} / {f['p99_ms'] - b['p99_ms']:.1f}"),
            ("server RSS before / after (MB)",
             f"{res['rss_before_mb']:.0f} / {res['rss_after_mb']:.0f} "
             f"({100 * (res['rss_after_mb'] / res['rss_before_mb'] - 1):+.1f} %)"),
            ("escalation rate before the jump / in the bucket after",
             f"{100 * a['rate_before']:.1f} % / {100 * a['rate_last_bucket']:.1f} %"),
            (f"alert fired: before the jump / within one bucket ({a['bucket_seconds']:.0f} s)"
             " after", f"{'yes' if a['fired_before_jump'] else 'no'} / "
                       f"{'yes' if a['fired_after_jump'] else 'no'}"),
            ("route p50 / policy p50 / overhead (ms, in process)",
             f"{o['route_p50_ms']:.3f} / {o['policy_p50_ms']:.3f} / {o['overhead_p50_ms']:.3f}")]
    return "\n".join(["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "default"))
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--baseline-seconds", type=float, default=30)
    p.add_argument("--seconds", type=float, default=160, help="length of the fault run")
    p.add_argument("--max-requests", type=int, default=14000, help="per run")
    p.add_argument("--buckets", type=int, default=10, help="report buckets over the fault run")
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--scenario", choices=["faults", "hostile"], default="faults")
    p.add_argument("--hostile-clients", type=int, default=6, help="with --scenario hostile")
    p.add_argument("--stub", type=int, help=argparse.SUPPRESS)  # run the stub on this port
    args = p.parse_args(argv)
    if args.stub:
        import uvicorn

        uvicorn.run(stub_app({}), host="127.0.0.1", port=args.stub, log_level="error")
        return 0
    from router_ml.core.router import load_router
    from router_ml.loop.decision_log import DecisionLog

    router = load_router(args.model)
    prompts = prompt_pool(router)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    sp, rp = _free_port(), _free_port()
    stub, base = f"http://127.0.0.1:{sp}", f"http://127.0.0.1:{rp}"
    tmp = tempfile.TemporaryDirectory()
    log_dir = Path(tmp.name) / "log"
    procs = [subprocess.Popen([sys.executable, __file__, "--stub", str(sp)], env=env,
                              start_new_session=True)]
    started = False
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "router_ml.cli.main", "serve", "--model", args.model,
             "--upstream-base", f"{stub}/v1", "--port", str(rp), "--log", str(log_dir),
             "--check-refusals", "--timeout", "2" if args.scenario == "hostile" else "1",
             "--connect-timeout", "0.5",
             "--breaker-failures", "5", "--breaker-cooldown", "2", "--sample-rate", "0.03",
             "--judge", JUDGE], env=env, start_new_session=True, stdout=subprocess.DEVNULL))
        wait(f"{base}/health", proc=procs[1])
        url = f"{base}/v1/chat/completions"
        _post(f"{stub}/_faults", HEALTHY)
        warm = asyncio.run(load(url, prompts, 4, 3, 500))
        rss0 = _rss_mb(procs[1].pid)
        if args.scenario == "hostile":
            normal, bad = asyncio.run(hostile_load(url, prompts, args.clients,
                                                   args.hostile_clients, args.seconds))
            rss1 = _rss_mb(procs[1].pid)
            opened = _metric_sum(base, "router_ml_circuit_opened_total")
        started = True
    finally:
        if args.scenario == "hostile" or not started:
            _stop(procs)
    if args.scenario == "hostile":
        by_kind = {}
        for r in bad:
            by_kind.setdefault(r["kind"], {}).setdefault(r["status"], 0)
            by_kind[r["kind"]][r["status"]] += 1
        routed = len(warm) + len(normal) + sum(r["status"] in (200, 502) for r in bad)
        res = {"normal": {**summarize([{**r, "model": None} for r in normal])},
               "hostile": {"requests": len(bad), "by_kind": by_kind,
                           "unexpected": sum(r["status"] != EXPECTED[r["kind"]] for r in bad)},
               "circuit_opened": int(opened), "log_rows": len(DecisionLog(log_dir).read()),
               "routed": routed, "rss_before_mb": rss0, "rss_after_mb": rss1}
        tmp.cleanup()
        print(hostile_table(res))
        if args.json:
            args.json.write_text(json.dumps(res, indent=2) + "\n")
        return 0
    try:
        baseline = asyncio.run(load(url, prompts, args.clients, args.baseline_seconds,
                                    args.max_requests))
        _post(f"{stub}/_faults", FAULTS_BEFORE)
        t0 = time.time()
        first = asyncio.run(load(url, prompts, args.clients, args.seconds / 2,
                                 args.max_requests // 2))
        t_jump = time.time()
        _post(f"{stub}/_faults", FAULTS_AFTER)
        second = asyncio.run(load(url, prompts, args.clients, args.seconds / 2,
                                  args.max_requests - len(first)))
        t_end = time.time()
        rss1 = _rss_mb(procs[1].pid)
        timeouts = _metric_sum(base, "router_ml_timeouts_total")
        opened = _metric_sum(base, "router_ml_circuit_opened_total")
    finally:
        _stop(procs)
    faults = first + second
    rows = DecisionLog(log_dir).read()
    res = {"baseline": summarize(baseline), "faults": summarize(faults),
           "requests_total": len(warm) + len(baseline) + len(faults), "log_rows": len(rows),
           "timeouts": int(timeouts), "circuit_opened": int(opened),
           "rss_before_mb": rss0, "rss_after_mb": rss1,
           "alert": alert_check(log_dir, t0, t_jump, t_end, args.buckets),
           "overhead": policy_overhead(router, prompts)}
    tmp.cleanup()
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
