"""Labelling your own traffic: judges, resumable budgeted rate-limited labelling, the CLI
against the local stub server, and rows from a decision log."""

from __future__ import annotations

import csv
import json
import re
import time

import pytest
from llm_stub import StubLLM

from router_ml.cli.label import label_main
from router_ml.loop.clients import Completion
from router_ml.loop.labeling import (
    LabelingError,
    PairwiseJudge,
    RateLimiter,
    label_prompts,
    prompt_key,
    rows_from_log,
)
from router_ml.loop.monitoring import DecisionLog
from router_ml.loop.policy import Decision

CHEAP, STRONG, JUDGE = "gpt-4o-mini", "gpt-4o", "judge"


def is_strong(text):
    return re.search(rf"answer by {STRONG}(?!-)", text) is not None


def fake_client(calls):
    """Models answer with their name; the judge grades 9 for gpt-4o, 3 otherwise, and in
    pairwise mode prefers the answer written by gpt-4o."""

    def client(model, messages):
        calls.append(model)
        text = messages[-1]["content"]
        if model != JUDGE:
            return Completion(f"answer by {model}", 100, 100)
        if "[Answer A]" in text:
            a = text.split("[Answer A]")[1].split("[Answer B]")[0]
            return Completion("A is better. [[A]]" if is_strong(a) else "B wins [[B]]", 300, 10)
        return Completion("Rating: [[9]]" if is_strong(text) else "Rating: [[3]]", 300, 10)

    return client


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_single_grading_resumes_and_respects_the_budget(tmp_path):
    prompts = [f"question {i}" for i in range(10)]
    out = tmp_path / "labels.csv"
    calls = []
    # per prompt: 2 answers (100 + 100 tokens each) and 2 gradings (300 + 10)
    s = label_prompts(prompts, [CHEAP, STRONG], fake_client(calls), JUDGE, out,
                      budget_usd=0.006, progress=False)
    assert s.stopped and s.stopped.startswith("budget") and 0 < s.labelled < 10
    assert s.cost_usd <= 0.006
    first = s.labelled
    s2 = label_prompts(prompts, [CHEAP, STRONG], fake_client(calls), JUDGE, out, progress=False)
    assert s2.skipped == first and s2.labelled == 10 - first and s2.stopped is None
    rows = read_csv(out)
    assert [r["key"] for r in rows] == [prompt_key(p) for p in prompts]
    assert {(r[CHEAP], r[STRONG]) for r in rows} == {("3.0", "9.0")}
    assert s.scale == "judge10"
    # the table trains a router as training/train.py --table reads it
    from router_ml.learn.rows import pair_data
    from router_ml.learn.tables import load_table

    pairs = pair_data(load_table(out, model_columns=[STRONG, CHEAP], scale="judge10"), STRONG, CHEAP)
    assert len(pairs) == 10 and pairs.q_strong[0] == pytest.approx(8 / 9)


def test_pairwise_jsonl_and_judge_failures(tmp_path):
    out = tmp_path / "labels.jsonl"
    calls = []
    s = label_prompts(["a", "b", "c"], [CHEAP, STRONG], fake_client(calls), JUDGE, out,
                      mode="pairwise", baseline=CHEAP, progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert s.labelled == 3 and s.scale == "unit"
    assert all(r[CHEAP] == 0.5 and r[STRONG] == 1.0 for r in rows)

    def mute_judge(model, messages):
        return Completion("no verdict here") if model == JUDGE else Completion("x")

    s = label_prompts(["d"], [CHEAP, STRONG], mute_judge, JUDGE, out, mode="pairwise",
                      baseline=CHEAP, progress=False)
    assert s.failed == 1 and s.labelled == 0 and len(out.read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="baseline"):
        label_prompts(["x"], [CHEAP], mute_judge, JUDGE, out, mode="pairwise")
    other = tmp_path / "other.csv"
    other.write_text("key,prompt,other,cost_usd\n")
    with pytest.raises(LabelingError, match="columns"):
        label_prompts(["x"], [CHEAP], mute_judge, JUDGE, other, progress=False)


def test_pairwise_judge_sees_both_orders():
    verdicts = []
    judge = PairwiseJudge(fake_client([]), JUDGE, seed=1)
    for _ in range(20):
        verdicts.append(judge([{"role": "user", "content": "q"}], f"answer by {CHEAP}",
                              f"answer by {STRONG}"))
    assert {v["strong_better"] for v in verdicts} == {1.0}
    assert {v["verdict"][0] for v in verdicts} == {"A", "B"}  # positions were swapped


def test_rate_limiter():
    limiter = RateLimiter(50.0)
    t0 = time.perf_counter()
    for _ in range(11):
        limiter.wait()
    assert time.perf_counter() - t0 >= 0.19


def test_label_cli_against_the_stub(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "test")
    def judge(messages):
        text = messages[-1]["content"]
        return "Rating: [[8]]" if "from gpt-4o\n" in text or text.rstrip().endswith("from gpt-4o") else "Rating: [[4]]"

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n\nthree\n")
    out = tmp_path / "rows.csv"
    with StubLLM({CHEAP: lambda m: "from gpt-4o-mini", STRONG: lambda m: "from gpt-4o",
                  JUDGE: judge}, max_requests=40) as stub:
        argv = ["--prompts", str(prompts), "--models", f"{CHEAP},{STRONG}", "--judge", JUDGE,
                "--out", str(out), "--api-base", stub.url, "--api-key-env", "STUB_KEY", "--rate", "100", "--no-progress"]
        assert label_main(argv) == 0
        assert label_main(argv) == 0  # resumed: nothing new
        assert len(stub.requests) == 12
    text = capsys.readouterr().out
    assert "3 rows labelled" in text and "3 already there" in text
    assert re.search(r"\$0\.\d+ spent", text)
    assert {(r[CHEAP], r[STRONG]) for r in read_csv(out)} == {("4.0", "8.0")}
    assert label_main(["--prompts", str(prompts), "--out", str(tmp_path / "x.txt"),
                       "--models", CHEAP, "--judge", JUDGE, "--no-progress"]) == 1
    assert ".csv or .jsonl" in capsys.readouterr().err


def test_rows_from_log(tmp_path):
    def logged(folder, store):
        log = DecisionLog(folder, store_prompts=store)
        for i in range(6):
            d = Decision(f"id{i}", "0" * 64, CHEAP, "learned", prompt=f"prompt {i}", time=1e9 + i,
                         answer="cheap")
            if i % 2 == 0:
                d.sample = {"model": STRONG, "answer": "strong", "strong_better": [1.0, 0.5, 0.0][i // 2]}
            log.write(d)
        log.close()
        return folder

    with pytest.raises(LabelingError, match="store_prompts"):
        rows_from_log(logged(tmp_path / "a", False), tmp_path / "a.csv")
    s = rows_from_log(logged(tmp_path / "b", "sampled"), tmp_path / "b.csv")
    rows = read_csv(tmp_path / "b.csv")
    assert s.labelled == 3 and [r["prompt"] for r in rows] == ["prompt 0", "prompt 2", "prompt 4"]
    assert [(r[STRONG], r[CHEAP]) for r in rows] == [("1.0", "0.0"), ("0.5", "0.5"), ("0.0", "1.0")]
    assert rows_from_log(tmp_path / "b", tmp_path / "b.csv").labelled == 0  # resumable
    assert label_main(["--from-log", str(tmp_path / "b"), "--out", str(tmp_path / "c.csv")]) == 0
