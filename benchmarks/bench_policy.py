"""Overhead of the policy layer per request, model calls excluded.

    python benchmarks/bench_policy.py [--model models/default] [--n 5000]

Prints p50/p99 in milliseconds, one request at a time, of:
- route: ``router.route(text)`` alone (the learned router);
- decide, learned: ``Policy.decide(messages, metadata)`` on a request that no rule matches
  (conversation text + 4 rules + the learned route + the Decision record);
- policy overhead: decide minus route, per request (rules + text + Decision, route excluded);
- decide, rule: a request the first rule matches (no router call);
- log write: ``DecisionLog.write`` (buffered; the mean includes the batched SQLite inserts);
- gateway checks: what the endpoint checks of a request body before routing it (the
  allow-list, the messages, the nesting depth, the metadata), on a body with four
  parameters;
- task detection: naming a request's task with the default task set.
Numbers vary on a shared machine; compare within one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from router_ml import load_router
from router_ml.loop.monitoring import DecisionLog
from router_ml.loop.policy import Policy, parse_rules

ROOT = Path(__file__).resolve().parent.parent
RULES = {"rules": [
    {"name": "code", "task": "code", "model": "gpt-4o"},
    {"name": "legal", "tags": ["legal", "medical"], "model": "claude-opus-4"},
    {"name": "sql", "regex": r"(?i)\bselect\b.*\bfrom\b", "model": "gpt-4o"},
    {"name": "realtime", "max_latency": "realtime", "model": "gemini-2.0-flash"},
], "models": {"gpt-4o": {}, "claude-opus-4": {}, "gemini-2.0-flash": {}}}
WORDS = ("what is the integral of x squared explain why the sky is blue which of the following "
         "statements about mitochondria is true solve for x in 3x plus 5 equals 20 write a short "
         "poem about autumn leaves").split()


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 60)))) + "?" for _ in range(n)]


def pct(a) -> str:
    return f"p50 {np.percentile(a, 50):.4f}  p99 {np.percentile(a, 99):.4f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--n", type=int, default=5000)
    args = p.parse_args(argv)
    router = load_router(args.model)
    policy = Policy(router, parse_rules(RULES, "bench rules"))
    texts = prompts(args.n)
    convs = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": t}]
             for t in texts]
    meta = {"task": "chat", "tags": ["general"], "max_latency": "interactive"}
    for t, c in zip(texts[:200], convs[:200]):  # warm up
        router.route(t)
        policy.decide(c, meta)
    route, decide, rule = [], [], []
    clock = time.perf_counter
    for t, c in zip(texts, convs):
        t0 = clock()
        router.route(t)
        t1 = clock()
        d = policy.decide(c, meta)
        t2 = clock()
        policy.decide(c, {"task": "code"})
        t3 = clock()
        route.append(t1 - t0)
        decide.append(t2 - t1)
        rule.append(t3 - t2)
    assert d.route_reason == "learned"
    route, decide, rule = (np.array(x) * 1000 for x in (route, decide, rule))
    decisions = [policy.decide(c, meta) for c in convs]
    with tempfile.TemporaryDirectory() as tmp:
        log = DecisionLog(tmp)
        writes = []
        t_all = clock()
        for d in decisions:
            t0 = clock()
            log.write(d)
            writes.append(clock() - t0)
        log.close()
        total = clock() - t_all
    writes = np.array(writes) * 1000
    checks = gateway_checks(convs)
    tasks = task_detection(texts)
    print(f"router {args.model.name}, {args.n} requests, one at a time (ms)")
    print(f"route                  {pct(route)}")
    print(f"decide, learned        {pct(decide)}")
    print(f"policy overhead        {pct(decide - route)}   (decide minus route, per request)")
    print(f"decide, rule           {pct(rule)}")
    print(f"log write              {pct(writes)}  mean {total * 1000 / len(decisions):.4f} "
          "(batched inserts included in the mean)")
    print(f"gateway checks         {pct(checks)}")
    if tasks is not None:
        print(f"task detection         {pct(tasks)}   (the default task set, one request at a time)")
    return 0


def task_detection(texts) -> np.ndarray | None:
    """Milliseconds per request of naming its task with the default task set (what a rules
    file's [tasks] adds to each request whose metadata names none)."""
    try:
        from router_ml.loop.tasks import TaskDetector, default_tasks
    except ImportError:  # a version without task detection
        return None
    detector = TaskDetector(default_tasks())
    for t in texts[:200]:  # warm up
        detector.detect(t)
    out, clock = [], time.perf_counter
    for t in texts:
        t0 = clock()
        detector.detect(t)
        out.append(clock() - t0)
    return np.array(out) * 1000


def gateway_checks(convs) -> np.ndarray:
    """Milliseconds per request of the endpoint's body checks (router_ml.serve._requests)."""
    try:
        from router_ml.serve._requests import (
            check_messages,
            depth_exceeds,
            forwarded_params,
            request_metadata,
        )
    except ImportError:  # a version of the endpoint without them
        return np.zeros(1)
    bodies = [{"model": "router", "messages": c, "temperature": 0.2, "max_tokens": 256,
               "user": "u-1", "metadata": {"task": "chat"}} for c in convs]
    out, clock = [], time.perf_counter
    for b in bodies:
        t0 = clock()
        depth_exceeds(b)
        check_messages(b["messages"])
        forwarded_params(b)
        request_metadata(b, {})
        out.append(clock() - t0)
    return np.array(out) * 1000


if __name__ == "__main__":
    raise SystemExit(main())
