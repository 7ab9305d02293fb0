"""Data adapters: small real samples of ../shared/data and hand-made bad files."""

import json
import logging
import shutil

import numpy as np
import pytest

from router_ml.errors import DataFormatError, DataNotFoundError, UnknownModelError
from router_ml.learn import sources, tables
from router_ml.learn.rows import TARGETS, concat, pair_data, rows_of
from router_ml.learn.protocols import STRONG_MODEL as S
from router_ml.learn.protocols import WEAK_MODEL as W


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
    ds = sources.load_routellm("mmlu", sample_dir)
    assert set(ds["group"]) == {"anatomy", "virology"}
    assert sources.models_of(ds) == [W, S]
    q = sources.quality_matrix(ds, [S, W])
    assert q.shape == (len(ds), 2) and np.isin(q, (0.0, 0.5, 1.0)).all()
    assert all(p.rstrip().endswith("Answer:") for p in ds["prompt"])


def test_routellm_drops_contaminated(sample_dir, shared):
    ds = sources.load_routellm("gsm8k", sample_dir)
    contaminated = {json.loads(line)["eval_prompt"].strip() for line in
                    open(shared / "routellm-evals/gsm8k/contaminated_prompts.jsonl")}
    assert not contaminated & {p.strip() for p in ds["prompt"]}
    assert 60 < len(ds) <= 80


def test_arena_hard_sample(sample_dir, caplog):
    with caplog.at_level(logging.WARNING):
        ds = sources.load_arena_hard(sample_dir)
    assert len(ds) == 300
    # model names come from the rows, not the file names
    assert {"gpt-4-1106-preview", "Mixtral-8x7B-Instruct-v0.1", "gpt-3.5-turbo"} <= set(sources.models_of(ds))
    q = sources.quality_matrix(ds, ["gpt-3.5-turbo"])
    assert 1 <= np.isnan(q).sum() <= 5  # a missing score is left empty, never invented
    assert "missing or invalid" in caplog.text
    qp = sources.quality_matrix(ds, [S, W])
    ok = qp[~np.isnan(qp)]
    assert ((ok >= 0) & (ok <= 1)).all()
    pair = pair_data(ds, S, W)
    assert 280 <= len(pair) <= 300


def test_dcrouter_sample_and_prices(sample_dir):
    ds = sources.load_dcrouter("all", sample_dir)
    assert len(sources.models_of(ds)) == 9 and 100 <= len(ds) <= 120
    prices = sources.load_dcrouter_prices(sample_dir)
    assert prices["qwen2.5-7b-instruct"] == {"input": 0.20, "output": 0.20}


def test_full_sources_row_counts(shared):
    # documented sizes: MMLU 14,042 rows minus 5 contaminated and merged duplicates
    assert len(sources.load_routellm("mmlu", shared)) == 13932
    assert len(sources.load_routellm("gsm8k", shared)) == 1307


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
        ds = tables.load_table(f)
    assert ds["prompt"] == ["hello", "what", "how"]
    q = sources.quality_matrix(ds, ["big", "small"])
    np.testing.assert_array_equal(q[0], [0.5, 0.0])
    assert np.isnan(q[1, 0]) and q[1, 1] == 1.0
    np.testing.assert_array_equal(q[2], [1.0, 0.0])
    assert "skipped 2 rows" in caplog.text


def test_load_table_jsonl_and_columns(tmp_path):
    f = tmp_path / "logs.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"q{i}", "A": i % 2, "B": 1, "topic": "t"})
                           for i in range(6)), encoding="utf-8")
    ds = tables.load_table(f, prompt_column="text", model_columns=["A", "B"], group_column="topic")
    assert len(ds) == 6 and set(ds["group"]) == {"t"}
    with pytest.raises(DataFormatError, match=r"logs.jsonl.*missing column 'C'"):
        tables.load_table(f, prompt_column="text", model_columns=["A", "C"])
    with pytest.raises(DataFormatError, match="missing column 'prompt'"):
        tables.load_table(f)


