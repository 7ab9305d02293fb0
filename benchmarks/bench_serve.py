"""Load test of ``router-ml serve`` against a stub upstream, loopback only, bounded.

    python benchmarks/bench_serve.py [--model models/default] [--clients 8] [--seconds 20]
        [--max-requests 20000]
    python benchmarks/bench_serve.py --keys-overhead [--clients 1] [--seconds 20] [--rounds 4]
        [--redis redis://127.0.0.1:6379/0]

Starts a stub OpenAI-compatible upstream (answers at once) and ``router-ml serve`` as separate
processes on 127.0.0.1, runs N concurrent clients for a fixed time against the router and then
directly against the stub, and prints: requests and errors, client latency p50/p99 through the
router and direct, the routing overhead (their difference), the server-side decision time
(from /metrics), and the router process's RSS before and after. Not part of ``make test``.

``--keys-overhead``: two routers side by side, one without client keys and one with
``--keys`` (a key with a daily budget and a rate limit, so every check runs, and the SQLite
quota store); the clients load them in turn (``--rounds`` alternations over ``--seconds``)
and it prints p50/p99 of each and their difference. Then, in this process, the gate alone:
the key middleware around an app that answers at once, against that app, 3 x 2,000 requests
(SQLite; and Redis with ``--redis URL``): the p50 difference is the gate's own cost, which
the HTTP comparison cannot resolve on a busy machine.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["What is 2+2?", "Prove that there are infinitely many primes.",
           "Write a haiku about the sea.", "Explain the difference between TCP and UDP in detail, "
           "with examples of protocols built on each.", "Translate 'good morning' to French.",
           "Solve for x: 3x + 7 = 22. Show every step.", "Summarise the causes of World War I."]


def stub_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request):
        body = await request.json()
        return JSONResponse({"id": "x", "object": "chat.completion", "created": 1,
                             "model": body["model"], "choices": [{
                                 "index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                       "total_tokens": 2}})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url, timeout=120, proc=None):
    """Until ``url`` answers; SystemExit after ``timeout`` s, or when ``proc`` (the server's
    process, if given) has exited."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{proc.args[:4]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up in {timeout} s")


async def load(url, clients, seconds, max_requests, headers=None):
    import httpx

    lat, errors, count = [], 0, 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def worker(k):
            nonlocal errors, count
            i = k
            while time.monotonic() < deadline and count < max_requests:
                count += 1
                body = {"model": "router", "messages": [
                    {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, json=body, headers=headers)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                lat.append(time.perf_counter() - t0)
                errors += not ok

        await asyncio.gather(*(worker(k) for k in range(clients)))
    return np.array(lat) * 1000, errors


def rss_mb(pid):
    import psutil

    p = psutil.Process(pid)
    return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 1e6


def decision_seconds(base):
    import urllib.request

    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    total = float(re.search(r"^router_ml_decision_seconds_sum ([0-9.e+-]+)$", text, re.M)[1])
    n = float(re.search(r"^router_ml_decision_seconds_count ([0-9.e+-]+)$", text, re.M)[1])
    return total / max(n, 1), n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "default"))
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--max-requests", type=int, default=20000)
    p.add_argument("--keys-overhead", action="store_true",
                   help="compare a router with --keys against one without")
    p.add_argument("--rounds", type=int, default=4, help="alternations for --keys-overhead")
    p.add_argument("--redis", help="also measure the gate with this Redis quota store")
    p.add_argument("--stub", type=int, help=argparse.SUPPRESS)  # run the stub on this port
    args = p.parse_args(argv)
    if args.keys_overhead:
        return keys_overhead(args)
    if args.stub:
        import uvicorn

        uvicorn.run(stub_app(), host="127.0.0.1", port=args.stub, log_level="error")
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    sp, rp = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, __file__, "--stub", str(sp)], env=env,
                              start_new_session=True)]
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "router_ml.cli.main", "serve", "--model", args.model,
             "--upstream-base", f"http://127.0.0.1:{sp}/v1", "--port", str(rp)], env=env,
            start_new_session=True))
        base = f"http://127.0.0.1:{rp}"
        wait(f"{base}/health")
        asyncio.run(load(f"{base}/v1/chat/completions", 2, 2, 200))  # warm-up
        rss0 = rss_mb(procs[1].pid)
        lat_r, err_r = asyncio.run(load(f"{base}/v1/chat/completions", args.clients,
                                        args.seconds, args.max_requests))
        rss1 = rss_mb(procs[1].pid)
        lat_d, err_d = asyncio.run(load(f"http://127.0.0.1:{sp}/v1/chat/completions",
                                        args.clients, args.seconds, args.max_requests))
        dec, n = decision_seconds(base)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(timeout=20)
    r50, r99 = np.percentile(lat_r, [50, 99])
    d50, d99 = np.percentile(lat_d, [50, 99])
    result = {"clients": args.clients, "seconds": args.seconds, "requests": int(len(lat_r)),
              "errors": int(err_r), "rps": round(len(lat_r) / args.seconds, 1),
              "router_p50_ms": round(r50, 2), "router_p99_ms": round(r99, 2),
              "direct_p50_ms": round(d50, 2), "direct_p99_ms": round(d99, 2),
              "direct_errors": int(err_d),
              "overhead_p50_ms": round(r50 - d50, 2), "overhead_p99_ms": round(r99 - d99, 2),
              "decision_mean_ms": round(dec * 1000, 3), "decisions": int(n),
              "rss_before_mb": round(rss0, 1), "rss_after_mb": round(rss1, 1)}
    print(json.dumps(result, indent=2))
    return 0


