"""Task types defined by example (router_ml.loop.tasks) and ``router-ml tasks eval``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from router_ml.cli.main import main as cli_main
from router_ml.loop.rules import RuleConfigError
from router_ml.loop.tasks import (
    DEFAULT_MIN_SIMILARITY,
    TASKS_SCHEMA,
    TaskDetector,
    TaskSpec,
    default_tasks,
    load_tasks,
    parse_tasks,
    task_encoder,
)
from servers import child_env

PLANTED = {
    "code": TaskSpec("code", ("Write a Python function that sorts a list of numbers",
                              "Fix the bug in this JavaScript loop",
                              "Implement a binary search in C++")),
    "translation": TaskSpec("translation", ("Translate this sentence into French",
                                            "How do you say good morning in German?",
                                            "Translate the paragraph from Spanish to English")),
    "summarisation": TaskSpec("summarisation", ("Summarise this article in three bullet points",
                                                "Give me a short summary of the report",
                                                "TL;DR of the following meeting notes")),
}


@pytest.mark.parametrize("table, where", [
    ({"coding": {}}, "tasks.coding.examples: needs a non-empty list"),
    ({"coding": {"examples": []}}, "tasks.coding.examples: needs a non-empty list"),
    ({"coding": {"examples": ["ok", 3]}}, "tasks.coding.examples[1]: must be a non-empty string"),
    ({"coding": {"examples": ["ok", "  "]}}, "tasks.coding.examples[1]"),
    ({"coding": {"examples": ["ok"], "min_similarity": 1.5}},
     "tasks.coding.min_similarity: must be a number in [-1, 1]"),
    ({"coding": {"examples": ["ok"], "min_similarity": -2}}, "tasks.coding.min_similarity"),
    ({"coding": {"examples": ["ok"], "min_similarity": True}}, "tasks.coding.min_similarity"),
    ({"coding": {"examples": ["ok"], "exmaples": ["x"]}}, "tasks.coding.exmaples: unknown key"),
    ({"coding": ["a list"]}, "tasks.coding: must be a table"),
    ({"extend_default": "yes"}, "tasks.extend_default: must be true or false"),
    ({}, "defines no task"),
])
def test_parse_tasks_names_the_source_and_the_bad_key(table, where):
    with pytest.raises(RuleConfigError) as e:
        parse_tasks(table, "team.toml")
    assert str(e.value).startswith("team.toml: ")
    assert where in str(e.value)


def test_parse_tasks_reads_a_table_and_can_extend_the_default_set():
    table = {"coding": {"examples": ["Write a function", "Fix this bug"], "min_similarity": 0.3}}
    tasks = parse_tasks(table)
    assert tasks == {"coding": TaskSpec("coding", ("Write a function", "Fix this bug"), 0.3)}
    extended = parse_tasks({"extend_default": True, **table,
                            "math": {"examples": ["Integrate x^2"]}})
    assert set(extended) == set(default_tasks()) | {"coding"}
    assert extended["math"].examples == ("Integrate x^2",)  # replaced by name
    assert TASKS_SCHEMA["additionalProperties"]["required"] == ["examples"]


def test_the_schema_accepts_what_parse_tasks_accepts():
    jsonschema = pytest.importorskip("jsonschema")
    good = {"extend_default": True, "coding": {"examples": ["a"], "min_similarity": 0.2,
                                               "description": "code"}}
    jsonschema.validate(good, TASKS_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"coding": {"examples": ["a"], "min_similarity": 2}}, TASKS_SCHEMA)


def test_default_tasks_has_the_eleven_documented_tasks():
    tasks = default_tasks()
    assert list(tasks) == ["code", "math", "reasoning", "extraction", "classification",
                           "summarisation", "translation", "writing", "role_play", "knowledge",
                           "chit_chat"]
    for spec in tasks.values():
        assert len(spec.examples) >= 10 and spec.description
    tasks.pop("code")  # a copy: the shipped set stays whole
    assert "code" in default_tasks()


def test_the_shipped_encoder_is_a_128_dimension_static_embedding():
    enc = task_encoder()
    X = enc.transform(["Write a Python function", "hello"])
    assert X.shape == (2, 128)
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert enc.model.embedding.dtype == np.float32


def test_packed_vectors_come_back_within_half_a_step():
    from router_ml.loop.tasks import pack_vectors, unpack_vectors

    V = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    V[:, 3] = 2.5  # a constant column
    parts = pack_vectors(V)
    assert parts["codes"].dtype == np.uint8 and parts["codes"].shape == (50, 4)
    back = unpack_vectors(**parts)
    assert np.all(np.abs(back - V) <= parts["step"] / 2 + 1e-6)
    assert np.allclose(back[:, 3], 2.5)
    assert np.allclose(back.min(0), V.min(0)) and np.allclose(back.max(0), V.max(0), atol=1e-5)
    with pytest.raises(ValueError, match="even number of columns"):
        pack_vectors(V[:, :7])
    with pytest.raises(ValueError, match="up to 4 bits"):
        pack_vectors(V, bits=8)


def test_planted_examples_map_to_their_task_and_unrelated_text_is_unknown():
    det = TaskDetector(PLANTED)
    got = det.detect_batch(["Write a Java function that reverses a string",
                            "Translate 'where is the station' into Italian",
                            "Summarise the following news article for me"])
    assert [t for t, _ in got] == ["code", "translation", "summarisation"]
    assert all(-1 <= s <= 1 for _, s in got)
    strict = TaskDetector(PLANTED, min_similarity=0.9)
    task, sim = strict.detect("zzqx vrrt plo")
    assert task is None and sim < 0.9
    assert det.detect("Translate this into Dutch")[0] == "translation"


def test_a_task_threshold_overrides_the_detector_default():
    tasks = dict(PLANTED, code=TaskSpec("code", PLANTED["code"].examples, min_similarity=1.0))
    det = TaskDetector(tasks)
    assert det.detect("Write a Python function that sorts a list of numbers")[0] is None
    assert det.detect("Translate this sentence into French")[0] == "translation"
    assert DEFAULT_MIN_SIMILARITY == det.min_similarity


class Letters:
    """A planted encoder: the counts of the letters a, b, c."""

    def __init__(self):
        self.calls = 0

    def transform(self, texts):
        self.calls += 1
        return np.array([[t.count(ch) + 0.01 for ch in "abc"] for t in texts], dtype=float)


def test_a_custom_encoder_is_used_and_examples_are_encoded_once():
    tasks = {"a": TaskSpec("a", ("aaaa", "aaa a")), "b": TaskSpec("b", ("bbbb", "bb bb")),
             "c": TaskSpec("c", ("cccc", "ccc c"))}
    enc = Letters()
    det = TaskDetector(tasks, enc, prior=0, lexical_weight=0)
    built = enc.calls
    assert [t for t, _ in det.detect_batch(["aaaaaa", "bbbbbbb", "cccccc"])] == ["a", "b", "c"]
    assert enc.calls == built + 1
    assert det.detect_batch([]) == []


def test_bad_detector_arguments_are_errors():
    with pytest.raises(ValueError, match="at least one task"):
        TaskDetector({})
    with pytest.raises(ValueError, match="min_similarity"):
        TaskDetector(PLANTED, min_similarity=2)


def test_load_tasks_reads_a_rules_file_or_falls_back_to_the_defaults(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[tasks.coding]\nexamples = ["Write a function"]\n', encoding="utf-8")
    assert list(load_tasks(rules)) == ["coding"]
    plain = tmp_path / "rules.json"
    plain.write_text(json.dumps({"fallback": "gpt-4o"}))
    assert load_tasks(plain) == default_tasks()
    with pytest.raises(RuleConfigError, match="does not exist"):
        load_tasks(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[tasks.coding]\nexamples = "one string"\n')
    with pytest.raises(RuleConfigError, match=r"bad.toml: tasks.coding.examples"):
        load_tasks(bad)


def _labelled(tmp_path):
    table = tmp_path / "labelled.csv"
    table.write_text("text,label\n"
                     '"Write a Go function that parses a date",code\n'
                     '"Translate thank you into Japanese",translation\n'
                     '"Summarise this report in two sentences",summarisation\n'
                     '"Compose a sonnet about the sea",poetry\n', encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text("".join(f"[tasks.{n}]\nexamples = {json.dumps(list(s.examples))}\n"
                             for n, s in PLANTED.items()), encoding="utf-8")
    return table, rules


def test_tasks_eval_reports_precision_recall_and_confusion(tmp_path, capsys):
    table, rules = _labelled(tmp_path)
    code = cli_main(["tasks", "eval", "--rules", str(rules), "--table", str(table),
                     "--prompt-column", "text", "--task-column", "label", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 4 and res["accuracy"] == 0.75
    assert res["per_task"]["code"]["recall"] == 1.0
    assert res["per_task"]["translation"]["labelled"] == 1
    assert res["undefined_labels"] == ["poetry"]
    conf = res["confusion"]
    assert conf["columns"] == ["code", "translation", "summarisation", "(none)"]
    assert conf["rows"] == ["code", "translation", "summarisation", "poetry"]
    assert [row[:3] for row in conf["counts"][:3]] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert cli_main(["tasks", "eval", "--rules", str(rules), "--table", str(table),
                     "--prompt-column", "text", "--task-column", "label"]) == 0
    out = capsys.readouterr().out
    assert "accuracy 75.0%" in out and "poetry" in out


def test_tasks_eval_errors_name_the_file_and_column(tmp_path, capsys):
    table, rules = _labelled(tmp_path)
    assert cli_main(["tasks", "eval", "--rules", str(rules), "--table", str(table)]) == 2
    err = capsys.readouterr().err
    assert "labelled.csv" in err and "no column 'prompt' (--prompt-column)" in err
    assert "columns: text, label" in err
    assert cli_main(["tasks", "eval", "--rules", str(rules), "--table",
                     str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv does not exist" in capsys.readouterr().err
    assert cli_main(["tasks", "eval", "--rules", str(tmp_path / "nope.toml"), "--table",
                     str(table)]) == 2
    assert "nope.toml does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_the_wheel_ships_the_default_tasks_and_the_task_embedding(tmp_path):
    """The package data of router_ml.loop is in the built wheel."""
    import shutil
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "router_ml", src / "router_ml",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta;"
                          "print(build_meta.build_wheel(sys.argv[1]))", str(tmp_path / "dist")],
                         cwd=src, capture_output=True, text=True,
                         env={**__import__("os").environ, **child_env()})
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"router_ml/loop/default_tasks.toml", "router_ml/loop/task_encoder/vectors.npz",
            "router_ml/loop/task_encoder/tokenizer.json"} <= names


def test_tasks_eval_has_help():
    out = subprocess.run([sys.executable, "-m", "router_ml.cli.main", "tasks", "eval", "--help"],
                         capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, **child_env()})
    assert out.returncode == 0, out.stderr
    assert "usage: router-ml tasks eval" in out.stdout and "--task-column" in out.stdout


def test_detection_needs_no_extra(tmp_path):
    """The serving path: the default detector loads and detects with the core install only."""
    code = ("import sys, importlib.abc\n"
            "BLOCK = ('sklearn', 'torch', 'scipy', 'sentence_transformers', 'pandas', 'pyarrow')\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in BLOCK:\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from router_ml.loop.tasks import TaskDetector, default_tasks\n"
            "print(TaskDetector(default_tasks()).detect('Translate good night into Italian')[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120,
                         env={**__import__("os").environ, **child_env()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "translation"


def test_the_documented_threshold_keeps_real_prompts_of_a_task_named(shared):
    """min_similarity = 0.3, as docs/tasks.md writes it, reads the plain cosine with the
    task's examples: real prompts of the three arena-hard-v2 categories (6 examples each, 30
    others tested) are named, not turned away as unknown."""
    import json

    by = {}
    with open(shared / "arena-hard-v2-prompts" / "prompts.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            by.setdefault(r["subcategory"], []).append(r["prompt"])
    tasks = {c: TaskSpec(c, tuple(ps[:6]), min_similarity=0.3) for c, ps in by.items()}
    tests = [(c, p) for c, ps in by.items() for p in ps[6:16]]
    found = TaskDetector(tasks).detect_batch([p for _, p in tests])
    unknown = sum(t is None for t, _ in found)
    right = sum(t == c for (c, _), (t, _) in zip(tests, found))
    assert unknown <= len(tests) // 10, unknown
    assert right >= len(tests) // 2, right


def test_build_task_encoder_writes_what_the_package_loads(tmp_path, monkeypatch):
    """The builder's files (distillation stubbed with the shipped embedding: distilling needs
    torch and half a minute) are what the loader reads: the same vectors within half a step,
    the printed digests those of the files."""
    import hashlib

    from router_ml.core.static import StaticEncoder
    from router_ml.loop.tasks import build_task_encoder, unpack_vectors

    shipped = task_encoder()
    monkeypatch.setattr(StaticEncoder, "distill", classmethod(lambda cls, **kw: shipped))
    digests = build_task_encoder(tmp_path / "enc")
    assert sorted(digests) == ["tokenizer.json", "vectors.npz"]
    for name, digest in digests.items():
        assert hashlib.sha256((tmp_path / "enc" / name).read_bytes()).hexdigest() == digest
    with np.load(tmp_path / "enc" / "vectors.npz", allow_pickle=False) as z:
        assert z["codes"].dtype == np.uint8
        back = unpack_vectors(z["codes"], z["low"], z["step"])
        step = z["step"]
    assert back.shape == shipped.model.embedding.shape
    assert np.all(np.abs(back - shipped.model.embedding) <= step / 2 + 1e-6)