def test_load_table_judge_scale(tmp_path):
    f = tmp_path / "j.csv"
    f.write_text("prompt,a,b\nx,10,1\ny,11,5.5\n", encoding="utf-8")
    ds = tables.load_table(f, scale="judge10")
    q = sources.quality_matrix(ds, ["a", "b"])
    np.testing.assert_allclose(q[0], [1.0, 0.0])
    assert np.isnan(q[1, 0]) and q[1, 1] == pytest.approx(0.5)


def test_load_table_errors(tmp_path):
    with pytest.raises(DataNotFoundError):
        tables.load_table(tmp_path / "missing.csv")
    bad = tmp_path / "x.txt"
    bad.write_text("hi")
    with pytest.raises(DataFormatError, match="unsupported file type"):
        tables.load_table(bad)


def test_broken_source_files_name_file_and_column(tmp_path):
    mmlu = tmp_path / "routellm-evals" / "mmlu" / "responses"
    mmlu.mkdir(parents=True)
    (mmlu / "mmlu_x.csv").write_text("prompt,gpt-4-1106-preview\nq,True\n")
    with pytest.raises(DataFormatError, match=r"mmlu_x.csv: missing column 'mistralai/Mixtral"):
        sources.load_routellm("mmlu", tmp_path)
    d = tmp_path / "llmrouter-dcrouter"
    d.mkdir()
    (d / "train.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="train.json"):
        sources.load_dcrouter("train", tmp_path)


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match="ROUTER_ML_DATA"):
        sources.resolve_data_dir()
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path))
    assert sources.resolve_data_dir() == tmp_path
    assert sources.resolve_data_dir(tmp_path) == tmp_path
    with pytest.raises(DataNotFoundError):
        sources.resolve_data_dir(tmp_path / "nope")


# ------------------------------------------------------------------ alpaca-eval-pairs

FIRST_ALPACA = "What are the names of some famous actors that started their careers on Broadway?"


def test_alpaca_tiers_view(shared):
    ds = sources.load_alpaca_eval(shared)
    models = sources.models_of(ds)
    assert len(ds) == 801 and set(ds["source"]) == {"alpaca-eval"}
    assert set(ds["group"]) == {"selfinstruct", "oasst", "koala", "helpful_base", "vicuna"}
    assert models[0] == S and len(models) == 67  # 66 columns plus the baseline
    assert "gpt4" in models and W in models  # column names kept exactly
    q = sources.quality_matrix(ds)
    assert (q[:, 0] == 0.5).all()  # the baseline against itself, by construction
    assert np.isnan(q).sum() == 10  # the 10 empty cells of the README, never invented
    ok = q[~np.isnan(q)]
    assert ((ok >= 0) & (ok <= 1)).all()
    i = ds["prompt"].index(FIRST_ALPACA)
    assert ds["group"][i] == "helpful_base"
    assert sources.quality_matrix(ds, ["claude-2", W])[i].tolist() == [0.00012, 1.0]
    assert sources.quality_matrix(ds, [W])[:, 0].mean() == pytest.approx(0.227, abs=0.002)
    assert sources.load_source("alpaca-tiers", shared)["prompt"] == ds["prompt"]


def test_alpaca_pair_view(shared):
    tiers = sources.load_alpaca_eval(shared, view="tiers")
    ds = sources.load_alpaca_eval(shared, view="pair")
    assert sources.models_of(ds) == [S, W] and len(ds) == 801
    assert ds["prompt"] == tiers["prompt"]
    p = sources.quality_matrix(tiers, [W])[:, 0]
    pair = pair_data(ds, S, W)
    np.testing.assert_allclose(pair.q_weak, p)
    np.testing.assert_allclose(pair.q_strong, 1 - p)  # docs/protocols.md: quality(strong) = 1 - p
    assert pair.q_strong.mean() == pytest.approx(0.773, abs=0.002)
    # the named source is the pair view: it feeds the pair protocol alpaca-eval
    np.testing.assert_array_equal(sources.quality_matrix(sources.load_source("alpaca-eval", shared)),
                                  sources.quality_matrix(ds))
    with pytest.raises(ValueError, match="view must be 'tiers' or 'pair'"):
        sources.load_alpaca_eval(shared, view="both")


