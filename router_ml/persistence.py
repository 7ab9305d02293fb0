"""Saving and loading a router as a directory, without executing code from the files.

Layout::

    manifest.json          format version, versions, encoder spec, classifier type, models,
                           threshold and its calibration, training and evaluation summaries,
                           and the sha256 of every other file
    encoder.<part>.npy     arrays (numpy, allow_pickle=False)
    encoder.<part>.json    lists of strings (e.g. the TF-IDF vocabulary)
    encoder.<part>.txt     text (e.g. a tokenizer definition)
    classifier.<part>.npy  a logistic regression's coefficients, intercept and classes
                           (its hyper-parameters are in the manifest), or
    classifier.skops       any other fitted scikit-learn classifier (skops)
    MLmodel                the mlflow pyfunc description (see router_ml.mlmodel); listed and
                           checked like the others, read only by mlflow

A logistic regression is stored as plain arrays: loading it needs no skops, whose import
alone takes seconds (it imports every scikit-learn estimator), and the files are
byte-identical for identical fits.

Loading checks, before building anything: the format version is known; the manifest has only
known keys and its own ``manifest_sha256`` (sha256 of its canonical JSON without that key)
matches, so a changed threshold or model name is caught like a changed file (manifests written
before that key existed load without it); every file named in the manifest is a plain file
name, a file router_ml reads, a regular file inside the directory (no symlink) and has the
recorded sha256; every type in ``classifier.skops`` is on :data:`ALLOWED_TYPES`, an
allow-list kept here in the loader's code and never read from the artifact (checked by our own
walk of its schema and by skops' ``get_untrusted_types``). After building, a router with a
static or TF-IDF encoder must score a probe prompt to a finite value in [0, 1].

Saving is atomic: the new directory is written beside the target and swapped in with one
rename (``renameat2(RENAME_EXCHANGE)`` on Linux), so a crash leaves the old artifact or the new
one, never a mix (a killed save may leave a hidden ``.<name>.tmp-*`` folder beside it; delete it
at leisure). Saving over an existing folder that is not a router artifact is refused.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from router_ml.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    UntrustedTypeError,
)
from router_ml.router import LOGREG_TYPE, LogisticHead, Router

# FORMAT_VERSION: bump it when a file is added, removed or changes meaning. Procedure: branch
# on the version in load_router, keep reading every older number (with a saved artifact of
# each as a test fixture), and list the new number in SUPPORTED_VERSIONS.
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"
CLASSIFIER_FILE = "classifier.skops"
MLMODEL = "MLmodel"  # written by router_ml.mlmodel; no format bump: older loaders never see it
MANIFEST_DIGEST = "manifest_sha256"
# The top-level keys of a version-1 manifest; any other key means a newer format or damage.
MANIFEST_KEYS = frozenset({"format_version", "versions", "encoder", "classifier", "strong_model",
                           "weak_model", "threshold", "calibration", "training", "evaluation",
                           "files", MANIFEST_DIGEST})
_MAX_MANIFEST_BYTES = 1 << 20
_MAX_SCHEMA_BYTES = 16 << 20
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")

# Every type a saved classifier may contain. Kept in code, audited before any object is built.
ALLOWED_TYPES = frozenset({
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    # MLPClassifier keeps its optimiser's state (learning rate, moment arrays): plain data
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.preprocessing._label.LabelBinarizer",
    # HistGradientBoostingClassifier: its trees are arrays; the loss and link objects hold
    # no code, only which formula to apply
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.Interval", "numpy.random._generator.Generator", "numpy.uint64",
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int",
    "builtins.float", "builtins.bool", "builtins.NoneType", "builtins.slice",
    "numpy.ndarray", "numpy.dtype", "numpy.float64", "numpy.float32", "numpy.int64",
    "numpy.int32", "numpy.bool_", "numpy.str_", "numpy.random.mtrand.RandomState",
    "numpy.random._mt19937.MT19937",
    # kNN on TF-IDF keeps its sparse training matrix (skops stores it in scipy's npz format)
    "scipy.sparse._csr.csr_matrix",
})


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its own ``manifest_sha256`` key.

    Canonical (sorted keys, no white space, ASCII) so that only a change of content counts.
    """
    body = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _versions() -> dict:
    out = {}
    for pkg in ("router_ml", "numpy", "scikit-learn", "skops", "model2vec", "tokenizers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------- saving


def _write_parts(parts: dict, folder: Path) -> None:
    for key, value in parts.items():
        if not _NAME.match(f"encoder.{key}.npy"):
            raise ValueError(f"encoder part name {key!r} is not a plain file name")
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise ValueError(f"encoder part {key!r} is an object array; not saveable safely")
            with open(folder / f"encoder.{key}.npy", "wb") as f:
                np.save(f, value, allow_pickle=False)
        elif isinstance(value, str):
            (folder / f"encoder.{key}.txt").write_text(value, encoding="utf-8")
        elif isinstance(value, list):
            (folder / f"encoder.{key}.json").write_text(json.dumps(value, ensure_ascii=False),
                                                        encoding="utf-8")
        else:
            raise TypeError(f"encoder part {key!r} has unsupported type {type(value).__name__}")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


_LOGREG_ARRAYS = ("coef", "intercept", "classes")


def _load_array(data: bytes, p: Path) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:  # numpy refuses object (pickled) arrays here
        raise UntrustedTypeError(f"{p}: refused ({e})") from None


def _load_logreg(params: dict, contents: dict, folder: Path):
    """A LogisticHead from its arrays: scoring needs numpy only (see router.LogisticHead)."""
    arrays = {}
    for key in _LOGREG_ARRAYS:
        name = f"classifier.{key}.npy"
        if name not in contents:
            raise ArtifactIntegrityError(f"{name} missing from the manifest")
        arrays[key] = _load_array(contents[name], folder / name)
    coef, intercept, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
    k = 1 if classes.shape == (2,) else len(classes)
    if coef.ndim != 2 or coef.shape[0] != k or intercept.shape != (k,) or classes.ndim != 1 \
            or not set(classes.tolist()) <= {-1, 0, 1} or len(classes) < 2 \
            or coef.dtype.kind != "f" or intercept.dtype.kind != "f" or classes.dtype.kind not in "iu" \
            or not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ArtifactIntegrityError("logistic regression arrays have unexpected shapes or values")
    if not isinstance(params, dict):
        raise ArtifactIntegrityError("classifier params must be a JSON object")
    return LogisticHead(coef, intercept, classes, params)


def save_router(router, path) -> Path:
    """Write ``router`` to the directory ``path`` atomically; returns the path."""
    if not router.fitted_:
        raise RuntimeError("cannot save a router that is not fitted")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write_parts(router.encoder.parts(), tmp)
        head = router._head
        if head is not None:
            for key in _LOGREG_ARRAYS:
                np.save(tmp / f"classifier.{key}.npy", np.asarray(getattr(head, f"{key}_")),
                        allow_pickle=False)
        else:
            import skops.io as sio

            sio.dump(router.classifier, tmp / CLASSIFIER_FILE)
            # refuse to write what we would refuse to read
            _audit_skops((tmp / CLASSIFIER_FILE).read_bytes(), tmp / CLASSIFIER_FILE)
        from router_ml.mlmodel import write_mlmodel

        write_mlmodel(tmp, {p.name: _sha256(p) for p in sorted(tmp.iterdir())})
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        cls = type(router.classifier)
        ctype = LOGREG_TYPE if head is not None else f"{cls.__module__}.{cls.__qualname__}"
        params = head.params if head is not None else router.classifier.get_params(deep=False)
        manifest = {
            "format_version": FORMAT_VERSION,
            "versions": _versions(),
            "encoder": router.encoder.spec(),
            "classifier": {"type": ctype,
                           "params": {k: v for k, v in params.items()
                                      if isinstance(v, (int, float, str, bool, type(None)))}},
            "strong_model": router.strong_model,
            "weak_model": router.weak_model,
            "threshold": router.threshold,
            "calibration": router.calibration.to_dict(),
            "training": router.training,
            "evaluation": router.evaluation,
            "files": files,
        }
        manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True,
                                               allow_nan=False) + "\n", encoding="utf-8")
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        if path.exists() or path.is_symlink():
            if not path.is_dir() or path.is_symlink():
                raise FileExistsError(f"{path} exists and is not a router directory")
            if any(path.iterdir()) and not (path / MANIFEST).is_file():
                # the swap below would delete it: only ever replace a router artifact
                raise FileExistsError(f"{path} is a non-empty folder without {MANIFEST}, not a "
                                      "saved router; refusing to replace it. Choose a new path.")
            if not _exchange(tmp, path):
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.rename(path, old)
                os.rename(tmp, path)
                tmp = old
        else:
            os.rename(tmp, path)
            tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# ---------------------------------------------------------------------------- loading