def keys_overhead(args):
    import tempfile

    sys.path.insert(0, str(ROOT))
    from router_ml.serve.keys import hash_secret, new_secret

    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    secret = new_secret()
    (tmp / "keys.toml").write_text(f'[[keys]]\nname = "bench"\nsha256 = "{hash_secret(secret)}"'
                                   "\nusd_per_day = 1e9\nrequests_per_minute = 1000000000\n"
                                   "max_concurrent = 1000\n")
    sp, plain, keyed = free_port(), free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, __file__, "--stub", str(sp)], env=env,
                              start_new_session=True)]
    serve = [sys.executable, "-m", "router_ml.cli.main", "serve", "--model", args.model,
             "--upstream-base", f"http://127.0.0.1:{sp}/v1"]
    auth = {"Authorization": f"Bearer {secret}"}
    lat = {"without keys": [], "with keys": []}
    try:
        procs.append(subprocess.Popen(serve + ["--port", str(plain)], env=env,
                                      start_new_session=True))
        procs.append(subprocess.Popen(
            serve + ["--port", str(keyed), "--keys", str(tmp / "keys.toml"), "--quota-store",
                     f"sqlite:///{tmp / 'quota.sqlite'}"], env=env, start_new_session=True))
        for port, proc in ((plain, procs[1]), (keyed, procs[2])):
            wait(f"http://127.0.0.1:{port}/health", proc=proc)
        targets = {"without keys": (plain, None), "with keys": (keyed, auth)}
        for port, headers in targets.values():  # warm-up
            asyncio.run(load(f"http://127.0.0.1:{port}/v1/chat/completions", 2, 2, 200, headers))
        for _ in range(args.rounds):
            for name, (port, headers) in targets.items():
                ms, errors = asyncio.run(load(f"http://127.0.0.1:{port}/v1/chat/completions",
                                              args.clients, args.seconds / args.rounds / 2,
                                              args.max_requests, headers))
                if errors:
                    raise SystemExit(f"{errors} errors {name}")
                lat[name].append(ms)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(timeout=20)
    out = {"clients": args.clients, "seconds": args.seconds, "rounds": args.rounds}
    for name, parts in lat.items():
        ms = np.concatenate(parts)
        out[name] = {"requests": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 3),
                     "p99_ms": round(float(np.percentile(ms, 99)), 3)}
    out["keys_overhead_p50_ms"] = round(out["with keys"]["p50_ms"]
                                        - out["without keys"]["p50_ms"], 3)
    out["keys_overhead_p99_ms"] = round(out["with keys"]["p99_ms"]
                                        - out["without keys"]["p99_ms"], 3)
    # per round, so the spread between rounds shows next to the difference
    out["p50_difference_by_round_ms"] = [
        round(float(np.percentile(b, 50) - np.percentile(a, 50)), 3)
        for a, b in zip(lat["without keys"], lat["with keys"])]
    out["gate_in_process"] = {"sqlite": gate_overhead(f"sqlite:///{tmp / 'gate.sqlite'}")}
    if args.redis:
        out["gate_in_process"]["redis"] = gate_overhead(args.redis)
    print(json.dumps(out, indent=2))
    return 0


def gate_overhead(store_url, n=2000, repeats=3):
    """p50 (ms) of an ASGI app that answers at once, alone and behind the key gate (a key with
    a daily budget and a rate limit; each request is admitted, spends and is settled)."""
    from router_ml.serve.gate import KeyGate, KeyGateMiddleware, _REQUEST
    from router_ml.serve.keys import hash_secret, new_secret, parse_keys
    from router_ml.serve.quota import open_store

    secret = new_secret()
    ring = parse_keys({"keys": [{"name": "bench", "sha256": hash_secret(secret),
                                 "usd_per_day": 1e9, "requests_per_minute": 10**9,
                                 "max_concurrent": 1000}]})
    gate = KeyGate(ring, open_store(store_url))

    async def app(scope, receive, send):
        pending = _REQUEST.get()
        if pending is not None:
            pending.usd += 1e-6  # what the policy's hook adds for a request's cost
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    gated = KeyGateMiddleware(app, gate)
    headers = [(b"authorization", f"Bearer {secret}".encode())]

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    async def timed(target):
        out = []
        for _ in range(n):
            scope = {"type": "http", "path": "/v1/chat/completions", "headers": headers}
            t0 = time.perf_counter()
            await target(scope, receive, send)
            out.append(time.perf_counter() - t0)
        return float(np.median(out) * 1000)

    async def run():
        rows = []
        for _ in range(repeats):
            rows.append((await timed(app), await timed(gated)))
        return rows

    rows = asyncio.run(run())
    gate.store.close()
    return {"without_p50_ms": [round(a, 4) for a, _ in rows],
            "with_p50_ms": [round(b, 4) for _, b in rows],
            "difference_p50_ms": [round(b - a, 4) for a, b in rows]}


if __name__ == "__main__":
    sys.exit(main())
