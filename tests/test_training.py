"""router_ml.learn.training: the default's static embedding is an input of training (committed,
checked by sha256), so training builds the same router on any machine."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from router_ml.learn import training


def test_the_committed_static_embedding_matches_its_digests():
    for name, digest in training.STATIC_SHA256.items():
        assert hashlib.sha256((training.STATIC_DIR / name).read_bytes()).hexdigest() == digest


def test_the_default_static_encoder_is_read_from_the_committed_files(monkeypatch):
    def no_distil(*a, **k):
        raise AssertionError("the default static embedding must not be distilled again")

    from router_ml.core.static import StaticEncoder

    monkeypatch.setattr(StaticEncoder, "distill", no_distil)
    enc = training.static_encoder()
    parts = enc.parts()
    expect = np.load(training.STATIC_DIR / "vectors.npy", allow_pickle=False)
    assert parts["vectors"].dtype == np.int8 and np.array_equal(parts["vectors"], expect)
    assert parts["tokenizer"] == (training.STATIC_DIR / "tokenizer.json").read_text("utf-8")
    X = enc.transform(["What is 2+2?", "Prove that there are infinitely many primes."])
    assert X.shape == (2, 64) and np.isfinite(X).all()


def test_a_changed_static_file_is_refused_by_name(tmp_path):
    folder = tmp_path / "static"
    shutil.copytree(training.STATIC_DIR, folder)
    data = bytearray((folder / "vectors.npy").read_bytes())
    data[-1] ^= 1
    (folder / "vectors.npy").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"vectors.npy: sha256 differs"):
        training.committed_static_encoder(folder)
