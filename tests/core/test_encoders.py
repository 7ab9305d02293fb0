"""The static encoder's fast path (token ids by chunk of text): model2vec's vectors."""

from __future__ import annotations

import json
import string
import sys

import numpy as np
import pytest
from conftest import tiny_static_encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_ml.core import static
from router_ml.core.encoders import MAX_CHARS, clean

PROMPTS = ["Prove that there are infinitely many primes.", "Write a haiku about the SEA",
           "tab\there\nnew\rline", "a control\x01character", "\x0bvertical\x0cfeed", "x\x7fy",
           "Héllo Wörld, ÀÉÎ ñ", "中文 mixed with English", "İstanbul", "emoji 😀 ok", "", "   ",
           "What is 2+2? (A) 3 (B) 4", "Word " * 2000, "Ünïcödé " * 1000, "\ud800 lone",
           # added tokens are matched before normalising; an over-long word is [UNK], dropped
           "keep [PAD] and [UNK] whole", "lower [pad] case", "x" * 150 + " tail", "[UNK]",
           # past the character cut (512 tokens x the median token length) and the token cut
           "supercalifragilistic_expialidocious! " * 120, "a-b " * 400,
           "under_score snake_case __dunder__ `code` {x: [1, 2]} ~^|\\",
           # whitespace that str.split() and the normaliser treat alike, or not
           "no\xa0break", "ideographic\u3000space", "line\u2028separator", "next\x85line",
           "file\x1cseparator", "zero\u200bwidth", "a \u0301b", "ΟΔΟΣ ΟΔΟΣ. Σ", "ǅungla ǅ",
           "https://example.com/" + "very-long-path/" * 10 + " done"]


def _model2vec(encoder, prompts) -> np.ndarray:
    out = encoder.model.encode([clean(p) for p in prompts], use_multiprocessing=False)
    return np.nan_to_num(np.asarray(out, dtype=np.float32))


def test_the_chunk_path_gives_model2vecs_vectors_bit_for_bit(minilm_tokenizer_json):
    enc = tiny_static_encoder(minilm_tokenizer_json)
    assert enc._chunk_ids() is not None  # the fast path is taken for this tokenizer
    for batch in (PROMPTS, PROMPTS[::-1], PROMPTS[:3], PROMPTS[6:9], [PROMPTS[0]], PROMPTS[16:]):
        np.testing.assert_array_equal(enc.transform(batch), _model2vec(enc, batch))
    # one prompt at a time, as route() encodes, gives the rows of the batch
    np.testing.assert_array_equal(np.vstack([enc.transform([p]) for p in PROMPTS]),
                                  enc.transform(PROMPTS))
    assert len(clean("Word " * 2000)) == MAX_CHARS
    assert not enc.transform(["[UNK]"]).any()  # nothing left: a zero vector, as model2vec
    assert "very-long-path/" * 2 not in "".join(enc._chunks)  # a long chunk is not kept


def test_str_split_breaks_text_only_where_the_tokenizer_does(minilm_tokenizer_json):
    """Every character str.split() splits at is whitespace to the BERT normaliser and
    pre-tokenizer, except those the fast path sends to model2vec (static._UNSPLIT)."""
    tok = tiny_static_encoder(minilm_tokenizer_json).model.tokenizer
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    unsplit = [c for c in spaces if static._UNSPLIT.search(c)]
    assert len(spaces) > 20 and unsplit == list("\x0b\x0c\x1c\x1d\x1e\x1f\x85")
    ids = tok.encode("ab cd", add_special_tokens=False).ids
    for c in spaces:
        got = tok.encode(f"ab{c}cd", add_special_tokens=False).ids
        assert (got == ids) != (c in unsplit), repr(c)


