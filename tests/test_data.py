"""Data adapters: small real samples of ../shared/data and hand-made bad files."""

import json
import logging
import shutil

import numpy as np
import pytest

from router_ml import data
from router_ml.errors import DataFormatError, DataNotFoundError, UnknownModelError
from router_ml.labels import make_labels, pair_data

S, W = data.STRONG_MODEL, data.WEAK_MODEL



@pytest.fixture
def sample_dir(shared, tmp_path):
    """A small copy of every source: 2 MMLU subjects, GSM8K head, 3 arena models, dcrouter head."""
    src, dst = shared, tmp_path / "data"
    mmlu = dst / "routellm-evals" / "mmlu"
    (mmlu / "responses").mkdir(parents=True)
    for name in ("mmlu_anatomy.csv", "mmlu_virology.csv"):
        shutil.copy(src / "routellm-evals/mmlu/responses" / name, mmlu / "responses" / name)
    shutil.copy(src / "routellm-evals/mmlu/contaminated_prompts.jsonl", mmlu)
    g = dst / "routellm-evals" / "gsm8k"
    g.mkdir(parents=True)
    lines = (src / "routellm-evals/gsm8k/gsm8k_responses.csv").read_text(encoding="utf-8")
    import csv
    import io
    rows = list(csv.reader(io.StringIO(lines)))
    with open(g / "gsm8k_responses.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:81])
    shutil.copy(src / "routellm-evals/gsm8k/contaminated_prompts.jsonl", g)
    a = dst / "arena-hard-v1"
    (a / "model_judgment").mkdir(parents=True)
    shutil.copy(src / "arena-hard-v1/question.jsonl", a)
    for name in ("gpt-4-turbo.jsonl", "Mixtral-8x7B-Instruct-v0.1.jsonl", "gpt-3.5-turbo.jsonl"):
        shutil.copy(src / "arena-hard-v1/model_judgment" / name, a / "model_judgment" / name)
    d = dst / "llmrouter-dcrouter"
    d.mkdir()
    for split in ("train", "test"):
        items = json.loads((src / f"llmrouter-dcrouter/{split}.json").read_text())
        (d / f"{split}.json").write_text(json.dumps(items[:60]))
    shutil.copy(src / "llmrouter-dcrouter/llm_candidates.json", d)
    return dst


def test_routellm_mmlu_sample(sample_dir):
    ds = data.load_routellm("mmlu", sample_dir)
    assert set(ds["group"]) == {"anatomy", "virology"}
    assert data.models_of(ds) == [W, S]
    q = data.quality_matrix(ds, [S, W])
    assert q.shape == (len(ds), 2) and np.isin(q, (0.0, 0.5, 1.0)).all()
    assert all(p.rstrip().endswith("Answer:") for p in ds["prompt"])


def test_routellm_drops_contaminated(sample_dir, shared):
    ds = data.load_routellm("gsm8k", sample_dir)
    contaminated = {json.loads(line)["eval_prompt"].strip() for line in
                    open(shared / "routellm-evals/gsm8k/contaminated_prompts.jsonl")}
    assert not contaminated & {p.strip() for p in ds["prompt"]}
    assert 60 < len(ds) <= 80


def test_arena_hard_sample(sample_dir, caplog):
    with caplog.at_level(logging.WARNING):
        ds = data.load_arena_hard(sample_dir)
    assert len(ds) == 300
    # model names come from the rows, not the file names
    assert {"gpt-4-1106-preview", "Mixtral-8x7B-Instruct-v0.1", "gpt-3.5-turbo"} <= set(data.models_of(ds))
    q = data.quality_matrix(ds, ["gpt-3.5-turbo"])
    assert 1 <= np.isnan(q).sum() <= 5  # a missing score is left empty, never invented
    assert "missing or invalid" in caplog.text
    qp = data.quality_matrix(ds, [S, W])
    ok = qp[~np.isnan(qp)]
    assert ((ok >= 0) & (ok <= 1)).all()
    pair = pair_data(ds, S, W)
    assert 280 <= len(pair) <= 300


def test_dcrouter_sample_and_prices(sample_dir):
    ds = data.load_dcrouter("all", sample_dir)
    assert len(data.models_of(ds)) == 9 and 100 <= len(ds) <= 120
    prices = data.load_dcrouter_prices(sample_dir)
    assert prices["qwen2.5-7b-instruct"] == {"input": 0.20, "output": 0.20}


def test_full_sources_row_counts(shared):
    # documented sizes: MMLU 14,042 rows minus 5 contaminated and merged duplicates
    assert len(data.load_routellm("mmlu", shared)) == 13932
    assert len(data.load_routellm("gsm8k", shared)) == 1307


# ------------------------------------------------------------------ the user's own file

def test_load_table_csv_with_bad_rows(tmp_path, caplog):
    f = tmp_path / "logs.csv"
    f.write_text("prompt,big,small\n"
                 "hello,1,0\n"
                 ",1,1\n"                 # empty prompt: skipped
                 "what,abc,1\n"           # non-numeric score: left empty
                 "why,,\n"                # no score at all: skipped
                 "hello,0,0\n"            # duplicate: merged (mean)
                 "how,true,false\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ds = data.load_table(f)
    assert ds["prompt"] == ["hello", "what", "how"]
    q = data.quality_matrix(ds, ["big", "small"])
    np.testing.assert_array_equal(q[0], [0.5, 0.0])
    assert np.isnan(q[1, 0]) and q[1, 1] == 1.0
    np.testing.assert_array_equal(q[2], [1.0, 0.0])
    assert "skipped 2 rows" in caplog.text


def test_load_table_jsonl_and_columns(tmp_path):
    f = tmp_path / "logs.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"q{i}", "A": i % 2, "B": 1, "topic": "t"})
                           for i in range(6)), encoding="utf-8")
    ds = data.load_table(f, prompt_column="text", model_columns=["A", "B"], group_column="topic")
    assert len(ds) == 6 and set(ds["group"]) == {"t"}
    with pytest.raises(DataFormatError, match=r"logs.jsonl.*missing column 'C'"):
        data.load_table(f, prompt_column="text", model_columns=["A", "C"])
    with pytest.raises(DataFormatError, match="missing column 'prompt'"):
        data.load_table(f)


