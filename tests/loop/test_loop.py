"""The production loop end to end: rules, learned routing, escalation after a failed JSON
Schema check and a fallback on HTTP 500 against the local stub server, 2,000 logged decisions,
a report that flags drift on a shifted batch, quality sampling with a judge, labels from the
log, and a retrain that is compared with the current router and promoted by mlflow alias."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from llm_stub import Fail, StubLLM

from router_ml.loop.labeling import PairwiseJudge, retrain, rows_from_log
from router_ml.loop.monitoring import DecisionLog, QualitySampler, report
from router_ml.loop.policy import JsonSchemaValid, LiteLLMClient, Policy, parse_rules

CHEAP, STRONG, JUDGE = "gpt-4o-mini", "gpt-4o", "gpt-4-1106-preview"
SCHEMA = {"type": "object", "required": ["total"], "properties": {"total": {"type": "integer"}}}
RULES = {"ladder": [CHEAP, STRONG], "fallback": STRONG, "max_escalations": 1,
         "rules": [{"name": "code", "task": "code", "model": STRONG},
                   {"name": "ops", "tags": ["ops"], "model": "flaky"}],
         "models": {"flaky": {}}}


def user(text):
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def answer(model):
    def reply(messages):
        text = messages[-1]["content"]
        if "as JSON" in text:
            return '{"total": "forty-two"}' if model == CHEAP else '{"total": 42}'
        return f"reply by {model}"
    return reply


def judge(messages):
    """Prefers the strongest model's answer on quantum questions, a tie elsewhere."""
    text = messages[-1]["content"]
    if "quantum" not in text.split("[Answer A]")[0]:
        return "Same quality. [[C]]"
    a = text.split("[Answer A]")[1].split("[Answer B]")[0]
    return "[[A]]" if re.search(rf"reply by {STRONG}\b(?!-)", a) else "[[B]]"


BEHAVIOURS = {CHEAP: answer(CHEAP), STRONG: answer(STRONG), "flaky": Fail(500), JUDGE: judge}


def in_process(model, messages):
    """The same behaviours without HTTP, for the bulk of the traffic (the caller's client)."""
    return BEHAVIOURS[model](messages)


@pytest.fixture(scope="module")
def base_rows(planted_set):
    from router_ml.learn.rows import Rows

    prompts, y = planted_set
    n = len(prompts)
    return Rows(list(prompts), np.column_stack([np.ones(n), 1.0 - y.astype(float)]),
                (STRONG, CHEAP), np.array(["planted"] * n, dtype=object),
                np.array(["planted"] * n, dtype=object))


def test_the_whole_loop(tmp_path, planted_set, base_rows):
    from conftest import EASY, HARD, pair_qualities
    from mlflow import MlflowClient

    from router_ml import load_router
    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder
    from router_ml.learn.training import TrainConfig

    prompts, y = planted_set
    current_dir = tmp_path / "current"
    RouterSpec(TfidfEncoder(min_df=1), models=[STRONG, CHEAP]).fit(list(prompts), pair_qualities(y)) \
        .save(current_dir)
    router = load_router(current_dir)
    # reference: scores of held-out prompts like the training ones (training prompts
    # themselves score more extremely: the TF-IDF router has seen their words)
    rng = np.random.default_rng(0)
    reference = router.score([f"{(HARD + EASY)[rng.integers(8)]} number {i}"
                              for i in range(5000, 5400)])
    log = DecisionLog(tmp_path / "log", store_prompts="sampled")
    config = parse_rules(RULES, "rules")

    # 1. requests over HTTP through LiteLLM, every cheaper answer sampled and judged
    with StubLLM(BEHAVIOURS, max_requests=60) as stub:
        client = LiteLLMClient(api_base=stub.url, api_key="test", timeout=5)
        policy = Policy(router, config, log=log,
                        sampler=QualitySampler(PairwiseJudge(client, JUDGE), rate=1.0, seed=0))
        d = policy.run(user("write a python function"), client, {"task": "code"})
        assert (d.route_reason, d.rule, d.model, d.sample) == ("rule", "code", STRONG, None)
        d = policy.run(user("what is the capital of france number 3"), client)
        assert d.route_reason == "learned" and d.model == CHEAP and d.score < d.threshold
        assert d.sample["strong_better"] == 0.5 and d.sample["answer"] == f"reply by {STRONG}"
        d = policy.run(user("say hello to my friend, as JSON"), client,
                       validators=[JsonSchemaValid(SCHEMA)])
        assert (d.route, d.model, d.reason, d.answer) == (CHEAP, STRONG, "escalated", '{"total": 42}')
        assert "integer" in d.steps[0].message and d.validator == "passed"
        d = policy.run(user("restart the service"), client, {"tags": ["ops"]})
        assert (d.rule, d.reason, d.model) == ("ops", "fallback", CHEAP) and "500" in d.error
        d = policy.run(user("say hello to my friend about quantum physics"), client)
        assert d.sample["strong_better"] == 1.0
        called = stub.models_called()
    assert called.count("flaky") == 1 and called.count(JUDGE) == 3

    # 2. the bulk of the traffic, then a shifted batch the router was not trained for
    policy = Policy(router, config, log=log, sampler=QualitySampler(
        PairwiseJudge(in_process, JUDGE, seed=1), rate=0.1, seed=2))
    t_shift = None
    for i in range(1995):
        if i < 1400:
            text = f"{(HARD + EASY)[rng.integers(8)]} number {i}"
        else:
            t_shift = t_shift or time.time()
            text = f"{EASY[rng.integers(4)]} about quantum field theory {i}"
        policy.run(user(text), in_process, {"task": "code"} if i % 50 == 0 else None)
    log.flush()
    assert len(log.read()) == 2000

    # 3. the report: drift flagged on the shifted batch only
    before = report(log, until=t_shift, reference_scores=reference)
    after = report(log, since=t_shift, reference_scores=reference)
    assert not before["drift"]["drifted"], before["drift"]
    assert after["drift"]["drifted"] and any("score drift" in a for a in after["alerts"])
    full = report(log, reference_scores=reference)
    assert full["n"] == 2000 and set(full["models"]) == {CHEAP, STRONG}
    assert full["coverage"]["rule"] == pytest.approx(42 / 2000)
    assert full["escalation"]["rate"] == pytest.approx(1 / 2000)
    assert full["escalation"]["fallback_rate"] == pytest.approx(1 / 2000)
    assert 0 < full["spend"]["usd"] < full["spend"]["always_strongest_usd"]
    q = full["quality"]
    assert q["n_judged"] > 50 and q["ci95"][0] < q["strong_better"] < q["ci95"][1]
    assert q["sampling_usd_per_month"] > 0

    # 4. labels from the log, a retrain compared on held-out logged rows, promoted by alias
    table = tmp_path / "labels.csv"
    assert rows_from_log(log, table).labelled == q["n_judged"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = retrain(table, current=current_dir, strong=STRONG, weak=CHEAP, out=tmp_path / "new",
                  base=base_rows, tracking_uri=uri, config=TrainConfig(encoder="tfidf", extra=()))
    assert res.promoted and res.apgr_new > res.apgr_current and res.n_heldout >= 10
    champion = MlflowClient(tracking_uri=uri).get_model_version_by_alias("router_ml", "champion")
    assert str(champion.version) == res.new_version != res.current_version
    shifted = ["say hello to my friend about quantum field theory 7"]
    assert load_router(tmp_path / "new").score(shifted)[0] > router.score(shifted)[0]
