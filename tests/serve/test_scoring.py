"""router_ml.serve.batch and `router-ml score`: batch scoring of Parquet, CSV and JSONL files."""

from __future__ import annotations

import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from router_ml.errors import DataFormatError  # noqa: E402


def _prompts(n):
    words = ["prove the theorem", "say hello", "compute the eigenvalues", "name a color"]
    return [f"{words[i % 4]} number {i}" for i in range(n)]


@pytest.fixture
def saved(make_router, tmp_path):
    router = make_router("tfidf")
    router.save(tmp_path / "router")
    return router, tmp_path / "router"


def test_parquet_is_scored_in_batches_like_in_process(saved, tmp_path, capsys):
    from router_ml.cli.main import main

    router, folder = saved
    prompts = _prompts(2_345)
    pq.write_table(pa.table({"id": list(range(len(prompts))), "prompt": prompts}),
                   tmp_path / "logs.parquet")
    assert main(["score", "--model", str(folder), "--input", str(tmp_path / "logs.parquet"),
                 "--output", str(tmp_path / "scored.parquet"), "--batch-size", "500",
                 "--no-progress"]) == 0
    assert "scored 2345 rows" in capsys.readouterr().out
    out = pq.read_table(tmp_path / "scored.parquet")
    assert out.column_names == ["id", "prompt", "model", "score", "quality:strong",
                                "quality:weak"]
    assert out.column("id").to_pylist() == list(range(len(prompts)))
    expected = router.score(prompts)
    np.testing.assert_allclose(out.column("score").to_numpy(), expected, atol=1e-12)
    assert out.column("model").to_pylist() == [d.model for d in router.route_batch(prompts)]
    np.testing.assert_allclose(np.column_stack([out.column(f"quality:{m}").to_numpy()
                                                for m in router.models]),
                               router.predict_quality(prompts), atol=1e-12)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def saved_tiers(tmp_path):
    """A router of three priced models (lam decides), saved."""
    from conftest import TIER_PRICES, TIERS, planted_tiers

    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder

    prompts, Q, _ = planted_tiers(300)
    router = RouterSpec(TfidfEncoder(min_df=1), models=TIERS, prices=TIER_PRICES,
                    lam=20.0).fit(prompts, Q)
    router.save(tmp_path / "tiers")
    return router, tmp_path / "tiers"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_router_of_three_models_scores_a_file(saved_tiers, tmp_path, capsys, suffix):
    """router-ml score on N models: the chosen model (as route picks it) and one quality
    column per candidate; no pair score."""
    import pyarrow.csv as pcsv

    from conftest import TIER_KINDS
    from router_ml.cli.main import main

    router, folder = saved_tiers
    prompts = [f"{TIER_KINDS[i % 3]} case {i}" for i in range(120)]
    src = tmp_path / "logs.parquet"
    pq.write_table(pa.table({"prompt": prompts}), src)
    dest = tmp_path / f"scored{suffix}"
    assert main(["score", "--model", str(folder), "--input", str(src), "--output", str(dest),
                 "--batch-size", "50", "--no-progress"]) == 0
    assert "scored 120 rows" in capsys.readouterr().out
    out = pq.read_table(dest) if suffix == ".parquet" else pcsv.read_csv(dest)
    assert out.column_names == ["prompt", "model", "quality:openai/gpt-4o",
                                "quality:azure/gpt-4o", "quality:small"]
    decisions = router.route_batch(prompts)
    got = out.column("model").to_pylist()
    assert got == [d.model for d in decisions]
    assert len(set(got)) >= 2  # lam trades quality for cost: not one model for every prompt
    np.testing.assert_allclose(np.column_stack([out.column(f"quality:{m}").to_numpy()
                                                for m in router.models]),
                               router.predict_quality(prompts), atol=1e-9)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_csv_and_jsonl_in_and_out(saved, tmp_path, suffix):
    from router_ml.serve.batch import score_file

    router, _ = saved
    prompts = _prompts(50)
    src = tmp_path / f"logs{suffix}"
    if suffix == ".csv":
        import csv

        with open(src, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "user"])
            w.writerows([p, f"u{i}"] for i, p in enumerate(prompts))
    else:
        src.write_text("".join(json.dumps({"text": p, "user": f"u{i}"}) + "\n"
                               for i, p in enumerate(prompts)))
    assert score_file(router, src, tmp_path / f"out{suffix}", prompt_column="text",
                      batch_size=7) == 50
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        rows = pcsv.read_csv(tmp_path / "out.csv").to_pylist()
    else:
        rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == prompts and rows[3]["user"] == "u3"
    np.testing.assert_allclose([r["score"] for r in rows], router.score(prompts), atol=1e-9)