def _alpaca_dir(tmp_path, instructions, header, rows):
    d = tmp_path / "alpaca-eval-pairs"
    d.mkdir()
    (d / "instructions.jsonl").write_text("".join(
        json.dumps({"instruction": t, "dataset": "oasst"}) + "\n" for t in instructions))
    (d / "preferences.csv").write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return tmp_path


def test_alpaca_files_that_do_not_line_up(tmp_path):
    root = _alpaca_dir(tmp_path, ["a?", "b?", "c?"], f"instruction,{W}",
                       ["a? ,0.1", "b ?,0.2", "c?,0.3"])  # match on the exact text only
    with pytest.raises(DataFormatError,
                       match=r"preferences.csv: column 'instruction': only 1 of 3 rows match"):
        sources.load_alpaca_eval(root)
    (root / "alpaca-eval-pairs/preferences.csv").write_text(f"prompt,{W}\na?,0.1\n")
    with pytest.raises(DataFormatError, match=r"preferences.csv: the first column must be "
                                              r"'instruction'"):
        sources.load_alpaca_eval(root)
    (root / "alpaca-eval-pairs/preferences.csv").write_text("instruction,gemini-pro\na?,0.1\n")
    with pytest.raises(DataFormatError, match=rf"missing column '{W}'"):
        sources.load_alpaca_eval(root, view="pair")


# ------------------------------------------------------------------ pairwise preferences