def _audit_skops(data: bytes, path: Path) -> list[str]:
    """Every type named in a skops file's bytes, checked against ALLOWED_TYPES before loading."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if z.getinfo("schema.json").file_size > _MAX_SCHEMA_BYTES:
                raise ArtifactIntegrityError(f"{path}: schema.json is too large for a classifier")
            schema = json.loads(z.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError, OSError,
            EOFError, NotImplementedError) as e:
        raise ArtifactIntegrityError(f"{path}: not a readable skops file "
                                     f"({type(e).__name__}: {e})") from None
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    try:
        walk(schema)
    except RecursionError:
        raise ArtifactIntegrityError(f"{path}: schema.json is nested too deeply") from None
    bad = sorted(found - ALLOWED_TYPES)
    if bad:
        raise UntrustedTypeError(f"{path}: types not on router_ml's allow-list: {', '.join(bad)}")
    # Second opinion: skops' own audit also sees types that are not class nodes (functions,
    # methods); it reads the schema without building any object.
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as e:  # a malformed schema
        raise ArtifactIntegrityError(f"{path}: not a readable skops file "
                                     f"({type(e).__name__}: {e})") from None
    bad = sorted(untrusted - ALLOWED_TYPES)
    if bad:
        raise UntrustedTypeError(f"{path}: types not on router_ml's allow-list: {', '.join(bad)}")
    return sorted(found | untrusted)


def _read_manifest(folder: Path) -> dict:
    mpath = folder / MANIFEST
    if mpath.is_symlink() or not mpath.is_file():
        raise ArtifactIntegrityError(f"{folder}: no {MANIFEST}; not a router directory")
    if mpath.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ArtifactIntegrityError(f"{mpath}: too large for a manifest")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactIntegrityError(f"{mpath}: not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(manifest, dict):
        raise ArtifactIntegrityError(f"{mpath}: not a JSON object")
    version = manifest.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise ArtifactVersionError(
            f"{mpath}: format version {version!r} is not supported by this router_ml "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); retrain or upgrade router_ml")
    unknown = sorted(set(manifest) - MANIFEST_KEYS)
    if unknown:
        raise ArtifactIntegrityError(f"{mpath}: unknown keys {', '.join(map(repr, unknown))} "
                                     f"in a version-{version} manifest; the manifest was changed")
    # Artifacts written before the digest existed have none; with the key check above, any one
    # changed byte of a manifest that has one is caught.
    if MANIFEST_DIGEST in manifest:
        try:
            ok = manifest_digest(manifest) == manifest[MANIFEST_DIGEST]
        except (TypeError, ValueError):  # NaN or non-JSON content
            ok = False
        if not ok:
            raise ArtifactIntegrityError(f"{mpath}: content differs from its {MANIFEST_DIGEST}; "
                                         "the manifest was changed or corrupted")
    return manifest


def _check_files(folder: Path, files) -> dict[str, bytes]:
    """The content of every file the manifest lists, read once and checked against its sha256
    (what is loaded is exactly what was checked)."""
    if not isinstance(files, dict) or not files:
        raise ArtifactIntegrityError(f"{folder / MANIFEST}: 'files' must list the artifact's files")
    root = folder.resolve()
    out = {}
    for name, digest in files.items():
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name or name == MANIFEST:
            raise ArtifactIntegrityError(f"{folder}: file name {name!r} is not a plain file name")
        p = folder / name
        if p.is_symlink():
            raise ArtifactIntegrityError(f"{p}: is a symlink; refused")
        if not p.is_file() or p.resolve().parent != root:
            raise ArtifactIntegrityError(f"{p}: missing or not a regular file in {folder}")
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactIntegrityError(f"{p}: sha256 differs from the manifest; the file was "
                                         "changed or truncated")
        out[name] = data
    if CLASSIFIER_FILE not in out and "classifier.coef.npy" not in out:
        raise ArtifactIntegrityError(f"{folder}: the manifest lists no classifier file")
    if MLMODEL in out:
        from router_ml.mlmodel import check_mlmodel

        check_mlmodel(out[MLMODEL], folder / MLMODEL)
    known = {CLASSIFIER_FILE, MLMODEL, *(f"classifier.{k}.npy" for k in _LOGREG_ARRAYS)}
    odd = sorted(n for n in out if not n.startswith("encoder.") and n not in known)
    if odd:
        raise ArtifactIntegrityError(f"{folder}: the manifest lists files that router_ml does "
                                     f"not read: {', '.join(odd)}")
    return out


def _read_parts(contents: dict[str, bytes], folder: Path) -> dict:
    parts = {}
    for name, data in contents.items():
        if not name.startswith("encoder."):
            continue  # classifier files are read by their own loader
        key, ext = name[len("encoder."):].rsplit(".", 1)
        p = folder / name
        try:
            if ext == "npy":
                parts[key] = _load_array(data, p)
            elif ext == "json":
                parts[key] = json.loads(data.decode("utf-8"))
            elif ext == "txt":
                parts[key] = data.decode("utf-8")
            else:
                raise ArtifactIntegrityError(f"{p}: unknown part type {ext!r}")
        except ValueError as e:  # malformed JSON or text that is not UTF-8
            raise UntrustedTypeError(f"{p}: refused ({e})") from None
        except RecursionError:
            raise ArtifactIntegrityError(f"{p}: JSON nested too deeply") from None
    return parts


def _uses_lazy_model(spec) -> bool:
    """Whether an encoder spec needs a model loaded at first use (sentence-transformers)."""
    if not isinstance(spec, dict):
        return False
    return spec.get("kind") == "sentence-transformers" or any(
        _uses_lazy_model(s) for s in spec.get("encoders") or [] if isinstance(s, dict))


def _check_router(router, folder: Path, spec) -> None:
    """Refuse a router whose parts do not fit together (caught now rather than per request)."""
    clf = router.classifier
    classes = getattr(clf, "classes_", None)
    if not callable(getattr(clf, "predict_proba", None)) or classes is None \
            or [int(c) for c in np.asarray(classes).ravel()] not in ([0, 1], [-1, 0, 1], [-1, 1]):
        raise ArtifactIntegrityError(f"{folder}: the classifier is not a fitted classifier of "
                                     "0/1 or -1/0/1 targets with predict_proba")
    if _uses_lazy_model(spec):
        return  # probing would load the transformer; its spec has no fitted parts to check
    # raw probabilities: score() would turn a non-finite value into the safe "strong" answer
    proba = np.asarray(clf.predict_proba(router.encoder.encode(["router_ml probe"])),
                       dtype=np.float64)
    if proba.shape != (1, len(classes)) or not (np.isfinite(proba).all() and (proba >= 0).all()
                                     and (proba <= 1).all()):
        raise ArtifactIntegrityError(f"{folder}: the loaded router gives no valid score")


def load_router(path):
    """Load a router saved with ``Router.save``; refuses anything it cannot verify.

    Raises ArtifactVersionError (unknown format), ArtifactIntegrityError (missing, changed,
    truncated, symlinked or misnamed files) or UntrustedTypeError (a type not allowed).
    """
    from router_ml.calibration import CalibrationRecord
    from router_ml.encoders import encoder_from_parts

    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactIntegrityError(f"{folder}: not a directory")
    manifest = _read_manifest(folder)
    contents = _check_files(folder, manifest.get("files"))
    try:
        if CLASSIFIER_FILE in contents:
            import skops.io as sio

            data = contents[CLASSIFIER_FILE]
            classifier = sio.loads(data, trusted=_audit_skops(data, folder / CLASSIFIER_FILE))
        elif manifest.get("classifier", {}).get("type") == LOGREG_TYPE:
            classifier = _load_logreg(manifest["classifier"].get("params", {}), contents, folder)
        else:
            raise ArtifactIntegrityError(f"{folder}: unknown classifier type "
                                         f"{manifest.get('classifier', {}).get('type')!r}")
        encoder = encoder_from_parts(manifest["encoder"], _read_parts(contents, folder))
        router = Router(encoder, classifier, strong_model=manifest["strong_model"],
                        weak_model=manifest["weak_model"], threshold=manifest["threshold"])
        cal = manifest.get("calibration") or {}
        router.calibration = CalibrationRecord(**cal) if cal else router.calibration
        router.training = manifest.get("training") or {}
        router.evaluation = manifest.get("evaluation") or {}
        router.manifest = manifest
        router.fitted_ = True
        _check_router(router, folder, manifest["encoder"])
    except ArtifactError:
        raise
    except Exception as e:  # whatever the libraries raise on parts that do not fit together
        # skops is imported only for skops files, so its refusal is recognised by name
        if type(e).__name__ == "UntrustedTypesFoundException":
            raise UntrustedTypeError(f"{folder}: {e}") from None
        raise ArtifactIntegrityError(
            f"{folder}: cannot rebuild the router ({type(e).__name__}: {e})") from e
    return router
