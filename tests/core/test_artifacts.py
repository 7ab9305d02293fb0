"""Saved routers: tampered, truncated, hostile or half-written artifacts are refused, nothing
from a file is executed, saves are atomic and a round trip gives identical scores."""

from __future__ import annotations

import json
import re
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from router_ml import (
    ArtifactIntegrityError,
    ArtifactVersionError,
    UntrustedTypeError,
    load_router,
)
from router_ml.core import artifact

ROOT = Path(__file__).resolve().parents[2]
PROBES = ["prove the theorem about the integral", "say hello to my friend", "", "\ud800\x00 😀",
          "x" * 20_000, "Какова производная?"]


class Payload:
    """Unpickling this creates ``marker``: proof that code from a file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(params=["tfidf", "static", "neighbours", "calibrated"])
def saved(request, make_router, tmp_path):
    """(router, folder) of a fitted router saved to tmp_path / "r": logistic regression as
    arrays (tfidf, static; with its nearest training rows: neighbours) or a classifier in
    skops format (calibrated)."""
    router = make_router(request.param)
    router.calibrate(PROBES[:2], share=0.5)
    router.save(tmp_path / "r")
    return router, tmp_path / "r"


@pytest.fixture
def saved_tfidf(make_router, tmp_path):
    router = make_router("tfidf")
    router.save(tmp_path / "r")
    return router, tmp_path / "r"


@pytest.fixture
def saved_skops(make_router, tmp_path):
    router = make_router("calibrated")
    router.save(tmp_path / "r")
    assert (tmp_path / "r" / artifact.ESTIMATOR_FILE).is_file()
    return router, tmp_path / "r"


def rewrite_manifest(folder: Path, edit) -> None:
    """Apply ``edit(manifest)`` and re-seal the manifest: an attacker who knows the format."""
    m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    edit(m)
    m[artifact.MANIFEST_DIGEST] = artifact.manifest_digest(m)
    (folder / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def reseal_file(folder: Path, name: str) -> None:
    """Record the current sha256 of ``name`` in the manifest (and re-seal the manifest)."""
    digest = artifact._sha256(folder / name)
    rewrite_manifest(folder, lambda m: m["files"].__setitem__(name, digest))


def assert_same_router(a, b):
    np.testing.assert_array_equal(a.predict_quality(PROBES), b.predict_quality(PROBES))
    assert (a.models, a.prices, a.threshold, a.lam) == (b.models, b.prices, b.threshold, b.lam)
    if len(a.models) == 2:
        np.testing.assert_array_equal(a.score(PROBES), b.score(PROBES))
        assert (a.strong_model, a.weak_model) == (b.strong_model, b.weak_model)
    assert a.route_batch(PROBES) == b.route_batch(PROBES)


# ------------------------------------------------------------------ round trip

def test_round_trip_gives_identical_scores(saved):
    router, folder = saved
    loaded = load_router(folder)
    assert_same_router(router, loaded)
    assert loaded.calibration == router.calibration and loaded.training == router.training
    m = loaded.manifest
    assert m[artifact.MANIFEST_DIGEST] == artifact.manifest_digest(m)
    assert set(m["files"]) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    loaded.save(folder)  # saving over itself
    assert_same_router(router, load_router(folder))


# ------------------------------------------------------------------ damaged files

def _positions(n, rng):
    return sorted({0, 1, n // 2, n - 1, *rng.integers(0, n, 4).tolist()})


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_a_flipped_byte_in_any_file_is_refused(saved, mask):
    router, folder = saved
    rng = np.random.default_rng(mask)
    for name in sorted(p.name for p in folder.iterdir()):
        path = folder / name
        original = path.read_bytes()
        for pos in _positions(len(original), rng):
            damaged = bytearray(original)
            damaged[pos] ^= mask
            path.write_bytes(bytes(damaged))
            expected = (ArtifactIntegrityError, ArtifactVersionError) if name == "manifest.json" \
                else ArtifactIntegrityError
            with pytest.raises(expected):
                load_router(folder)
        path.write_bytes(original)
    assert_same_router(router, load_router(folder))


def test_every_single_bit_flip_of_the_manifest_is_refused(saved_tfidf):
    """The manifest has no recorded sha256 elsewhere: its own digest and key check catch a
    changed threshold, model name, file name or digest, wherever the bit is (every byte with
    bit 0, 600 random bytes with bits 2 and 5)."""
    _, folder = saved_tfidf
    path = folder / "manifest.json"
    original = path.read_bytes()
    accepted = []
    rng = np.random.default_rng(0)
    flips = [(pos, 0x01) for pos in range(len(original))] + [
        (int(pos), bit) for bit in (0x04, 0x20) for pos in rng.integers(0, len(original), 300)]
    for pos, bit in flips:
        damaged = bytearray(original)
        damaged[pos] ^= bit
        path.write_bytes(bytes(damaged))
        try:
            load_router(folder)
            accepted.append((pos, bit))
        except (ArtifactIntegrityError, ArtifactVersionError):
            pass
    assert accepted == []


def test_truncated_or_missing_files_are_refused(saved):
    _, folder = saved
    for name in sorted(p.name for p in folder.iterdir()):
        path = folder / name
        original = path.read_bytes()
        # (a manifest cut just before its final newline is still the same JSON: it loads)
        for size in (0, 1, len(original) // 2, len(original.rstrip()) - 1):
            path.write_bytes(original[:size])
            with pytest.raises(ArtifactIntegrityError):
                load_router(folder)
        path.unlink()
        with pytest.raises(ArtifactIntegrityError, match="no manifest.json|missing"):
            load_router(folder)
        path.write_bytes(original)
    load_router(folder)


@pytest.mark.parametrize("version", [0, artifact.FORMAT_VERSION + 1, 99, "1", "2", None, 1.5, [2]])
def test_unknown_format_version_is_refused(saved_tfidf, version):
    _, folder = saved_tfidf
    rewrite_manifest(folder, lambda m: m.__setitem__("format_version", version))
    with pytest.raises(ArtifactVersionError, match="retrain or upgrade router_ml"):
        load_router(folder)
    rewrite_manifest(folder, lambda m: m.pop("format_version"))
    with pytest.raises(ArtifactVersionError, match="format version None"):
        load_router(folder)


# ------------------------------------------------------------------ hostile content

def _pickles(marker):
    """A pickle payload in several shapes: raw pickles and a pickled (object) .npy."""
    out = {f"pickle-p{p}": pickle.dumps(Payload(marker), protocol=p) for p in (0, 2, 5)}
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    out["object-npy"] = buf.getvalue()
    return out


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """Guards the tests below: the payload would leave its marker if anything unpickled it."""
    for name, blob in _pickles(tmp_path / "proof").items():
        (tmp_path / "proof").unlink(missing_ok=True)
        if name == "object-npy":
            import io

            np.load(io.BytesIO(blob), allow_pickle=True)
        else:
            pickle.loads(blob)
        assert (tmp_path / "proof").exists(), name


@pytest.mark.parametrize("reseal", [False, True], ids=["stale-sha256", "resealed-sha256"])
def test_a_pickle_in_place_of_a_fitted_part_is_refused_and_never_run(saved, tmp_path, reseal):
    router, folder = saved
    marker = tmp_path / "executed"
    for name in [n for n in sorted(os.listdir(folder)) if n != "manifest.json"]:
        path = folder / name
        original, manifest = path.read_bytes(), (folder / "manifest.json").read_bytes()
        for kind, blob in _pickles(marker).items():
            path.write_bytes(blob)
            if reseal:
                reseal_file(folder, name)
            with pytest.raises((ArtifactIntegrityError, UntrustedTypeError)) as info:
                load_router(folder)
            if not reseal:
                assert info.type is ArtifactIntegrityError and "sha256 differs" in str(info.value)
            elif name.endswith(".npy"):
                assert info.type is UntrustedTypeError  # numpy refuses pickled data
            elif name.endswith(".skops"):
                assert info.type is ArtifactIntegrityError
                assert "not a readable skops" in str(info.value)
            assert not marker.exists(), (name, kind)
        path.write_bytes(original)
        (folder / "manifest.json").write_bytes(manifest)
    assert_same_router(router, load_router(folder))


def _skops_with(obj, path):
    import skops.io as sio

    sio.dump(obj, path)


@pytest.mark.parametrize("case", ["object", "function", "renamed-class", "sklearn-not-allowed"])
def test_skops_files_with_types_off_the_allow_list_are_refused(saved_skops, tmp_path, case):
    _, folder = saved_skops
    marker = tmp_path / "executed"
    target = folder / artifact.ESTIMATOR_FILE
    if case == "object":
        _skops_with(Payload(marker), target)
    elif case == "function":
        _skops_with({"f": open, "g": os.system}, target)
    elif case == "renamed-class":  # the real classifier, relabelled as subprocess.Popen
        with zipfile.ZipFile(target) as z:
            members = {n: z.read(n) for n in z.namelist()}
        schema = json.loads(members["schema.json"])
        schema["__module__"], schema["__class__"] = "subprocess", "Popen"
        members["schema.json"] = json.dumps(schema).encode()
        with zipfile.ZipFile(target, "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
    else:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        _skops_with(make_pipeline(FunctionTransformer(np.log1p)), target)
    reseal_file(folder, artifact.ESTIMATOR_FILE)
    with pytest.raises(UntrustedTypeError, match="not on router_ml's allow-list"):
        load_router(folder)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/passwd", "sub/classifier.skops", "..",
                                  ".", "encoder.idf.npy/../../x", "classifier.skops\x00", "",
                                  "manifest.json", "~/x", "encoder..npy/..", "C:\\x"])
def test_path_traversal_in_the_manifest_is_refused(saved_tfidf, name):
    _, folder = saved_tfidf
    outside = folder.parent / "outside.npy"
    shutil.copy(folder / "encoder.idf.npy", outside)  # a real file with the right sha256
    digest = artifact._sha256(outside)
    rewrite_manifest(folder, lambda m: m["files"].__setitem__(name, digest))
    with pytest.raises(ArtifactIntegrityError, match="not a plain file name"):
        load_router(folder)


@pytest.mark.parametrize("name", ["encoder.idf.npy", "estimator.coef.npy", "manifest.json"])
def test_a_symlink_out_of_the_folder_is_refused(saved_tfidf, name):
    router, folder = saved_tfidf
    outside = folder.parent / f"outside-{name}"
    shutil.move(folder / name, outside)  # same bytes, same sha256: only the link is wrong
    (folder / name).symlink_to(outside)
    with pytest.raises(ArtifactIntegrityError, match="symlink|no manifest.json"):
        load_router(folder)
    (folder / name).unlink()
    shutil.move(outside, folder / name)
    assert_same_router(router, load_router(folder))


def test_unlisted_files_are_never_read(saved_tfidf, tmp_path):
    router, folder = saved_tfidf
    marker = tmp_path / "executed"
    (folder / "classifier.pkl").write_bytes(pickle.dumps(Payload(marker)))
    assert_same_router(router, load_router(folder))
    assert not marker.exists()
    reseal_file(folder, "classifier.pkl")  # listed now, but not a file router_ml reads
    with pytest.raises(ArtifactIntegrityError, match="does not read: classifier.pkl"):
        load_router(folder)
    assert not marker.exists()


def _edit_manifest_cases():
    def set_(key, value):
        return lambda m: m.__setitem__(key, value)

    def knob(value, kind="threshold"):
        return set_("knob", {"kind": kind, "value": value})

    def head(key, value):
        return lambda m: m["estimator"]["heads"][0].__setitem__(key, value)

    return {
        "threshold NaN": knob(float("nan")),
        "threshold 2": knob(2),
        "threshold str": knob("0.5"),
        "lam negative": knob(-1.0, "lam"),
        "knob kind unknown": knob(0.5, "temperature"),
        "knob not a dict": set_("knob", 0.5),
        "same models": lambda m: m.__setitem__("models", [m["models"][0]] * 2),
        "one model": lambda m: m.__setitem__("models", m["models"][:1]),
        "three models for two heads": lambda m: m.__setitem__("models", m["models"] + ["third"]),
        "models not a list": set_("models", "strong,weak"),
        "prices not a dict": set_("prices", ["strong"]),
        "unknown encoder": set_("encoder", {"kind": "pickle"}),
        "encoder not a dict": set_("encoder", "tfidf"),
        "calibration extra key": set_("calibration", {"method": "x", "target": {}, "evil": 1}),
        "files empty": set_("files", {}),
        "files a list": set_("files", ["estimator.skops"]),
        "no estimator": lambda m: [m["files"].pop(k) for k in list(m["files"])
                                   if k.startswith("estimator.")],
        "estimator type changed": lambda m: m["estimator"].__setitem__("type", "os.system"),
        "estimator skops without a file": lambda m: m["estimator"].__setitem__("type", "skops"),
        "head kind unknown": head("kind", "pickle"),
        "head classes off the target": head("classes", [0, 2]),
        "head rows too many": head("rows", 3),
        "heads missing": lambda m: m["estimator"].__setitem__("heads", []),
        "no encoder part": lambda m: m["files"].pop("encoder.idf.npy"),
        "unknown top-level key": set_("pickle", "yes"),
        "a version-1 key": set_("threshold", 0.5),
        "prior kind unknown": set_("prior", {"kind": "words", "weight": 0.5,
                                             "score_quantiles": [0, 1], "length_quantiles": [0, 1]}),
        "prior weight 2": set_("prior", {"kind": "length", "weight": 2.0,
                                         "score_quantiles": [0, 1], "length_quantiles": [0, 1]}),
        "prior quantiles decreasing": set_("prior", {"kind": "length", "weight": 0.5,
                                                     "score_quantiles": [1, 0],
                                                     "length_quantiles": [0, 1]}),
        "prior without its quantiles": set_("prior", {"kind": "length", "weight": 0.5}),
        "prior not a dict": set_("prior", 0.5),
        "not an object": None,
    }


@pytest.mark.parametrize("case", list(_edit_manifest_cases()))
def test_resealed_manifests_with_bad_content_are_refused(saved_tfidf, case):
    _, folder = saved_tfidf
    edit = _edit_manifest_cases()[case]
    if edit is None:
        (folder / "manifest.json").write_text("[1, 2, 3]")
    else:
        m = json.loads((folder / "manifest.json").read_text())
        edit(m)
        m[artifact.MANIFEST_DIGEST] = artifact.manifest_digest(m) if case != "threshold NaN" \
            else "0" * 64  # NaN has no canonical JSON
        (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactIntegrityError):
        load_router(folder)


def test_stale_manifest_digest_and_oversized_or_deep_manifests(saved_tfidf):
    _, folder = saved_tfidf
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    m["models"][0] = "some-other-model"  # digest left stale
    path.write_text(json.dumps(m))
    with pytest.raises(ArtifactIntegrityError, match="differs from its manifest_sha256"):
        load_router(folder)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactIntegrityError, match="not valid JSON"):
        load_router(folder)
    path.write_text(" " * (artifact._MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ArtifactIntegrityError, match="too large"):
        load_router(folder)


def test_manifest_without_digest_is_refused(saved):
    """The digest is required: removing it to hide a change is caught like a changed value."""
    _, folder = saved
    m = json.loads((folder / "manifest.json").read_text())
    del m[artifact.MANIFEST_DIGEST]
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactIntegrityError, match="no manifest_sha256"):
        load_router(folder)
    m["knob"]["value"] = 0.0  # the change the removal would hide
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactIntegrityError, match="no manifest_sha256"):
        load_router(folder)


def _replace_array(folder, name, array):
    with open(folder / name, "wb") as f:
        np.save(f, array, allow_pickle=False)
    reseal_file(folder, name)


def test_parts_that_do_not_fit_together_are_refused(saved_tfidf):
    router, folder = saved_tfidf
    idf = np.load(folder / "encoder.idf.npy")
    terms = json.loads((folder / "encoder.terms.json").read_text())
    cases = {
        "NaN idf": (np.where(np.arange(len(idf)) == 3, np.nan, idf), terms),
        "negative idf": (-idf, terms),
        "string idf": (idf.astype(str), terms),
        "2-d idf": (idf[:, None], terms),
        "short idf": (idf[:-1], terms),
        "fewer features than the classifier": (idf[:-1], terms[:-1]),
        "terms not strings": (idf, [1] * len(terms)),
    }
    for case, (new_idf, new_terms) in cases.items():
        _replace_array(folder, "encoder.idf.npy", new_idf)
        (folder / "encoder.terms.json").write_text(json.dumps(new_terms))
        reseal_file(folder, "encoder.terms.json")
        with pytest.raises(ArtifactIntegrityError,
                           match="cannot rebuild|no valid prediction|features"):
            load_router(folder)
    _replace_array(folder, "encoder.idf.npy", idf)
    (folder / "encoder.terms.json").write_text(json.dumps(terms))
    reseal_file(folder, "encoder.terms.json")
    assert_same_router(router, load_router(folder))


def test_logistic_arrays_that_do_not_fit_are_refused(saved_tfidf):
    router, folder = saved_tfidf
    arrays = {k: np.load(folder / f"estimator.{k}.npy") for k in ("coef", "intercept")}
    cases = [
        ("coef", np.full_like(arrays["coef"], np.nan)),
        ("coef", np.vstack([arrays["coef"]] * 2)),
        ("coef", arrays["coef"][:, :-1]),  # one feature fewer than the encoder gives
        ("coef", arrays["coef"].astype(str)),
        ("coef", arrays["coef"][0]),  # 1-d
        ("coef", arrays["coef"][:-1]),  # a head's row missing
        ("intercept", np.full_like(arrays["intercept"], np.inf)),
        ("intercept", np.r_[arrays["intercept"], 1.0]),
        ("intercept", arrays["intercept"].astype(np.int64)),
        ("intercept", arrays["intercept"][:, None]),
    ]
    for key, bad in cases:
        _replace_array(folder, f"estimator.{key}.npy", bad)
        with pytest.raises(ArtifactIntegrityError):
            load_router(folder)
        _replace_array(folder, f"estimator.{key}.npy", arrays[key])
    assert_same_router(router, load_router(folder))


def test_static_vectors_that_do_not_fit_are_refused(make_router, tmp_path):
    make_router("static").save(tmp_path / "r")
    folder = tmp_path / "r"
    vectors = np.load(folder / "encoder.vectors.npy")
    for bad in (vectors[:-1], vectors[:, :-1], np.full_like(vectors, np.inf), vectors[0]):
        _replace_array(folder, "encoder.vectors.npy", bad)
        with pytest.raises(ArtifactIntegrityError,
                           match="cannot rebuild|no valid prediction|features"):
            load_router(folder)


def test_not_a_folder():
    with pytest.raises(ArtifactIntegrityError, match="not a directory"):
        load_router("/nonexistent/router")
    with pytest.raises(ArtifactIntegrityError, match="no manifest.json"):
        load_router(ROOT / "router_ml")


# ------------------------------------------------------------------ interrupted and atomic saves

def _listing(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class Crash(Exception):
    pass


def _half_write_then(action, prefix):
    """A numpy.save that writes half of any file whose name starts with ``prefix``, then calls
    ``action()``: a save interrupted in the middle of a write."""
    real = np.save

    def save(file, arr, *args, **kw):
        name = Path(getattr(file, "name", file)).name
        if not name.startswith(prefix):
            return real(file, arr, *args, **kw)
        import io

        buf = io.BytesIO()
        real(buf, arr, *args, **kw)
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
        if hasattr(file, "write"):
            file.write(data)
            file.flush()
        else:
            Path(file).write_bytes(data)
        action()

    return save


def _crash():
    raise Crash("interrupted")


@pytest.mark.parametrize("where", ["encoder part", "estimator arrays", "skops estimator",
                                   "manifest", "swap"])
def test_a_save_that_fails_midway_leaves_the_old_artifact(saved_tfidf, make_router, monkeypatch,
                                                          where):
    old, folder = saved_tfidf
    before = _listing(folder)
    new = make_router("calibrated" if where == "skops estimator" else "static")
    if where == "encoder part":
        monkeypatch.setattr(np, "save", _half_write_then(_crash, "encoder."))
    elif where == "estimator arrays":
        monkeypatch.setattr(np, "save", _half_write_then(_crash, "estimator."))
    elif where == "skops estimator":
        import skops.io as sio

        def dump(obj, path):
            Path(path).write_bytes(b"PK\x03\x04" + b"\0" * 100)
            _crash()

        monkeypatch.setattr(sio, "dump", dump)
    elif where == "manifest":
        monkeypatch.setattr(artifact, "manifest_digest", lambda m: _crash())
    else:
        monkeypatch.setattr(artifact, "_exchange", lambda a, b: _crash())
    with pytest.raises(Crash):
        new.save(folder)
    monkeypatch.undo()
    assert _listing(folder) == before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".r.")] == []  # cleaned
    assert_same_router(old, load_router(folder))


_KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from router_ml import load_router

    src, dst, ready = sys.argv[1:4]
    router = load_router(src)
    real_save = np.save

    def save(file, arr, *args, **kw):  # write half of the estimator, then hang until killed
        name = os.path.basename(str(getattr(file, "name", file)))
        if not name.startswith("estimator."):
            return real_save(file, arr, *args, **kw)
        real_save(file, arr, *args, **kw)
        data = open(file, "rb").read()
        with open(file, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        open(ready, "w").close()
        time.sleep(120)

    np.save = save
    router.save(dst)
""")


