"""Chat messages are scored on the conversation's user turns, newest first
(router_ml.core.prompts.prompt_text): a single turn exactly as before, a short follow-up with
what it follows; the same in route, score, predict_quality, the Policy, batch scoring and
Spark."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import EASY, HARD

from router_ml.core.prompts import CONTEXT_CHARS, TURN_SEPARATOR, prompt_text, user_turns

FOLLOW_UP = "now say it again but shorter"


def chat(*turns, system="be brief"):
    """A conversation of these user turns, each answered by the assistant but the last."""
    msgs = [{"role": "system", "content": system}]
    for i, t in enumerate(turns):
        msgs.append({"role": "user", "content": t})
        if i < len(turns) - 1:
            msgs.append({"role": "assistant", "content": f"answer {i}"})
    return msgs


@pytest.fixture(scope="module", params=["tfidf", "static"])
def router(request, make_router):
    return make_router(request.param)


def test_one_user_turn_scores_exactly_as_its_text(router):
    prompts = [HARD[0], EASY[1], "x" * (3 * CONTEXT_CHARS) + " prove", ""]
    convs = [[{"role": "user", "content": p}] for p in prompts]
    convs[1] = chat(EASY[1], system="a long system prompt about eigenvalues " * 50)
    convs[2] = [{"role": "user", "content": [{"type": "text", "text": prompts[2]},
                                             {"type": "image_url", "image_url": {"url": "u"}}]}]
    assert [prompt_text(c) for c in convs] == prompts  # never cut, nothing added
    for fn in ("score", "predict_quality", "decision_function"):
        np.testing.assert_array_equal(getattr(router, fn)(convs), getattr(router, fn)(prompts))
    assert router.route_batch(convs) == router.route_batch(prompts)
    assert router.route(convs[0]) == router.route(prompts[0])


def test_a_follow_up_inherits_the_difficulty_of_what_it_follows(router):
    after_hard = [chat(h, FOLLOW_UP) for h in HARD]
    after_easy = [chat(e, FOLLOW_UP) for e in EASY]
    hard, easy = router.score(after_hard), router.score(after_easy)
    assert hard.min() > easy.max()
    # scored on the last turn alone (as before), every follow-up would score the same
    assert len(set(router.score([FOLLOW_UP] * 8).tolist())) == 1
    assert router.route(after_hard[0]).strong and not router.route(after_easy[0]).strong


def test_the_text_is_the_last_turn_then_the_earlier_ones_cut_to_the_bound():
    long_first = "first " * CONTEXT_CHARS
    msgs = chat(long_first, "second", "third and last")
    text = prompt_text(msgs)
    assert text.startswith("third and last" + TURN_SEPARATOR + "second" + TURN_SEPARATOR)
    assert len(text) == len("third and last") + len(TURN_SEPARATOR) + CONTEXT_CHARS
    assert user_turns(msgs) == [long_first, "second", "third and last"]
    # the last user turn is never cut; the messages after it (an assistant's) are not read
    last = "y" * (2 * CONTEXT_CHARS)
    msgs = chat("a", last) + [{"role": "assistant", "content": "z"}]
    assert prompt_text(msgs) == last + TURN_SEPARATOR + "a"


def test_malformed_messages_are_errors_that_name_the_position(router):
    bad_earlier = chat("ok", "fine")
    bad_earlier[1]["content"] = None
    with pytest.raises(TypeError, match=r"prompts\[1\]\[1\]: a user message's content must be"):
        router.score(["fine", bad_earlier])
    with pytest.raises(TypeError, match=r"prompt\[1\]: a user message's content must be"):
        router.route(bad_earlier)
    with pytest.raises(TypeError, match=r"prompt\[0\] must be a chat message"):
        user_turns(["hello"])
    with pytest.raises(ValueError, match=r"prompts\[0\]: no message with role 'user' among 2"):
        router.score([[{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]])


def test_the_policy_routes_the_conversation(make_router):
    from router_ml.loop.policy import Policy

    router = make_router("tfidf")
    policy = Policy(router)
    for msgs in (chat(HARD[1], FOLLOW_UP), chat(EASY[2], FOLLOW_UP)):
        d = policy.decide(msgs)
        assert d.score == pytest.approx(float(router.score([msgs])[0]), abs=1e-12)
        assert d.route == router.route(msgs).model


def conversations():
    return [chat(h, FOLLOW_UP) for h in HARD] + [chat(e, FOLLOW_UP) for e in EASY] \
        + [[{"role": "user", "content": HARD[2]}]]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_batch_scoring_scores_a_messages_column_as_route(make_router, tmp_path, fmt):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from router_ml.cli.score import score_main

    router = make_router("tfidf")
    router.save(tmp_path / "router")
    convs = conversations()
    src = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":  # a JSON text per row
        src.write_text("".join(json.dumps({"id": i, "messages": json.dumps(c)}) + "\n"
                               for i, c in enumerate(convs)))
    else:  # a list of structs per row
        pq.write_table(pa.table({"id": list(range(len(convs))), "messages": convs}), src)
    out = tmp_path / "out.jsonl"
    assert score_main(["--model", str(tmp_path / "router"), "--input", str(src), "--output",
                       str(out), "--messages-column", "messages", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    np.testing.assert_allclose([r["score"] for r in rows], router.score(convs), atol=1e-12)
    assert [r["model"] for r in rows] == [d.model for d in router.route_batch(convs)]
    assert [r["id"] for r in rows] == list(range(len(convs)))


def test_batch_scoring_names_the_row_that_is_not_a_chat(make_router, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    from router_ml.cli.score import score_main

    make_router("tfidf").save(tmp_path / "router")
    src = tmp_path / "in.jsonl"
    good = json.dumps(chat("hi", "there"))
    for bad, message in [("not json", "at batch row 1 is not JSON"),
                         (json.dumps([{"role": "system", "content": "x"}]),
                          "at batch row 1: no message with role 'user'"),
                         (json.dumps([{"role": "user", "content": 3}]),
                          r"at batch row 1\[0\]: a user message's content must be")]:
        src.write_text(json.dumps({"messages": good}) + "\n" + json.dumps({"messages": bad})
                       + "\n")
        assert score_main(["--model", str(tmp_path / "router"), "--input", str(src), "--output",
                           str(tmp_path / "o.jsonl"), "--messages-column", "messages",
                           "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "DataFormatError" in err and "'messages'" in err
        assert __import__("re").search(message, err), err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime (make install "
                    "installs one)")
def test_spark_scores_a_messages_column_as_route(make_router, tmp_path):
    pytest.importorskip("pyspark")
    pd = pytest.importorskip("pandas")
    from servers import child_env

    from router_ml.serve.spark import local_session, score_dataframe

    router = make_router("tfidf")
    router.save(tmp_path / "router")
    convs = conversations()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", child_env()["PYTHONPATH"])  # workers import this router_ml
        spark = local_session(cores=2, memory="1g")
        try:
            df = spark.createDataFrame(pd.DataFrame({"id": range(len(convs)),
                                                     "chat": [json.dumps(c) for c in convs]}))
            scored = score_dataframe(df, tmp_path / "router", messages_column="chat")
            scored = scored.orderBy("id").toPandas()
        finally:
            spark.stop()
    np.testing.assert_allclose(scored["score"].to_numpy(), router.score(convs), atol=1e-6)
    assert scored["model"].tolist() == [d.model for d in router.route_batch(convs)]


def test_the_benchmark_measures_the_library_rule(make_router):
    from conftest import load_benchmark

    bench = load_benchmark("bench_conversation")
    router = make_router("tfidf")
    convs = [[h, f] for h, f in zip(HARD, bench.FOLLOW_UPS)] + [[e, FOLLOW_UP] for e in EASY]
    c = bench.candidates(router, convs)  # raises if router.score(messages) is not "newest first"
    np.testing.assert_array_equal(c["newest first"], router.score(
        [f"{b}{TURN_SEPARATOR}{a}" for a, b in convs]))
    np.testing.assert_array_equal(c["last"], router.score([b for _, b in convs]))
    built = bench.rated_conversations(["p1", "p2", "p3"])
    assert {k: len(v) for k, v in built.items()} == {"follow-up": 3, "opener": 3, "switch": 3}
    assert all(c[-1] == p for c, p in zip(built["switch"], ["p1", "p2", "p3"]))
    assert all(c[0] != c[1] for c in built["switch"])
