"""Protocol splits follow DESIGN.md's sha256 fold rule; extra sources never leak test rows."""

import hashlib

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
                              "alpaca-eval", "loso-mmlu", "loso-gsm8k", "loso-arena-hard",
                              "dcrouter", "alpaca-tiers"}


def test_unknown_protocol():
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_folds("nope")