@pytest.mark.slow
def test_a_save_killed_mid_write_leaves_the_old_artifact(saved_tfidf, make_router, tmp_path):
    """A process that is SIGKILLed in the middle of writing a file of the new artifact."""
    old, folder = saved_tfidf
    before = _listing(folder)
    make_router("static").save(tmp_path / "new-src")
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "new-src"),
                             str(folder), str(ready)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the saving process never reached the write"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert _listing(folder) == before
    assert_same_router(old, load_router(folder))
    # what a hard kill leaves behind: one hidden temporary folder beside the artifact, which
    # is never mistaken for a router (it has no manifest yet)
    leftovers = [p for p in folder.parent.iterdir() if p.name.startswith(".r.tmp-")]
    assert len(leftovers) == 1
    with pytest.raises(ArtifactIntegrityError, match="no manifest.json"):
        load_router(leftovers[0])


def test_rename_exchange_is_used_here(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    assert artifact._exchange(a, b), "renameat2(RENAME_EXCHANGE) unsupported here"
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_readers_never_see_a_half_replaced_artifact(make_router, tmp_path):
    """A reader that loads in a loop while another thread saves over the artifact always gets
    one complete router, the old or the new."""
    routers = [make_router("tfidf"), make_router("tfidf", seed=1)]
    routers[1].threshold = 0.3
    folder = tmp_path / "r"
    routers[0].save(folder)
    expected = {(r.threshold, tuple(r.score(PROBES))) for r in routers}
    stop, seen, errors = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                r = load_router(folder)
                seen.append((r.threshold, tuple(r.score(PROBES))))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(12):
            routers[i % 2].save(folder)
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
    assert errors == [] and seen and set(seen) <= expected


def test_saving_never_replaces_what_is_not_a_router(make_router, tmp_path):
    router = make_router("tfidf")
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not a saved router"):
        router.save(precious)
    assert (precious / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a router directory"):
        router.save(tmp_path / "file")
    (tmp_path / "link").symlink_to(precious)
    with pytest.raises(FileExistsError, match="not a router directory"):
        router.save(tmp_path / "link")
    (tmp_path / "empty").mkdir()
    router.save(tmp_path / "empty")  # an empty folder may be filled
    assert_same_router(router, load_router(tmp_path / "empty"))


def test_the_committed_default_router_is_the_code_default():
    """models/default is committed; it must be what `make train` builds with today's code."""
    from router_ml.core.features import encoder_spec
    from router_ml.learn.protocols import STRONG_MODEL, WEAK_MODEL
    from router_ml.learn.training import DEFAULT_ROUTER, build_encoder

    folder = ROOT / "models" / "default"
    router = load_router(folder)
    assert router.manifest["format_version"] == artifact.FORMAT_VERSION
    config = dict(router.training["config"])
    assert config == DEFAULT_ROUTER.to_dict()
    assert router.manifest["encoder"]["kind"] == encoder_spec(build_encoder(DEFAULT_ROUTER.encoder))["kind"]
    assert (router.strong_model, router.weak_model) == (STRONG_MODEL, WEAK_MODEL)
    s = router.score(PROBES)
    assert s.shape == (len(PROBES),) and ((s >= 0) & (s <= 1)).all()
    code = ("import sys; from router_ml import load_router; "
            f"r = load_router({str(folder)!r}); r.route('What is 2+2?'); "
            "print(sorted(m for m in ('torch', 'sklearn', 'mlflow', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ format version 1

V1 = ROOT / "tests" / "fixtures" / "artifact-v1"
# MMLU- and GSM8K-style prompts (the v1 router was trained on those sources) and odd ones
V1_PROMPTS = PROBES + [
    "Which of the following is NOT a prime number?\nA. 2\nB. 3\nC. 9\nD. 11\nAnswer:",
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3)) over Q.\nA. 0\nB. 4\n"
    "C. 2\nD. 6\nAnswer:",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?",
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. How much does she make every day?",
    "Write a short poem about the sea.",
]


def v1_rule(prompts):
    """The version-1 decision computed by hand from the fixture's arrays: the stats encoder's
    features X, a softmax over X @ coef.T + intercept, score 0.5 + (P(1) - P(-1)) / 2."""
    from router_ml.core.encoders import StatsEncoder

    m = json.loads((V1 / "manifest.json").read_text())
    parts = {k: np.load(V1 / f"encoder.{k}.npy") for k in ("mean", "scale")}
    X = StatsEncoder.from_parts(m["encoder"], parts).transform(prompts).astype(np.float64)
    coef, icpt = np.load(V1 / "classifier.coef.npy"), np.load(V1 / "classifier.intercept.npy")
    classes = np.load(V1 / "classifier.classes.npy").tolist()
    assert classes == [-1, 0, 1] and coef.shape == (3, 28)
    z = X @ coef.T + icpt
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    score = 0.5 + 0.5 * (p[:, classes.index(1)] - p[:, classes.index(-1)])
    return score, m["threshold"], m["strong_model"], m["weak_model"]


def _v1_prompts(request):
    """The inline prompts, plus a few real MMLU and GSM8K prompts when the data is here."""
    prompts = list(V1_PROMPTS)
    try:
        from router_ml.learn import sources

        sources.resolve_data_dir()
        for source in ("mmlu", "gsm8k"):
            ds = sources.load_routellm(source)
            prompts += [ds["prompt"][i] for i in range(0, len(ds), max(1, len(ds) // 25))]
    except Exception:  # no data: the inline prompts only
        pass
    return prompts


def test_version_1_fixture_loads_scores_and_decides_like_version_1(request):
    router = load_router(V1)
    assert router.manifest["format_version"] == 1
    prompts = _v1_prompts(request)
    expected, threshold, strong, weak = v1_rule(prompts)
    assert (router.strong_model, router.weak_model) == (strong, weak)
    assert router.models == [strong, weak] and router.threshold == threshold
    s = router.score(prompts)
    np.testing.assert_allclose(s, expected, rtol=0, atol=1e-9)
    assert 0 < (expected >= threshold).sum() < len(prompts)  # both models are chosen
    clear = np.abs(expected - threshold) > 1e-9
    got = np.array([d.model for d in router.route_batch(prompts)])
    want = np.where(expected >= threshold, strong, weak)
    np.testing.assert_array_equal(got[clear], want[clear])
    assert router.calibration.method == "quality" and router.calibration.n == 15532
    # saving it again writes today's format, with the same decisions
    assert (router.heads.kinds, len(router.heads.coefs)) == (["quality", "gain"], 2)


def test_version_1_fixture_resaved_in_todays_format_has_the_same_decisions(tmp_path):
    router = load_router(V1)
    router.save(tmp_path / "v2")
    again = load_router(tmp_path / "v2")
    assert again.manifest["format_version"] == artifact.FORMAT_VERSION
    assert_same_router(router, again)
    assert again.calibration == router.calibration


def test_a_tampered_version_1_fixture_is_refused(tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(V1, folder)
    load_router(folder)
    coef = folder / "classifier.coef.npy"
    original = coef.read_bytes()
    damaged = bytearray(original)
    damaged[-1] ^= 0x01
    coef.write_bytes(bytes(damaged))
    with pytest.raises(ArtifactIntegrityError, match="sha256 differs"):
        load_router(folder)
    coef.write_bytes(original)
    m = json.loads((folder / "manifest.json").read_text())
    m["threshold"] = 0.0  # everything strong, digest left stale
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactIntegrityError, match="differs from its manifest_sha256"):
        load_router(folder)
    del m[artifact.MANIFEST_DIGEST]
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactIntegrityError, match="no manifest_sha256"):
        load_router(folder)
    m["estimator"] = {"type": "heads"}  # a version-2 key in a version-1 manifest
    m[artifact.MANIFEST_DIGEST] = artifact.manifest_digest(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactIntegrityError, match="unknown keys 'estimator'"):
        load_router(folder)


# ------------------------------------------------------------------ N models (version 2)

@pytest.fixture(scope="module")
def tier_router():
    from conftest import TIER_PRICES, TIERS, planted_tiers

    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder

    prompts, Q, _ = planted_tiers(300)
    router = RouterSpec(TfidfEncoder(min_df=1), models=TIERS, prices=TIER_PRICES).fit(prompts, Q)
    router.calibrate_lam(prompts, Q, dearest_share=0.3)
    return router, prompts


def test_an_n_model_router_round_trips(tier_router, tmp_path):
    router, prompts = tier_router
    router.save(tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    np.testing.assert_array_equal(loaded.predict_quality(prompts), router.predict_quality(prompts))
    assert loaded.models == router.models and loaded.prices == router.prices
    assert loaded.lam == router.lam > 0 and loaded.threshold is None
    assert loaded.calibration == router.calibration
    m = loaded.manifest
    assert m["format_version"] == artifact.FORMAT_VERSION and m["knob"] == {"kind": "lam", "value": router.lam}
    assert m["models"] == router.models and m["estimator"]["type"] == "heads"
    assert [h["kind"] for h in m["estimator"]["heads"]] == ["quality", "gain", "gain"]
    assert {"estimator.coef.npy", "estimator.intercept.npy"} <= set(m["files"])
    assert_same_router(router, loaded)


def test_an_n_model_router_with_knn_heads_saves_with_skops(tmp_path):
    from conftest import TIER_PRICES, TIERS, planted_tiers
    from sklearn.neighbors import KNeighborsClassifier

    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder
    from router_ml.learn.estimator import QualityEstimator

    prompts, Q, _ = planted_tiers(150)
    router = RouterSpec(TfidfEncoder(min_df=1), QualityEstimator(classifier=KNeighborsClassifier(7)),
                    models=TIERS, prices=TIER_PRICES, lam=100.0).fit(prompts, Q)
    assert router.heads is None
    router.save(tmp_path / "r")
    assert (tmp_path / "r" / artifact.ESTIMATOR_FILE).is_file()
    # the files name router_ml's classes and loader by the package, not by a module inside it
    # (a module that moves would otherwise need a shim to load them)
    import zipfile

    with zipfile.ZipFile(tmp_path / "r" / artifact.ESTIMATOR_FILE) as z:
        schema = z.read("schema.json").decode()
    saved = schema + (tmp_path / "r" / "MLmodel").read_text()
    assert '"router_ml"' in schema and "QualityEstimator" in schema
    assert "loader_module: \"router_ml\"" in saved
    assert not re.findall(r"router_ml\.(?:core|learn|loop|serve|cli)\b", saved)
    loaded = load_router(tmp_path / "r")
    assert loaded.manifest["estimator"]["type"] == "skops"
    np.testing.assert_array_equal(loaded.predict_quality(prompts), router.predict_quality(prompts))
    assert_same_router(router, loaded)


def test_a_tampered_n_model_router_is_refused(tier_router, tmp_path):
    router, _ = tier_router
    folder = tmp_path / "r"
    router.save(folder)
    m = json.loads((folder / "manifest.json").read_text())
    for edit in (lambda x: x["prices"]["small"].__setitem__("output", 100.0),
                 lambda x: x["models"].reverse(),
                 lambda x: x["knob"].__setitem__("value", 0.0)):
        bad = json.loads(json.dumps(m))
        edit(bad)  # digest left stale
        (folder / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactIntegrityError, match="differs from its manifest_sha256"):
            load_router(folder)
    (folder / "manifest.json").write_text(json.dumps(m))
    coef = folder / "estimator.coef.npy"
    data = bytearray(coef.read_bytes())
    data[-3] ^= 0x20
    coef.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256 differs"):
        load_router(folder)


# ------------------------------------------------------------------ format version 3

V3 = ROOT / "tests" / "fixtures" / "artifact-v3"


def test_version_3_fixture_loads_with_the_scores_version_3_gave(tmp_path):
    """Version 3 knew one pair score, the gain: it loads as a router of score rule ``gain``
    with the same scores, prior and decisions, and saves again as the current version."""
    expected = json.loads((ROOT / "tests" / "fixtures" / "artifact-v3-expected.json").read_text())
    router = load_router(V3)
    assert router.manifest["format_version"] == 3 and "score" not in router.manifest
    assert router.score_rule == "gain" and router.length_prior.weight == expected["prior_weight"]
    assert router.threshold == expected["threshold"]
    np.testing.assert_allclose(router.score(V1_PROMPTS), expected["scores"], rtol=0, atol=1e-12)
    assert [d.model for d in router.route_batch(V1_PROMPTS)] == expected["models"]
    router.save(tmp_path / "again")
    again = load_router(tmp_path / "again")
    assert again.manifest["format_version"] == artifact.FORMAT_VERSION == 5
    assert again.manifest["score"] == "gain"
    np.testing.assert_array_equal(again.score(V1_PROMPTS), router.score(V1_PROMPTS))


def test_the_score_rule_is_saved_and_an_unknown_one_refused(tmp_path):
    from router_ml import Router

    Router(load_router(V3).state.replace(score_rule="weak")).save(tmp_path / "weak")
    again = load_router(tmp_path / "weak")
    assert again.score_rule == "weak"
    V = again.predict_quality(V1_PROMPTS)
    # 1 - q_weak, as its share of the training rows through the prior's quantiles
    np.testing.assert_allclose(again.score(V1_PROMPTS), again.length_prior.apply(
        1 - V[:, 1], [len(p) for p in V1_PROMPTS]), atol=1e-12)
    rewrite_manifest(tmp_path / "weak", lambda m: m.__setitem__("score", "loss"))
    with pytest.raises(ArtifactIntegrityError, match="unknown score rule 'loss'"):
        load_router(tmp_path / "weak")


# ------------------------------------------------------------------ format version 4

V4 = ROOT / "tests" / "fixtures" / "artifact-v4"


def test_version_4_fixture_loads_with_the_scores_it_was_saved_with():
    """A router saved at format version 4 (score rule ``weak``, a length prior, the MLmodel
    whose loader is the package itself): it loads with the same scores and decisions, from
    any later version."""
    expected = json.loads((ROOT / "tests" / "fixtures" / "artifact-v4-expected.json").read_text())
    router = load_router(V4)
    assert router.manifest["format_version"] == 4
    assert router.score_rule == expected["score_rule"] == "weak"
    assert router.threshold == expected["threshold"]
    assert router.length_prior.weight == expected["prior_weight"]
    np.testing.assert_allclose(router.score(V1_PROMPTS), expected["scores"], rtol=0, atol=1e-12)
    assert [d.model for d in router.route_batch(V1_PROMPTS)] == expected["models"]
    assert 'loader_module: "router_ml"' in (V4 / "MLmodel").read_text()


# ------------------------------------------------------------------ format version 5

def test_neighbours_load_with_numpy_alone_and_give_the_same_scores(make_router, tmp_path):
    """Heads with their nearest training rows (version 5) save as two float32 arrays and load
    without scikit-learn, scoring exactly as the router that was saved."""
    router = make_router("neighbours")
    heads = router.state.heads
    assert heads.neighbours is not None and heads.neighbours.k == 15
    router.save(tmp_path / "r")
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["format_version"] == 5 and m["estimator"]["neighbours"] == {"k": 15, "weight": 0.5}
    assert {"estimator.reference.npy", "estimator.labels.npy"} <= set(m["files"])
    code = textwrap.dedent(f"""
        import sys
        from router_ml import load_router
        r = load_router({str(tmp_path / "r")!r})
        print(repr(r.score({PROBES[:3]!r}).tolist()))
        assert not any(k == "sklearn" or k.startswith("sklearn.") for k in sys.modules), "sklearn"
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout.strip()) == router.score(PROBES[:3]).tolist()


def test_neighbours_that_do_not_fit_are_refused(make_router, tmp_path):
    folder = tmp_path / "r"
    make_router("neighbours").save(folder)
    m = json.loads((folder / "manifest.json").read_text())
    k_bad = lambda x: x["estimator"]["neighbours"].__setitem__("k", 0)  # noqa: E731
    extra_key = lambda x: x["estimator"]["neighbours"].__setitem__("code", "x")  # noqa: E731
    for edit, match in ((k_bad, "k must be a whole number"), (extra_key, "malformed"),
                        (lambda x: x["estimator"].pop("neighbours"), "without neighbours")):
        (folder / "manifest.json").write_text(json.dumps(m))
        rewrite_manifest(folder, edit)
        with pytest.raises(ArtifactIntegrityError, match=match):
            load_router(folder)
    (folder / "manifest.json").write_text(json.dumps(m))
    labels = np.load(folder / "estimator.labels.npy")
    for bad, match in ((labels[:-1], "reference must be"), (labels * 3, "in \\[-1, 1\\]"),
                       (labels.astype(np.float64), "float32")):
        np.save(folder / "estimator.labels.npy", bad, allow_pickle=False)
        reseal_file(folder, "estimator.labels.npy")
        with pytest.raises(ArtifactIntegrityError, match=match):
            load_router(folder)


def test_a_version_4_manifest_with_neighbour_files_is_refused(make_router, tmp_path):
    """Version 4 knew no neighbours: its reader refuses their files rather than ignore them."""
    folder = tmp_path / "r"
    make_router("neighbours").save(folder)
    rewrite_manifest(folder, lambda m: m.__setitem__("format_version", 4))
    with pytest.raises(ArtifactIntegrityError, match="does not read: estimator.labels.npy"):
        load_router(folder)


# ------------------------------------------------------------------ format version 2

V2 = ROOT / "tests" / "fixtures" / "artifact-v2"


def test_version_2_fixture_loads_with_the_scores_version_2_gave_and_no_prior(tmp_path):
    expected = json.loads((ROOT / "tests" / "fixtures" / "artifact-v2-expected.json").read_text())
    router = load_router(V2)
    assert router.manifest["format_version"] == 2 and router.length_prior is None
    assert router.threshold == expected["threshold"]
    np.testing.assert_allclose(router.score(V1_PROMPTS), expected["scores"], rtol=0, atol=1e-12)
    assert [d.model for d in router.route_batch(V1_PROMPTS)] == expected["models"]
    router.save(tmp_path / "again")
    again = load_router(tmp_path / "again")
    assert again.manifest["format_version"] == artifact.FORMAT_VERSION
    assert again.manifest["prior"] is None
    np.testing.assert_array_equal(again.score(V1_PROMPTS), router.score(V1_PROMPTS))


def test_a_version_2_manifest_with_a_prior_is_refused(tmp_path):
    folder = tmp_path / "v2"
    shutil.copytree(V2, folder)
    rewrite_manifest(folder, lambda m: m.__setitem__(
        "prior", {"kind": "length", "weight": 0.5, "score_quantiles": [0, 1],
                  "length_quantiles": [0, 1]}))
    with pytest.raises(ArtifactIntegrityError, match="prior"):
        load_router(folder)


def test_the_artifact_docstring_names_the_current_format_version():
    from router_ml.core import artifact

    assert f"format version {artifact.FORMAT_VERSION}" in artifact.__doc__


def test_no_page_or_notebook_cites_a_file_the_repo_does_not_have():
    root = Path(__file__).resolve().parents[2]
    pages = [*root.glob("notebooks/*.ipynb"), *root.glob("docs/*.md"), root / "README.md"]
    for page in pages:
        assert "DESIGN.md" not in page.read_text(encoding="utf-8"), page