def test_load_table_judge_scale(tmp_path):
    f = tmp_path / "j.csv"
    f.write_text("prompt,a,b\nx,10,1\ny,11,5.5\n", encoding="utf-8")
    ds = data.load_table(f, scale="judge10")
    q = data.quality_matrix(ds, ["a", "b"])
    np.testing.assert_allclose(q[0], [1.0, 0.0])
    assert np.isnan(q[1, 0]) and q[1, 1] == pytest.approx(0.5)


def test_load_table_errors(tmp_path):
    with pytest.raises(DataNotFoundError):
        data.load_table(tmp_path / "missing.csv")
    bad = tmp_path / "x.txt"
    bad.write_text("hi")
    with pytest.raises(DataFormatError, match="unsupported file type"):
        data.load_table(bad)


def test_broken_source_files_name_file_and_column(tmp_path):
    mmlu = tmp_path / "routellm-evals" / "mmlu" / "responses"
    mmlu.mkdir(parents=True)
    (mmlu / "mmlu_x.csv").write_text("prompt,gpt-4-1106-preview\nq,True\n")
    with pytest.raises(DataFormatError, match=r"mmlu_x.csv: missing column 'mistralai/Mixtral"):
        data.load_routellm("mmlu", tmp_path)
    d = tmp_path / "llmrouter-dcrouter"
    d.mkdir()
    (d / "train.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="train.json"):
        data.load_dcrouter("train", tmp_path)


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match="ROUTER_ML_DATA"):
        data.resolve_data_dir()
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert data.resolve_data_dir() == tmp_path
    assert data.resolve_data_dir(tmp_path) == tmp_path
    with pytest.raises(DataNotFoundError):
        data.resolve_data_dir(tmp_path / "nope")


# ------------------------------------------------------------------ labels

def test_pair_checks(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("prompt,big,small\na,1,0\nb,0,1\n")
    ds = data.load_table(f)
    with pytest.raises(UnknownModelError, match="known models: big, small"):
        pair_data(ds, "gpt-5", "small")
    with pytest.raises(ValueError, match="must differ"):
        pair_data(ds, "big", "big")


def test_labels():
    y, w = make_labels([1, 1, 0, 0.9], [0, 1, 1, 0.2], "strong_better")
    np.testing.assert_array_equal(y, [1, 0, 0, 1])
    np.testing.assert_array_equal(w, 1)
    y, w = make_labels([1, 1, 0, 0.9], [0, 1, 1, 0.2], "graded")
    np.testing.assert_allclose(w, [1, 0.1, 1, 0.7])
    with pytest.raises(ValueError, match="label kind"):
        make_labels([1], [0], "nope")