def test_bad_inputs_are_clear_errors_and_leave_nothing(saved, tmp_path):
    from router_ml.serve.batch import score_file

    router, _ = saved
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "nulls.parquet")
    with pytest.raises(DataFormatError, match="no column 'prompt'.*--prompt-column"):
        score_file(router, tmp_path / "nulls.parquet", tmp_path / "o.parquet")
    with pytest.raises(DataFormatError, match="no text"):
        score_file(router, tmp_path / "nulls.parquet", tmp_path / "o.parquet", "text")
    with pytest.raises(DataFormatError, match="unknown file type"):
        score_file(router, tmp_path / "nulls.parquet", tmp_path / "o.xlsx", "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nulls.parquet", "router"]


@pytest.mark.parametrize("name,content,words", [
    ("empty.csv", b"", "the file is empty; expected a 'prompt' column"),
    ("empty.parquet", b"", "the file is empty; expected a 'prompt' column"),
    ("fake.parquet", b"not parquet at all\n", "cannot read as parquet (ArrowInvalid: "),
    ("latin1.csv", "prompt\ncafé crème\n".encode("latin-1"),
     "cannot read as csv (UnicodeDecodeError: 'utf-8' codec can't decode"),
    ("latin1.jsonl", '{"prompt": "café"}\n'.encode("latin-1"),
     "cannot read as json (UnicodeDecodeError: 'utf-8' codec can't decode"),
])
def test_unreadable_files_are_the_errors_train_gives(saved, tmp_path, capsys, name, content,
                                                     words):
    """router-ml score on a file its reader rejects: no traceback, exit 2, and the words
    router-ml train --table uses for the same file; nothing is left behind."""
    from router_ml.cli.main import main

    _, folder = saved
    src = tmp_path / name
    src.write_bytes(content)
    assert main(["score", "--model", str(folder), "--input", str(src), "--output",
                 str(tmp_path / "out.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: DataFormatError: ") and f"{src}: {words}" in err
    assert "Traceback" not in err and not (tmp_path / "out.csv").exists()
    assert main(["train", "--table", str(src), "--no-tracking", "--out",
                 str(tmp_path / "r")]) == 2
    assert f"{src}: {words}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "router"])


def test_an_output_folder_that_does_not_exist_is_a_clear_error(saved, tmp_path, capsys):
    from router_ml.cli.main import main

    _, folder = saved
    src = tmp_path / "logs.csv"
    src.write_text("prompt\nsay hello\n")
    for out, words in [(tmp_path / "nodir" / "x.csv", f"the folder {tmp_path / 'nodir'} does "
                        "not exist"), (tmp_path, "is a folder; give a file name")]:
        assert main(["score", "--model", str(folder), "--input", str(src), "--output",
                     str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: OutputPathError: ") and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.csv", "router"]


def test_score_names_each_rows_task_as_the_policy_does(saved, tmp_path, capsys):
    from router_ml.cli.main import main
    from router_ml.loop.policy import Policy
    from router_ml.loop.rules import load_rules

    router, folder = saved
    rules = tmp_path / "rules.toml"
    rules.write_text('[tasks.coding]\nexamples = ["Write a Python function", "Fix this bug in '
                     'my code"]\n[tasks.math]\nexamples = ["Solve for x: 2x = 4", "What is 7 '
                     'times 8?"]\n')
    prompts = ["Write a function that sorts a list in Python", "Solve 3x + 1 = 10 for x",
               "Fix the bug in my JavaScript code"]
    pq.write_table(pa.table({"prompt": prompts}), tmp_path / "in.parquet")
    args = ["score", "--model", str(folder), "--input", str(tmp_path / "in.parquet"),
            "--output", str(tmp_path / "out.parquet"), "--tasks", str(rules), "--no-progress"]
    assert main(args) == 0
    out = pq.read_table(tmp_path / "out.parquet").to_pydict()
    policy = Policy(router, load_rules(rules))
    assert out["task"] == [policy.decide(p).task for p in prompts] == ["coding", "math", "coding"]
    assert all(-1 <= s <= 1 for s in out["task_similarity"])
