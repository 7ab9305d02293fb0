"""Monitoring: the decision log (schema, rotation, concurrent writers, feedback), drift, the
report with its alerts and dashboard, and quality sampling."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from router_ml.cli.monitor import report_main
from router_ml.loop.monitoring import (
    COLUMNS,
    DecisionLog,
    MonitoringError,
    QualitySampler,
    psi,
    report,
)
from router_ml.loop.policy import Completion, Decision, Step

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0  # 2023-11-14 22:13 UTC


def decision(i=0, *, ts=T0, model="gpt-4o-mini", score=0.3, escalated=False, sample=None,
             prompt="p"):
    d = Decision(uuid.uuid4().hex, f"{i:064x}", model, "learned", score=score, threshold=0.5,
                 qualities={"gpt-4o-mini": 0.6, "gpt-4o": 0.8}, time=ts, prompt=prompt,
                 answer="a", input_tokens=100, output_tokens=50, cost_usd=0.001,
                 strongest_cost_usd=0.01, decision_ms=0.1, latency_ms=100.0)
    if escalated:
        d.steps.append(Step(model, "gpt-4o", "escalated", "not valid JSON"))
        d.model, d.reason, d.validator = "gpt-4o", "escalated", "passed"
    d.sample = sample
    return d


def test_log_round_trip_keeps_no_prompt_by_default(tmp_path):
    with DecisionLog(tmp_path / "log") as log:
        log.write(decision(1, prompt="secret prompt"))
        log.write(decision(2, escalated=True, sample={"model": "gpt-4o", "answer": "b",
                                                      "strong_better": 1.0, "judge": "B"}))
    rows = DecisionLog(tmp_path / "log").read()
    assert [r["prompt"] for r in rows] == [None, None]
    assert set(rows[0]) == set(COLUMNS)
    assert rows[1]["escalations"] == 1 and json.loads(rows[1]["steps"])[0][2] == "escalated"
    assert rows[1]["sampled"] == 1 and rows[1]["answer"] == "a" and rows[1]["sample_answer"] == "b"
    assert rows[0]["answer"] is None and json.loads(rows[0]["qualities"])["gpt-4o"] == 0.8
    assert "secret prompt" not in b"".join(p.read_bytes() for p in (tmp_path / "log").iterdir()).decode("latin-1")
    log = DecisionLog(tmp_path / "log2", store_prompts="sampled")
    log.write(decision(1, prompt="plain"))
    log.write(decision(2, prompt="kept", sample={"model": "gpt-4o", "answer": "b"}))
    d3 = decision(3)
    log.write(d3)
    assert log.feedback(d3.request_id, 0.0) and not log.feedback("nope", 1.0)
    rows = log.read()
    assert [r["prompt"] for r in rows] == [None, "kept", None]
    assert [r["feedback"] for r in rows] == [None, None, 0.0]
    log.close()


def test_eight_threads_lose_no_decision(tmp_path):
    log = DecisionLog(tmp_path / "log", batch_size=1000)
    per, threads = 5000, 8
    batches = [[decision(t * per + i, ts=T0 + i * 1e-3) for i in range(per)] for t in range(threads)]
    workers = [threading.Thread(target=lambda b=b: [log.write(d) for d in b]) for b in batches]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()
    rows = DecisionLog(tmp_path / "log").read()
    assert len(rows) == per * threads
    assert len({r["request_id"] for r in rows}) == per * threads


def test_separate_writers_on_one_folder(tmp_path):
    # one DecisionLog per thread, as separate processes would have: SQLite's lock serialises
    logs = [DecisionLog(tmp_path / "log", batch_size=100) for _ in range(4)]
    ids = [[decision(i) for i in range(1000)] for _ in logs]
    ws = [threading.Thread(target=lambda lg=lg, ds=ds: ([lg.write(d) for d in ds], lg.close()))
          for lg, ds in zip(logs, ids)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    assert len(DecisionLog(tmp_path / "log").read()) == 4000


def test_rotation_by_day_and_size(tmp_path):
    log = DecisionLog(tmp_path / "day", keep=2)
    for day in range(3):
        log.write(decision(day, ts=T0 + day * 86400))
        log.flush()
    assert [p.name for p in log.files()] == ["decisions-20231115.sqlite", "decisions-20231116.sqlite"]
    assert len(log.read()) == 2
    log.close()
    log = DecisionLog(tmp_path / "size", rotate="none", max_bytes=40_000, keep=100, batch_size=50)
    for i in range(2000):
        log.write(decision(i, ts=T0 + i))
    log.close()
    assert len(log.files()) > 2 and len(log.read()) == 2000
    assert len(log.read(since=T0 + 1000, until=T0 + 1500)) == 500
    with pytest.raises(ValueError, match="rotate"):
        DecisionLog(tmp_path, rotate="week")


def test_psi():
    rng = np.random.default_rng(0)
    ref = rng.beta(2, 5, 5000)
    assert psi(ref, rng.beta(2, 5, 2000)) < 0.05
    assert psi(ref, rng.beta(5, 2, 2000)) > 0.2


def test_report_flags_escalation_rise_and_drift(tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.beta(2, 5, 3000)
    log = DecisionLog(tmp_path / "log", rotate="none")
    n = 1000
    for i in range(n):
        late = i >= 900
        log.write(decision(i, ts=T0 + i * 36, score=float(rng.beta(5, 2) if late else rng.beta(2, 5)),
                           escalated=bool(rng.random() < (0.5 if late else 0.05)),
                           model="gpt-4o" if i % 4 == 0 else "gpt-4o-mini",
                           sample={"model": "gpt-4o", "answer": "b", "strong_better": float(i % 3 == 0),
                                   "cost_usd": 0.01} if i % 10 == 1 else None))
    log.close()
    rep = report(log, reference_scores=ref)
    assert rep["n"] == n and abs(sum(rep["models"].values()) - 1) < 1e-9
    assert rep["escalation"]["rising"] and rep["escalation"]["buckets"][-1]["rate"] > 0.3
    assert any("escalations rose" in a for a in rep["alerts"])
    assert rep["spend"]["usd"] == pytest.approx(n * 0.001)
    assert rep["spend"]["saving_pct"] == pytest.approx(90.0)
    assert rep["coverage"]["learned"] == 1.0
    # the shift is only in the last tenth: over everything PSI stays low, the late window drifts
    early = report(log, until=T0 + 900 * 36, reference_scores=ref)
    late = report(log, since=T0 + 900 * 36, reference_scores=ref)
    assert not early["drift"]["drifted"] and early["alerts"] == []
    assert late["drift"]["drifted"] and any("score drift" in a for a in late["alerts"])
    q = rep["quality"]
    assert q["n_judged"] == 100 and 0 < q["ci95"][0] < q["strong_better"] < q["ci95"][1] < 1
    assert q["sampling_usd_per_month"] > 0
    with pytest.raises(MonitoringError, match="no decisions"):
        report(log, since=T0 + 10 * n * 36)


def test_report_cli(tmp_path, capsys):
    log = DecisionLog(tmp_path / "log")
    for i in range(50):
        log.write(decision(i, ts=T0 + i, score=0.9))
    log.close()
    ref = tmp_path / "ref.npy"
    np.save(ref, np.random.default_rng(0).beta(2, 5, 500))
    out, png = tmp_path / "rep.json", tmp_path / "dash.png"
    code = report_main([str(tmp_path / "log"), "--reference", str(ref), "--json", str(out),
                        "--dashboard", str(png), "--fail-on-alert"])
    text = capsys.readouterr().out
    assert code == 2 and "ALERT: score drift" in text
    assert json.loads(out.read_text())["drift"]["drifted"] is True
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert report_main([str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    # a router's coverage.reference.npy holds feature vectors (2-D), not scores
    features = ROOT / "models" / "default" / "coverage.reference.npy"
    assert np.load(features).ndim == 2
    assert report_main([str(tmp_path / "log"), "--reference", str(features)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MonitoringError: reference must be 1-D scores")
    assert "feature vectors, not scores" in err and "router.score(prompts)" in err


def test_quality_sampler():
    calls = []

    def call(model, msgs):
        calls.append(model)
        return Completion("strong answer", 10, 10)

    cost = lambda m, c: 0.5  # noqa: E731
    d = decision(0)
    assert QualitySampler(lambda m, a, b: 1.0, rate=1.0).maybe_sample(d, [], call, "gpt-4o", cost)
    assert d.sample == {"model": "gpt-4o", "answer": "strong answer", "cost_usd": 0.5,
                        "strong_better": 1.0, "judge": "1.0"}
    d = decision(1)
    QualitySampler(lambda m, a, b: 1 / 0, rate=1.0).maybe_sample(d, [], call, "gpt-4o", cost)
    assert d.sample["judge"].startswith("error: ZeroDivisionError")
    never = QualitySampler(lambda m, a, b: 1.0, rate=0.0)
    assert not any(never.maybe_sample(decision(i), [], call, "gpt-4o", cost) for i in range(100))
    s = QualitySampler(lambda m, a, b: 0.0, seed=0)
    hits = sum(s.maybe_sample(decision(i), [], call, "gpt-4o", cost) for i in range(3000))
    assert 50 < hits < 130  # 3 % of 3,000


# ---------------------------------------------------------------------------- what the policy logs

DEFAULT_MODEL = __import__("pathlib").Path(__file__).resolve().parents[2] / "models" / "default"
PROMPTS = ["What is 2+2?", "Prove that there are infinitely many primes.",
           "Write a haiku about the sea.", "Translate 'good morning' into French.",
           "Solve for x: 3x + 7 = 22.", "Explain TCP and UDP in detail."]


@pytest.fixture(scope="module")
def default_router():
    from router_ml import load_router

    return load_router(DEFAULT_MODEL)


def test_logged_rows_carry_the_routers_coverage(tmp_path, default_router):
    from router_ml.loop.policy import Policy

    log = DecisionLog(tmp_path / "log")
    policy = Policy(default_router, log=log)
    for p in PROMPTS:
        policy.run(p, lambda model, messages: "an answer")
    rows = log.read()
    covered = [bool(d.covered) for d in default_router.route_batch(PROMPTS)]
    assert [r["coverage"] for r in rows] == [float(c) for c in covered]
    rep = report(log)
    assert rep["coverage"]["mean_router_coverage"] == pytest.approx(np.mean(covered))
    log.close()


def test_plain_text_answers_log_the_routers_cost_estimate(tmp_path, default_router):
    from router_ml.loop.policy import Policy

    log = DecisionLog(tmp_path / "log")
    policy = Policy(default_router, log=log)
    for p in PROMPTS:
        policy.run(p, lambda model, messages: "an answer without token counts")
    rows = log.read()
    expected = [d.cost for d in default_router.route_batch(PROMPTS)]
    assert [r["cost_usd"] for r in rows] == pytest.approx(expected)
    assert all(r["cost_estimated"] == 1 and r["cost_usd"] > 0 for r in rows)
    rep = report(log)
    assert rep["spend"]["usd"] == pytest.approx(sum(expected))
    assert rep["spend"]["estimated_share"] == 1.0 and rep["spend"]["why_zero"] is None
    # a client that gives token counts is priced from them, and not marked estimated
    d = policy.run(PROMPTS[0], lambda model, messages: Completion("x", 1000, 0))
    assert not d.cost_estimated and d.cost_usd == pytest.approx(
        default_router.prices[d.model]["input"] * 1000 / 1e6)
    log.close()


def test_a_report_whose_spend_is_all_zero_says_why(tmp_path):
    rows = []
    for i in range(5):
        d = decision(i, model="my-local-model")
        d.cost_usd = d.strongest_cost_usd = None
        rows.append(d)
    with DecisionLog(tmp_path / "log") as log:
        for d in rows:
            log.write(d)
    rep = report(tmp_path / "log")
    assert rep["spend"]["usd"] == 0 and "my-local-model" in rep["spend"]["why_zero"]
    from router_ml.loop.monitoring import format_report

    assert "spend is zero" in format_report(rep) and "price" in format_report(rep)


def test_a_judge_reply_without_a_verdict_is_counted(tmp_path):
    from router_ml.loop.labeling import PairwiseJudge
    from router_ml.loop.policy import Policy, parse_rules

    replies = iter(["Sure: answer.", "[[A]]", "Sure: answer.", "Same. [[C]]"])

    def client(model, messages):
        return next(replies) if model == "judge" else f"answer of {model}"

    log = DecisionLog(tmp_path / "log")
    policy = Policy(None, parse_rules({"rules": [{"name": "all", "regex": ".", "model": "cheap"}]}),
                    ladder=["cheap", "strong"], log=log,
                    sampler=QualitySampler(PairwiseJudge(client, "judge"), rate=1.0, seed=0))
    for i in range(4):
        policy.run(f"question {i}", client)
    rep = report(log)
    q = rep["quality"]
    assert (q["n_sampled"], q["n_judged"], q["n_unparsed"]) == (4, 2, 2)
    assert q["unparsed_share"] == 0.5
    assert [r["judge"].startswith("unparsed") for r in log.read()] == [True, False, True, False]
    from router_ml.loop.monitoring import format_report

    assert "2 of 4 sampled requests (50.0 %)" in format_report(rep)
    log.close()


def test_a_background_flusher_writes_without_flush_calls(tmp_path):
    log = DecisionLog(tmp_path / "log", flush_seconds=0.05, batch_size=10_000)
    for i in range(25):
        log.write(decision(i))
    reader = DecisionLog(tmp_path / "log")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (tmp_path / "log").exists() and reader.files() and len(reader.read()) == 25:
            break
        time.sleep(0.05)
    assert len(reader.read()) == 25  # nobody called flush or close
    d = decision(99)
    log.write(d)
    log.update(d.request_id, {"strong_better": 1.0, "judge": "B"})
    log.close()
    row = [r for r in reader.read() if r["request_id"] == d.request_id][0]
    assert (row["strong_better"], row["judge"]) == (1.0, "B")
    with pytest.raises(ValueError, match="unknown decision log columns"):
        log.update("x", {"nope": 1})


def test_a_log_file_of_the_previous_version_gets_the_new_column(tmp_path):
    import sqlite3

    old = [c for c in COLUMNS if c != "cost_estimated"]
    (tmp_path / "log").mkdir()
    con = sqlite3.connect(tmp_path / "log" / "decisions-20231114.sqlite")
    con.execute(f"CREATE TABLE decisions ({', '.join(old)})")
    con.execute(f"INSERT INTO decisions ({', '.join(old)}) VALUES ({', '.join('?' * len(old))})",
                [T0 if c == "ts" else None for c in old])
    con.commit()
    con.close()
    with DecisionLog(tmp_path / "log") as log:
        log.write(decision(1))
    rows = DecisionLog(tmp_path / "log").read()
    assert len(rows) == 2 and [r["cost_estimated"] for r in rows] == [None, 0]