def test_load_preferences_winner(tmp_path, caplog):
    f = tmp_path / "arena.csv"
    f.write_text("prompt,model_a,model_b,winner\n"
                 "p1,big,small,model_a\n"
                 "p1,small,big,tie\n"           # big on p1: (1 + 0.5) / 2
                 "p1,small,mid,B\n"             # case ignored: mid wins
                 "p2,big,small,tie (bothbad)\n"
                 "p2,big,mid,a\n"
                 "p2,big,small,draw\n"          # unknown winner: skipped and counted
                 "p3,big,big,model_a\n"         # same model on both sides: skipped
                 "p3,,small,model_a\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ds = tables.load_preferences(f)
    assert ds["prompt"] == ["p1", "p2"] and sources.models_of(ds) == ["big", "small", "mid"]
    q = sources.quality_matrix(ds)
    np.testing.assert_allclose(q[0], [0.75, 1 / 6, 1.0])  # small: 0, 0.5, 0
    np.testing.assert_allclose(q[1], [0.5, 0.0, 0.0])  # tie (bothbad) scores 0.0 for both
    assert "unknown winner: 1" in caplog.text and "'draw'" in caplog.text
    assert "same model on both sides: 1" in caplog.text and "missing model name: 1" in caplog.text
    q2 = sources.quality_matrix(tables.load_preferences(f, tie_bothbad=0.5))
    np.testing.assert_allclose(q2[1], [0.75, 0.5, 0.0])
    with pytest.raises(DataFormatError, match=r"arena.csv: missing column 'verdict'.*prob=NAME"):
        tables.load_preferences(f, winner="verdict")


def test_load_preferences_probability(tmp_path):
    f = tmp_path / "judge.jsonl"
    rows = [{"q": "x", "a": "openai/gpt-4o", "b": "azure/gpt-4o", "p": 0.8, "t": "chat"},
            {"q": "x", "a": "azure/gpt-4o", "b": "openai/gpt-4o", "p": 0.4, "t": "chat"},
            {"q": "y", "a": "openai/gpt-4o", "b": "azure/gpt-4o", "p": "n/a", "t": "code"},
            {"q": "y", "a": "openai/gpt-4o", "b": "azure/gpt-4o", "p": 1, "t": "code"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ds = tables.load_preferences(f, prompt_column="q", model_a="a", model_b="b", prob="p",
                               group_column="t", source="judge")
    assert sources.models_of(ds) == ["openai/gpt-4o", "azure/gpt-4o"]  # names kept as written
    np.testing.assert_allclose(sources.quality_matrix(ds), [[0.7, 0.3], [1.0, 0.0]])
    assert ds["group"] == ["chat", "code"] and set(ds["source"]) == {"judge"}
    bad = tmp_path / "none.csv"
    bad.write_text("prompt,model_a,model_b,winner\nx,a,b,?\n")
    with pytest.raises(DataFormatError, match=r"none.csv: no usable comparison \(unknown winner"):
        tables.load_preferences(bad)


# ------------------------------------------------------------------ names, costs, scales

def test_load_table_keeps_provider_prefixes(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("prompt,openai/gpt-4o,azure/gpt-4o\nq1,1,0\nq2,0,1\n")
    ds = tables.load_table(f)
    assert sources.models_of(ds) == ["openai/gpt-4o", "azure/gpt-4o"]
    np.testing.assert_array_equal(sources.quality_matrix(ds, ["azure/gpt-4o"])[:, 0], [0, 1])


def test_load_table_duplicate_model_names(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("prompt,big, big\nq1,1,0\n")
    with pytest.raises(DataFormatError, match=r"d.csv: columns 'big' and ' big' both give the "
                                              r"model name 'big'; rename one"):
        tables.load_table(f)
    f.write_text("prompt,big,big\nq1,1,0\n")
    with pytest.raises(DataFormatError, match=r"d.csv: more than one column is named 'big'"):
        tables.load_table(f)


ROUTERBENCH = ("sample_id,prompt,eval_name,big,big|model_response,big|total_cost,"
               "small,small|model_response,small|total_cost,input_tokens\n"
               "s1,q1,mmlu,1,A,0.002,0,B,0.0001,12\n"
               "s2,q2,mmlu,0,C,0.003,1,D,,20\n"      # a missing cost is left empty
               "s3,q1,mmlu,1,A,0.004,1,B,0.0003,12\n")  # duplicate prompt: costs averaged


def test_load_table_cost_columns(tmp_path, caplog):
    f = tmp_path / "rb.csv"
    f.write_text(ROUTERBENCH, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="router_ml.learn.tables"):
        ds = tables.load_table(f, model_columns=["big", "small"])
        auto = tables.load_table(tmp_path / "rb.csv")
    assert sources.models_of(ds) == ["big", "small"] and "cost" in ds.column_names
    np.testing.assert_allclose(sources.cost_matrix(ds), [[0.003, 0.0002], [0.003, np.nan]])
    np.testing.assert_allclose(sources.cost_matrix(ds.select([1]), ["small", "big"]),
                               [[np.nan, 0.003]])
    np.testing.assert_array_equal(sources.quality_matrix(ds), [[1, 0.5], [0, 1]])
    # recognised by name and excluded: costs, token counts, other per-model fields
    assert {"big", "small"} <= set(sources.models_of(auto))
    assert not {m for m in sources.models_of(auto) if "|" in m or "tokens" in m}
    assert "'big|total_cost'" in caplog.text and "'input_tokens'" in caplog.text
    np.testing.assert_array_equal(sources.cost_matrix(auto, ["big", "small"]), sources.cost_matrix(ds))
    with pytest.raises(DataFormatError, match=r"rb.csv: column 'big\|total_cost' looks like a "
                                              r"cost column.*drop it"):
        tables.load_table(f, model_columns=["big", "big|total_cost"])
    with pytest.raises(DataFormatError, match=r"'input_tokens' looks like a tokens column"):
        tables.load_table(f, model_columns=["big", "input_tokens"])
    plain = tmp_path / "plain.csv"
    plain.write_text("prompt,big,small\nq,1,0\n")
    ds = tables.load_table(plain)
    assert "cost" not in ds.column_names and sources.cost_matrix(ds) is None


def test_load_table_scale_must_fit_the_column(tmp_path):
    f = tmp_path / "judge.csv"
    f.write_text("prompt,a,b\n" + "".join(f"q{i},{s},1\n" for i, s in enumerate([7, 9, 3, 1, 8])))
    with pytest.raises(DataFormatError, match=r"judge.csv: column 'a' .* 4 of 5 numbers are "
                                              r"above 1 \(max 9\).*--scale judge10"):
        tables.load_table(f)
    q = sources.quality_matrix(tables.load_table(f, model_columns=["a"], scale="judge10"))
    np.testing.assert_allclose(q[:, 0], [6 / 9, 8 / 9, 2 / 9, 0, 7 / 9])
    zero_one = tmp_path / "zero_one.csv"
    zero_one.write_text("prompt,b\nq1,1\nq2,0\nq3,1\n")
    with pytest.raises(DataFormatError, match=r"zero_one.csv: column 'b' holds only values in "
                                              r"\[0, 1\].*--scale unit"):
        tables.load_table(zero_one, scale="judge10")
    # a few bad cells are not a wrong scale: left empty and counted
    few = tmp_path / "few.csv"
    few.write_text("prompt,a,b\nq1,1,1\nq2,0,1\nq3,7,1\n")
    assert np.isnan(sources.quality_matrix(tables.load_table(few))[2, 0])


def test_load_table_long_fields_and_malformed_lines(tmp_path, caplog):
    long = "x" * 300_000  # above the csv module's default field limit
    f = tmp_path / "long.csv"
    f.write_text(f"prompt,big\n{long},1\nq,0,1\nr,1\n")  # "q" has an extra field
    with caplog.at_level(logging.WARNING):
        ds = tables.load_table(f)
    assert ds["prompt"] == [long, "r"] and "malformed row: 1" in caplog.text
    j = tmp_path / "cut.jsonl"
    j.write_text('{"prompt": "a", "big": 1}\n{"prompt": "b", "big"')  # a truncated last line
    assert tables.load_table(j)["prompt"] == ["a"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_load_table_leaves_no_cache_copy(tmp_path, monkeypatch, suffix):
    import datasets

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)

    def no_load_dataset(*args, **kwargs):
        raise AssertionError("load_table must not go through datasets.load_dataset")

    monkeypatch.setattr(datasets, "load_dataset", no_load_dataset)
    rows = [{"prompt": "q1", "big": 1, "small": 0}, {"prompt": "q2", "big": 0, "small": 1}]
    f = tmp_path / f"logs{suffix}"
    if suffix == ".csv":
        f.write_text("prompt,big,small\nq1,1,0\nq2,0,1\n")
    elif suffix == ".jsonl":
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        f.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), f)
    ds = tables.load_table(f)
    np.testing.assert_array_equal(sources.quality_matrix(ds), [[1, 0], [0, 1]])
    assert list(cache.rglob("*")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["hf-cache", f.name])


# ------------------------------------------------------------------ labels

def test_pair_checks(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("prompt,big,small\na,1,0\nb,0,1\n")
    ds = tables.load_table(f)
    with pytest.raises(UnknownModelError, match="unknown model 'gpt-5'; known models: big, small"):
        pair_data(ds, "gpt-5", "small")
    with pytest.raises(ValueError, match="must differ; repeated: big"):
        pair_data(ds, "big", "big")


def test_rows_keep_model_names_and_order(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("prompt,openai/gpt-4o,azure/gpt-4o,small\na,1,0,0.5\nb,0,1,\nc,,,1\n")
    ds = tables.load_table(f)
    rows = rows_of(ds, ["azure/gpt-4o", "openai/gpt-4o", "small"])
    assert rows.models == ("azure/gpt-4o", "openai/gpt-4o", "small")  # exactly as given
    np.testing.assert_array_equal(rows.quality[:2], [[0, 1, 0.5], [1, 0, np.nan]])
    assert len(rows) == 3 and len(rows_of(ds, list(rows.models), complete=True)) == 1
    with pytest.raises(AttributeError, match="two models"):
        rows.q_strong
    pair = pair_data(ds, "openai/gpt-4o", "azure/gpt-4o")
    assert len(pair) == 2 and pair.models == ("openai/gpt-4o", "azure/gpt-4o")
    np.testing.assert_array_equal(pair.q_strong, [1, 0])
    np.testing.assert_array_equal(pair.q_weak, [0, 1])
    both = concat([pair, pair.subset([1])])
    assert both.prompts == ["a", "b", "b"] and both.quality.shape == (3, 2)
    with pytest.raises(ValueError, match="cannot join rows of models"):
        concat([pair, rows])


def test_targets():
    assert TARGETS == ("gain", "quality")
    from router_ml.learn.training import TrainConfig, build_estimator

    for t in TARGETS:
        assert build_estimator(TrainConfig(target=t)).target == t
    with pytest.raises(ValueError, match="target must be one of"):
        build_estimator(TrainConfig(target="strong_better"))
