"""Protocol splits follow docs/protocols.md's sha256 fold rule; extra sources never leak test rows."""

import hashlib

import numpy as np
import pytest

from router_ml.learn.protocols import PROTOCOLS, QuestionIndex, fold, protocol_folds, question_key


def test_fold_rule_matches_design():
    for text in ["What is 2+2?", "  padded  ", "abstract_algebra", "é"]:
        expected = int(hashlib.sha256(text.strip().encode("utf-8")).hexdigest(), 16) % 5
        assert fold(text) == expected


def test_question_key_ignores_formatting():
    a = "Which gas do plants absorb?\nA. Oxygen\nB. Carbon dioxide\nC. Helium\nD. Neon\nAnswer:"
    b = "which  gas do plants ABSORB?"
    assert question_key(a) == question_key(b)
    long_q = "Janet has 16 eggs and eats three for breakfast every morning and bakes muffins with four more eggs. How many are left?"
    idx = QuestionIndex([long_q])
    assert long_q + "\nAfter careful thought, put your final answer in \\boxed{...}." in idx
    assert "Something else entirely about ducks and eggs and breakfast on the farm today." not in idx



def test_mmlu_split(shared):
    (f,) = protocol_folds("mmlu", shared)
    assert all(fold(p) == 0 for p in f.test.prompts)
    assert all(fold(p) != 0 for p in f.train.prompts)
    assert len(f.train) + len(f.test) == 13932


def test_mmlu_subjects_unseen(shared):
    folds = protocol_folds("mmlu-subjects", shared)
    assert len(folds) == 5
    for f in folds:
        assert not set(f.train.groups) & set(f.test.groups)
        assert all(fold(g) == f.k for g in set(f.test.groups))
    assert sum(len(f.test) for f in folds) == 13932


def test_gsm8k_and_transfer(shared):
    folds = protocol_folds("gsm8k", shared)
    assert sum(len(f.test) for f in folds) == 1307
    for f in folds:
        assert not set(f.train.prompts) & set(f.test.prompts)
    (t,) = protocol_folds("mmlu-to-gsm8k", shared)
    assert set(t.test.sources) == {"gsm8k"} and set(t.train.sources) == {"mmlu"}


def test_extra_sources_drop_test_questions(shared):
    folds = protocol_folds("gsm8k", shared, extra=("dcrouter", "arena-hard"))
    # dcrouter holds other models only: it is not added for this pair; arena-hard is
    assert all(f.dropped == 0 for f in folds)
    assert all("arena-hard" in set(f.train.sources) for f in folds)
    assert set(PROTOCOLS) == {"mmlu", "mmlu-subjects", "gsm8k", "mmlu-to-gsm8k", "arena-hard",
                              "alpaca-eval", "loso-mmlu", "loso-gsm8k", "loso-arena-hard", "mixed",
                              "dcrouter", "alpaca-tiers", "arena-rated", "arena-battles"}


def test_real_chat_protocols(shared):
    """arena-rated: the 236 rated prompts not in arena-hard-v1 with their difficulty; the
    length baseline's rho is about 0.14 (docs/protocols.md). arena-battles: the battles between models 100 Elo
    apart. Training rows never hold a test prompt, through any source."""
    from router_ml.learn import arena
    from router_ml.learn.protocols import QuestionIndex, with_outcomes

    (rated,) = with_outcomes(protocol_folds("arena-rated", shared, extra=("arena-hard",)),
                             data_dir=shared)
    assert len(rated.test) == len(set(rated.test.prompts)) == 236
    assert rated.difficulty.shape == (236,) and 0 <= rated.difficulty.min() < rated.difficulty.max() <= 10
    length = arena.rated_metric([len(p) for p in rated.test.prompts], rated.difficulty)
    assert length["rho"] == pytest.approx(0.14, abs=0.015) and 0.03 < length["se"] < 0.1
    index = QuestionIndex(rated.test.prompts)
    for rows in (rated.train, rated.outcomes):
        assert not any(p in index for p in rows.prompts)
    assert "arena-rated" in set(rated.outcomes.sources)  # the other rated prompts teach
    assert len(rated.outcomes.models) > 20 and rated.dropped > 236
    (battles,) = protocol_folds("arena-battles", shared)
    q = battles.test.quality
    assert len(battles.test) > 500 and set(np.unique(q[:, 0])) <= {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(q[:, 0] + q[:, 1], 1.0)
    assert q[:, 0].mean() > 0.6  # the stronger model wins more often than it loses


def test_bradley_terry_recovers_planted_ratings():
    from router_ml.learn import arena

    rng = np.random.default_rng(0)
    true = {"a": 200.0, "b": 0.0, "c": -200.0}
    battles = []
    for _ in range(3000):
        x, y = rng.choice(list(true), 2, replace=False)
        p = 1 / (1 + 10 ** ((true[y] - true[x]) / 400))
        battles.append({"model_a": x, "model_b": y,
                        "winner": "model_a" if rng.random() < p else "model_b"})
    got = arena.bradley_terry(battles)
    for m in true:
        assert got[m] == pytest.approx(true[m], abs=30)


def test_unknown_protocol():
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_folds("nope")


def test_outcomes_without_the_arena_source_warn_and_go_on(shared, monkeypatch, caplog):
    from router_ml.learn import arena
    from router_ml.learn.protocols import outcome_rows

    def missing(data_dir=None):
        raise FileNotFoundError("arena-battles-2023/battles.jsonl")

    monkeypatch.setattr(arena, "load_arena_battles", missing)
    rows = outcome_rows(("gsm8k", "arena-rated"), shared)
    assert set(rows.sources) == {"gsm8k"} and "arena-rated left out" in caplog.text