def test_the_chunk_table_is_bounded_and_starts_again_when_full(minilm_tokenizer_json, monkeypatch):
    enc = tiny_static_encoder(minilm_tokenizer_json)
    chunks = enc._chunk_ids()
    monkeypatch.setattr(static, "_CHUNK_CACHE", 3)
    enc.transform(["zzqx qqzv"])
    assert set(chunks) == {"zzqx", "qqzv"}
    prompts = ["vvqz zzqx", "kkqz"]  # two more would pass the bound: start again
    np.testing.assert_array_equal(enc.transform(prompts), _model2vec(enc, prompts))
    assert set(chunks) == {"vvqz", "zzqx", "kkqz"}
    prompts = ["qqzv " * 3, "vvqz"]  # a forgotten chunk is tokenised again
    np.testing.assert_array_equal(enc.transform(prompts), _model2vec(enc, prompts))
    assert set(chunks) == {"qqzv", "vvqz"}


def test_a_large_batch_is_encoded_in_parts_within_the_bound(minilm_tokenizer_json, monkeypatch):
    enc = tiny_static_encoder(minilm_tokenizer_json)
    monkeypatch.setattr(static, "_CHUNK_CACHE", 6)
    monkeypatch.setattr(static, "_PART", 2)
    prompts = [f"row {i} of {i * 7}" for i in range(9)] + PROMPTS
    np.testing.assert_array_equal(enc.transform(prompts), _model2vec(enc, prompts))
    assert len(enc._chunks) <= 6 + 2 * 4  # the bound, and what one part of two prompts adds


def test_chunks_cut_by_the_tokenizers_truncation_are_tokenised_one_by_one(
        minilm_tokenizer_json, monkeypatch):
    enc = tiny_static_encoder(minilm_tokenizer_json)
    monkeypatch.setattr(static, "_GROUP_CHARS", 10**6)  # one text for all: past 512 tokens
    prompts = [" ".join(f"w{i}x{j}" for j in range(60)) for i in range(12)] + PROMPTS
    np.testing.assert_array_equal(enc.transform(prompts), _model2vec(enc, prompts))
    assert enc._chunks["w11x59"] == tuple(enc.model.tokenizer.encode("w11x59").ids[1:-1])


_PLAIN = string.printable.replace("\x0b", "").replace("\x0c", "")
_fuzzed: dict = {}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(alphabet=_PLAIN, max_size=300),
                          st.text(alphabet=_PLAIN + "àÉß中😀İΣς\xa0\u2028\u0301\u200b", max_size=200),
                          st.text(max_size=100))  # any character
                .map(lambda s: s.replace("P", "[PAD]")), min_size=1, max_size=4))
def test_any_text_gets_model2vecs_vectors(minilm_tokenizer_json, prompts):
    enc = _fuzzed.get("enc") or _fuzzed.setdefault("enc", tiny_static_encoder(minilm_tokenizer_json))
    np.testing.assert_array_equal(enc.transform(prompts), _model2vec(enc, prompts))


def test_an_added_token_with_a_space_takes_model2vecs_path(minilm_tokenizer_json):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(minilm_tokenizer_json)
    tok.add_special_tokens(["end of turn"])
    enc = tiny_static_encoder(tok.to_str())
    assert enc._chunk_ids() is not None and enc._added == ("end of turn",)
    prompts = ["the end of turn here", "at the end of a turn", "end of turn"]
    np.testing.assert_array_equal(enc.transform(prompts), _model2vec(enc, prompts))


@pytest.mark.parametrize("normalizer", [None, {"type": "Lowercase"}])
def test_another_normaliser_keeps_model2vecs_own_path(minilm_tokenizer_json, normalizer):
    config = json.loads(minilm_tokenizer_json)
    config["normalizer"] = normalizer
    enc = tiny_static_encoder(json.dumps(config))
    assert enc._chunk_ids() is None
    np.testing.assert_array_equal(enc.transform(PROMPTS), _model2vec(enc, PROMPTS))


def test_a_long_encoding_draws_no_progress_bar_off_a_terminal(capsys):
    """More than 20,000 prompts: a bar on a terminal only; a notebook's kernel (the docs'
    notebook pages) or a log gets none, and no TqdmWarning about Jupyter widgets."""
    import warnings

    from router_ml.learn.training import static_encoder

    enc = static_encoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = enc.transform([f"say hello to number {i}" for i in range(20_001)])
    assert X.shape[0] == 20_001
    assert "encoding prompts" not in capsys.readouterr().err
