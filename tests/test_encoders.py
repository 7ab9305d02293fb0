"""The static encoder's ASCII fast path: the same vectors as model2vec's own encoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_static_encoder
from router_ml.encoders import MAX_CHARS, _plain_ascii, clean

PROMPTS = ["Prove that there are infinitely many primes.", "Write a haiku about the SEA",
           "tab\there\nnew\rline", "a control\x01character", "\x0bvertical\x0cfeed", "x\x7fy",
           "Héllo Wörld, ÀÉÎ ñ", "中文 mixed with English", "İstanbul", "emoji 😀 ok", "", "   ",
           "What is 2+2? (A) 3 (B) 4", "Word " * 2000, "Ünïcödé " * 1000, "\ud800 lone"]


def _model2vec(encoder, prompts) -> np.ndarray:
    out = encoder.model.encode([clean(p) for p in prompts], use_multiprocessing=False)
    return np.nan_to_num(np.asarray(out, dtype=np.float32))


def test_the_ascii_path_gives_model2vecs_vectors_bit_for_bit(minilm_tokenizer_json):
    enc = tiny_static_encoder(minilm_tokenizer_json)
    assert enc._plain_model() is not None  # the fast path is taken for this tokenizer
    assert [_plain_ascii(clean(p)) for p in PROMPTS[:6]] == [True, True, True, False, False, False]
    for batch in (PROMPTS, PROMPTS[::-1], PROMPTS[:3], PROMPTS[6:9], [PROMPTS[0]]):
        np.testing.assert_array_equal(enc.transform(batch), _model2vec(enc, batch))
    # one prompt at a time, as route() encodes, gives the rows of the batch
    np.testing.assert_array_equal(np.vstack([enc.transform([p]) for p in PROMPTS]),
                                  enc.transform(PROMPTS))
    assert len(clean("Word " * 2000)) == MAX_CHARS


@pytest.mark.parametrize("normalizer", [None, {"type": "Lowercase"}])
def test_another_normaliser_keeps_model2vecs_own_path(minilm_tokenizer_json, normalizer):
    config = json.loads(minilm_tokenizer_json)
    config["normalizer"] = normalizer
    enc = tiny_static_encoder(json.dumps(config))
    assert enc._plain_model() is None
    np.testing.assert_array_equal(enc.transform(PROMPTS), _model2vec(enc, PROMPTS))
