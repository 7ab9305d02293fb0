"""Saving and loading a router as a directory, without executing code from the files:
:func:`save_router` writes a :class:`~router_ml.core.state.RouterState`, :func:`load_router`
verifies a folder and hands it to the reader of its format version (:data:`READERS`), which
returns the state a :class:`~router_ml.core.router.Router` is built from.

Layout (format version 5, :data:`FORMAT_VERSION`)::

    manifest.json          format version, versions, encoder spec, estimator type and heads,
                           candidate models and their prices, the knob (threshold or lam) and
                           its calibration, the length prior of a pair (or null), how a pair's score
                           comes from the predicted qualities, training and
                           evaluation summaries, the sha256 of every other file, and its own
                           sha256
    encoder.<part>.npy     arrays (numpy, allow_pickle=False)
    encoder.<part>.json    lists of strings (e.g. the TF-IDF vocabulary)
    encoder.<part>.txt     text (e.g. a tokenizer definition)
    estimator.coef.npy     the logistic heads' weights stacked (rows, n_features) and
    estimator.intercept.npy  their intercepts (rows,); the manifest gives each head's kind,
                           classes and number of rows, and with neighbours
    estimator.reference.npy  the training rows' unit features (N, n_features) and
    estimator.labels.npy   their labels per head (N, heads), or
    estimator.skops        an estimator with other heads (skops)
    MLmodel                the mlflow pyfunc description (see router_ml.core._mlmodel); listed and
                           checked like the others, read only by mlflow

Logistic heads are stored as plain arrays: loading them needs no skops, whose import alone
takes seconds (it imports every scikit-learn estimator), and the files are byte-identical for
identical fits. Version-1 artifacts (a strong/weak pair, ``classifier.*`` files, the
threshold at the top level) still load: their reader turns them into the same router.
Version 2 is version 3 without the prior (tests/fixtures/artifact-v2); version 3 is version 4
with a pair's score always the gain (tests/fixtures/artifact-v3); version 4 is version 5
without neighbours (tests/fixtures/artifact-v4).

Loading checks, before building anything: the format version is known; the manifest has only
known keys and its own ``manifest_sha256`` (sha256 of its canonical JSON without that key)
matches, so a changed threshold or model name is caught like a changed file (required: a
manifest with the key removed is refused); every file named in the manifest is a plain file
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

from router_ml.core.state import SCORE_RULES, RouterState
from router_ml.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    UntrustedTypeError,
)

# FORMAT_VERSION: bump it when a file is added, removed or changes meaning. Procedure: keep
# the reader of every older number (READERS: one function per version, never changed once
# shipped), add a reader for the new number, add a saved artifact of the new version as a test fixture next to
# tests/fixtures/artifact-v1, list the new number in SUPPORTED_VERSIONS and its manifest keys
# in MANIFEST_KEYS, and never make an old loader less strict than the new one.
# Version 5 adds the heads' neighbours (router_ml.core.heads.Neighbours): the files
# estimator.reference.npy and estimator.labels.npy and the estimator's "neighbours" ({"k",
# "weight"}); a version-4 artifact has none (tests/fixtures/artifact-v4).
# Version 4 adds the manifest's "score": how a pair's score comes from the predicted qualities
# ("gain" or "weak", router_ml.core.router.pair_score; a version-3 artifact is "gain",
# tests/fixtures/artifact-v3).
# Version 3 adds the manifest's "prior" (router_ml.core.prior.LengthPrior, or null); a version-2
# artifact has none (tests/fixtures/artifact-v2).
FORMAT_VERSION = 5


SUPPORTED_VERSIONS = (1, 2, 3, 4, 5)


MANIFEST = "manifest.json"


ESTIMATOR_FILE = "estimator.skops"


V1_CLASSIFIER_FILE = "classifier.skops"


MLMODEL = "MLmodel"  # written by router_ml.core._mlmodel, read only by mlflow


MANIFEST_DIGEST = "manifest_sha256"


# The top-level keys of each version's manifest; any other key means a newer format or damage.
MANIFEST_KEYS = {
    1: frozenset({"format_version", "versions", "encoder", "classifier", "strong_model",
                  "weak_model", "threshold", "calibration", "training", "evaluation",
                  "files", MANIFEST_DIGEST}),
    2: frozenset({"format_version", "versions", "encoder", "estimator", "models", "prices",
                  "knob", "coverage", "calibration", "training", "evaluation", "files",
                  MANIFEST_DIGEST}),
}


MANIFEST_KEYS[3] = MANIFEST_KEYS[2] | {"prior"}
MANIFEST_KEYS[4] = MANIFEST_KEYS[3] | {"score"}
MANIFEST_KEYS[5] = MANIFEST_KEYS[4]


_MAX_MANIFEST_BYTES = 1 << 20


_MAX_SCHEMA_BYTES = 16 << 20


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


# Every type a saved classifier may contain. Kept in code, audited before any object is built.
ALLOWED_TYPES = frozenset({
    # our own estimator and its constant head: plain attributes, no code from the file; saved
    # under the package's name (router_ml.QualityEstimator), earlier under their modules'
    "router_ml.QualityEstimator", "router_ml.ConstantHead",
    "router_ml.learn.estimator.QualityEstimator", "router_ml.learn.estimator._Constant",
    # the same classes as saved before the package was laid out in layers
    "router_ml.estimator.QualityEstimator", "router_ml.estimator._Constant",
    "sklearn.linear_model._logistic.LogisticRegressionCV",
    "sklearn.model_selection._split.StratifiedKFold",
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


def _load_array(data: bytes, p: Path) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:  # numpy refuses object (pickled) arrays here
        raise UntrustedTypeError(f"{p}: refused ({e})") from None


def _json_params(params: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()
            if isinstance(v, (int, float, str, bool, type(None), tuple))
            and not (isinstance(v, tuple) and not all(isinstance(x, (int, float)) for x in v))}


def check_save_target(path) -> None:
    """FileExistsError unless :func:`save_router` may write ``path``: it does not exist, or is
    an empty folder or a saved router (which the save replaces). Anything else would be
    deleted by the swap, so it is refused; call this before work that ends in a save."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_dir() or path.is_symlink():
        raise FileExistsError(f"{path} exists and is not a router directory; refusing to "
                              "replace it. Choose a new path.")
    if any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise FileExistsError(f"{path} is a non-empty folder without {MANIFEST}, not a "
                              "saved router; refusing to replace it. Choose a new path.")


def save_router(state, path) -> Path:
    """Write a router's :class:`~router_ml.core.state.RouterState` to the directory ``path``
    atomically; returns the path."""
    from router_ml.core.features import encoder_parts, encoder_spec

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write_parts(encoder_parts(state.encoder), tmp)
        heads = state.heads
        est = state.estimator
        params = {} if est is heads else _json_params(est.get_params(deep=False))
        if heads is not None:
            np.save(tmp / "estimator.coef.npy", np.vstack(heads.coefs), allow_pickle=False)
            np.save(tmp / "estimator.intercept.npy", np.concatenate(heads.intercepts),
                    allow_pickle=False)
            estimator = {"type": "heads", "params": params,
                         "heads": [{"kind": k, "classes": c.tolist(), "rows": len(w)}
                                   for k, c, w in zip(heads.kinds, heads.classes, heads.coefs)]}
            if heads.neighbours is not None:
                np.save(tmp / "estimator.reference.npy", heads.neighbours.reference,
                        allow_pickle=False)
                np.save(tmp / "estimator.labels.npy", heads.neighbours.labels, allow_pickle=False)
                estimator["neighbours"] = heads.neighbours.to_dict()
        else:
            import skops.io as sio

            sio.dump(est, tmp / ESTIMATOR_FILE)
            # refuse to write what we would refuse to read
            _audit_skops((tmp / ESTIMATOR_FILE).read_bytes(), tmp / ESTIMATOR_FILE)
            estimator = {"type": "skops", "params": params}
        coverage = None
        if state.coverage is not None:
            np.save(tmp / "coverage.reference.npy", state.coverage.reference, allow_pickle=False)
            coverage = {**state.coverage.to_dict(), "fallback": state.fallback}
        from router_ml.core._mlmodel import write_mlmodel

        write_mlmodel(tmp, {p.name: _sha256(p) for p in sorted(tmp.iterdir())})
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        knob = ({"kind": "threshold", "value": state.threshold} if state.threshold is not None
                else {"kind": "lam", "value": state.lam})
        manifest = {
            "format_version": FORMAT_VERSION,
            "versions": _versions(),
            "encoder": encoder_spec(state.encoder),
            "estimator": estimator,
            "models": list(state.models),
            "prices": state.prices,
            "knob": knob,
            "coverage": coverage,
            "prior": None if state.prior is None else state.prior.to_dict(),
            "score": state.score_rule,
            "calibration": state.calibration.to_dict(),
            "training": state.training,
            "evaluation": state.evaluation,
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
            check_save_target(path)
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
    unknown = sorted(set(manifest) - MANIFEST_KEYS[version])
    if unknown:
        raise ArtifactIntegrityError(f"{mpath}: unknown keys {', '.join(map(repr, unknown))} "
                                     f"in a version-{version} manifest; the manifest was changed")
    # Required in every version, so that removing it to hide a change is caught too (the
    # earliest version-1 artifacts had none: save them again with this router_ml to load them).
    if MANIFEST_DIGEST not in manifest:
        raise ArtifactIntegrityError(f"{mpath}: no {MANIFEST_DIGEST}; the manifest was changed "
                                     "or predates digests; re-save the router to load it")
    if MANIFEST_DIGEST in manifest:
        try:
            ok = manifest_digest(manifest) == manifest[MANIFEST_DIGEST]
        except (TypeError, ValueError):  # NaN or non-JSON content
            ok = False
        if not ok:
            raise ArtifactIntegrityError(f"{mpath}: content differs from its {MANIFEST_DIGEST}; "
                                         "the manifest was changed or corrupted")
    return manifest


_READ = {1: {V1_CLASSIFIER_FILE, "classifier.coef.npy", "classifier.intercept.npy",
             "classifier.classes.npy"},
         2: {ESTIMATOR_FILE, "estimator.coef.npy", "estimator.intercept.npy",
             "coverage.reference.npy"}}


_READ[3] = _READ[2]  # version 3 adds a manifest key, no file
_READ[4] = _READ[3]  # version 4 adds a manifest key, no file
_READ[5] = _READ[4] | {"estimator.reference.npy", "estimator.labels.npy"}


def _check_files(folder: Path, files, version: int) -> dict[str, bytes]:
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
    known = _READ[version] | {MLMODEL}
    if not any(n in out for n in known - {"coverage.reference.npy", MLMODEL}):
        raise ArtifactIntegrityError(f"{folder}: the manifest lists no estimator file")
    if MLMODEL in out:
        from router_ml.core._mlmodel import check_mlmodel

        check_mlmodel(out[MLMODEL], folder / MLMODEL)
    odd = sorted(n for n in out if not n.startswith("encoder.") and n not in known)
    if odd:
        raise ArtifactIntegrityError(f"{folder}: the manifest lists files that router_ml does "
                                     f"not read: {', '.join(odd)}")
    return out


def _neighbours(spec: dict, contents: dict, folder: Path):
    """The heads' Neighbours (version 5), or None when the estimator has none."""
    from router_ml.core.heads import Neighbours

    names = ("estimator.reference.npy", "estimator.labels.npy")
    nb = spec.get("neighbours")
    if nb is None:
        if any(n in contents for n in names):
            raise ArtifactIntegrityError(f"{folder}: neighbour files listed for heads without "
                                         "neighbours")
        return None
    if not isinstance(nb, dict) or set(nb) != {"k", "weight"} \
            or not all(n in contents for n in names):
        raise ArtifactIntegrityError(f"{folder}: the heads' neighbours are malformed or their "
                                     "files are not listed")
    reference, labels = (_load_array(contents[n], folder / n) for n in names)
    if reference.dtype != np.float32 or labels.dtype != np.float32:
        raise ArtifactIntegrityError(f"{folder}: the neighbours' arrays must be float32")
    try:
        return Neighbours(reference, labels, nb["k"], nb["weight"])
    except ValueError as e:
        raise ArtifactIntegrityError(f"{folder}: {e}") from None


def _heads(spec: dict, contents: dict, folder: Path):
    """QualityHeads from the stacked arrays and the manifest's per-head layout."""
    from router_ml.core.heads import QualityHeads

    arrays = {}
    for key in ("coef", "intercept"):
        name = f"estimator.{key}.npy"
        if name not in contents:
            raise ArtifactIntegrityError(f"{folder}: {name} missing from the manifest")
        arrays[key] = _load_array(contents[name], folder / name)
    coef, icpt = arrays["coef"], arrays["intercept"]
    layout = spec.get("heads")
    if not isinstance(layout, list) or not layout or coef.ndim != 2 or icpt.ndim != 1 \
            or coef.dtype.kind != "f" or icpt.dtype.kind != "f" \
            or not (np.isfinite(coef).all() and np.isfinite(icpt).all()):
        raise ArtifactIntegrityError(f"{folder}: estimator arrays have unexpected shapes or values")
    kinds, coefs, icpts, classes, at = [], [], [], [], 0
    for h in layout:
        ok = isinstance(h, dict) and h.get("kind") in ("quality", "gain") \
            and isinstance(h.get("rows"), int) and isinstance(h.get("classes"), list) \
            and all(isinstance(c, int) and not isinstance(c, bool) for c in h["classes"])
        cl = h["classes"] if ok else []
        valid = {"quality": {0, 1}, "gain": {-1, 0, 1}}.get(h.get("kind") if ok else None, set())
        rows = h["rows"] if ok else -1
        expect = 1 if len(cl) <= 2 else len(cl)
        if not ok or not cl or not set(cl) <= valid or rows != expect or at + rows > len(coef):
            raise ArtifactIntegrityError(f"{folder}: estimator head {len(kinds)} is malformed")
        kinds.append(h["kind"])
        coefs.append(coef[at:at + rows])
        icpts.append(icpt[at:at + rows])
        classes.append(cl)
        at += rows
    if at != len(coef) or len(icpt) != len(coef):
        raise ArtifactIntegrityError(f"{folder}: estimator arrays do not match the heads")
    try:
        return QualityHeads(kinds, coefs, icpts, classes)
    except ValueError as e:
        raise ArtifactIntegrityError(f"{folder}: {e}") from None


def _skops(contents: dict, name: str, folder: Path):
    try:
        import skops.io as sio
    except ImportError:
        raise ImportError(f"{folder}: this router's heads are stored with skops (not logistic "
                          "heads); loading it needs pip install 'router_ml[train]'") from None

    data = contents[name]
    return sio.loads(data, trusted=_audit_skops(data, folder / name))


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


def _check_state(router: RouterState, folder: Path, spec) -> None:
    """Refuse a router whose parts do not fit together (caught now rather than per request)."""
    heads = router.heads
    if heads is None and not callable(getattr(router.estimator, "decision_function", None)):
        raise ArtifactIntegrityError(f"{folder}: the estimator is not a fitted QualityEstimator")
    if heads is not None and len(heads.kinds) != len(router.models):
        raise ArtifactIntegrityError(f"{folder}: {len(heads.kinds)} estimator heads for "
                                     f"{len(router.models)} models")
    if _uses_lazy_model(spec):
        return  # probing would load the transformer; its spec has no fitted parts to check
    X = router.encoder.transform(["router_ml probe"])
    if heads is not None and X.shape[1] != heads.n_features:
        raise ArtifactIntegrityError(f"{folder}: the encoder gives {X.shape[1]} features, the "
                                     f"estimator expects {heads.n_features}")
    # raw values: decision_function would turn a non-finite value into the safe answer
    V = heads.decision_function(X) if heads is not None else router.estimator.decision_function(X)
    if np.shape(V) != (1, len(router.models)) or not np.isfinite(V).all():
        raise ArtifactIntegrityError(f"{folder}: the loaded router gives no valid prediction")


def _read_v1(manifest: dict, contents: dict, folder: Path, encoder, common: dict):
    """A version-1 artifact (a pair classifier) as the router of today's format.

    The classifier predicted the strong model's gain (classes -1/0/1: score 0.5 + (P(1) -
    P(-1)) / 2) or P(strong better) (classes 0/1). It becomes a gain head of the weak model
    with the classes negated, next to a constant reference head of 0.5 for the strong model
    (version 1 knew no absolute qualities): the score of a gain classifier is unchanged; a
    0/1 classifier's score p becomes 0.5 + p / 2, and its threshold t becomes 0.5 + t / 2,
    so every decision is the same."""
    from router_ml.core.heads import QualityHeads

    ctype = manifest.get("classifier", {}).get("type")
    threshold = manifest["threshold"]
    if V1_CLASSIFIER_FILE in contents:
        clf = _skops(contents, V1_CLASSIFIER_FILE, folder)
        estimator = _V1Classifier(clf)
        classes = [int(c) for c in np.asarray(clf.classes_).ravel()]
    elif ctype == "sklearn.linear_model._logistic.LogisticRegression":
        arrays = {k: _load_array(contents[f"classifier.{k}.npy"], folder / f"classifier.{k}.npy")
                  for k in ("coef", "intercept", "classes") if f"classifier.{k}.npy" in contents}
        if len(arrays) != 3:
            raise ArtifactIntegrityError(f"{folder}: logistic regression arrays are missing")
        coef, icpt, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
        classes = [int(c) for c in classes.ravel()] if classes.dtype.kind in "iu" else []
        k = 1 if len(classes) == 2 else len(classes)
        if coef.ndim != 2 or coef.shape[0] != k or icpt.shape != (k,) \
                or classes not in ([0, 1], [-1, 0, 1], [-1, 1]) \
                or not (np.isfinite(coef).all() and np.isfinite(icpt).all()):
            raise ArtifactIntegrityError(f"{folder}: logistic regression arrays have unexpected "
                                         "shapes or values")
        d = coef.shape[1]
        estimator = QualityHeads(["quality", "gain"], [np.zeros((1, d)), coef],
                                 [np.zeros(1), icpt], [[0, 1], [-c for c in classes]])
    else:
        raise ArtifactIntegrityError(f"{folder}: unknown classifier type {ctype!r}")
    if classes == [0, 1] and isinstance(threshold, (int, float)):
        threshold = 0.5 + 0.5 * threshold
    return RouterState(encoder, estimator, (manifest["strong_model"], manifest["weak_model"]),
                       threshold=threshold, **common)


class _V1Classifier:
    """A version-1 skops pair classifier seen through the estimator's decision_function."""

    def __init__(self, classifier):
        self.classifier = classifier

    def decision_function(self, X) -> np.ndarray:
        clf = self.classifier
        classes = [int(c) for c in np.asarray(clf.classes_).ravel()]
        if classes not in ([0, 1], [-1, 0, 1], [-1, 1]):
            raise ValueError(f"classes {classes} are not a pair target")
        p = np.asarray(clf.predict_proba(X), dtype=np.float64)
        gain = p[:, classes.index(1)] - (p[:, classes.index(-1)] if -1 in classes else 0.0)
        return np.column_stack([np.full(len(p), 0.5), 0.5 - gain])


def _read_v2(manifest: dict, contents: dict, folder: Path, encoder, common: dict, *,
             prior=None, score: str = "gain") -> RouterState:
    """Version 2: logistic heads (or a skops estimator), models and prices, the knob, coverage;
    a pair's score is the gain, no length prior."""
    spec = manifest["estimator"]
    if not isinstance(spec, dict) or spec.get("type") not in ("heads", "skops"):
        raise ArtifactIntegrityError(f"{folder}: unknown estimator type "
                                     f"{spec.get('type') if isinstance(spec, dict) else spec!r}")
    estimator = (_heads(spec, contents, folder) if spec["type"] == "heads"
                 else _skops(contents, ESTIMATOR_FILE, folder))
    knob = manifest["knob"]
    if not isinstance(knob, dict) or knob.get("kind") not in ("threshold", "lam"):
        raise ArtifactIntegrityError(f"{folder}: unknown knob {knob!r}")
    prices = manifest.get("prices") or {}
    if not isinstance(prices, dict) or not isinstance(manifest["models"], list):
        raise ArtifactIntegrityError(f"{folder}: models or prices are malformed")
    coverage = fallback = None
    cov = manifest.get("coverage")
    if cov is not None:
        from router_ml.core.coverage import Coverage

        name = "coverage.reference.npy"
        if not isinstance(cov, dict) or name not in contents:
            raise ArtifactIntegrityError(f"{folder}: coverage is malformed or {name} "
                                         "is not listed")
        coverage = Coverage(_load_array(contents[name], folder / name),
                            cov["tau"], cov["level"], cov["n_calibration"])
        fallback = cov.get("fallback")
    return RouterState(encoder, estimator, manifest["models"], prices=prices,
                       **{knob["kind"]: knob["value"]}, score_rule=score, prior=prior,
                       coverage=coverage, fallback=fallback, **common)


def _read_v3(manifest: dict, contents: dict, folder: Path, encoder, common: dict, *,
             score: str = "gain") -> RouterState:
    """Version 3: version 2 with a pair's length prior (or null)."""
    prior = None
    if manifest.get("prior") is not None:
        from router_ml.core.prior import LengthPrior

        if len(manifest["models"]) != 2:
            raise ArtifactIntegrityError(f"{folder}: a length prior needs two models")
        try:
            prior = LengthPrior.from_dict(manifest["prior"])
        except (ValueError, TypeError, KeyError) as e:
            raise ArtifactIntegrityError(f"{folder}: the prior is malformed: {e}") from None
    return _read_v2(manifest, contents, folder, encoder, common, prior=prior, score=score)


def _read_v4(manifest: dict, contents: dict, folder: Path, encoder, common: dict) -> RouterState:
    """Version 4: version 3 with how a pair's score comes from its qualities (``score``)."""
    if manifest["score"] not in SCORE_RULES:
        raise ArtifactIntegrityError(f"{folder}: unknown score rule {manifest['score']!r}")
    return _read_v3(manifest, contents, folder, encoder, common, score=manifest["score"])


def _read_v5(manifest: dict, contents: dict, folder: Path, encoder, common: dict) -> RouterState:
    """Version 5: version 4 with the heads' neighbours (or none)."""
    from router_ml.core.heads import QualityHeads

    state = _read_v4(manifest, contents, folder, encoder, common)
    nb = _neighbours(manifest["estimator"], contents, folder)
    if nb is None:
        return state
    h = state.estimator
    if not isinstance(h, QualityHeads):
        raise ArtifactIntegrityError(f"{folder}: neighbours belong to logistic heads")
    try:
        return state.replace(estimator=QualityHeads(h.kinds, h.coefs, h.intercepts, h.classes,
                                                    nb))
    except ValueError as e:
        raise ArtifactIntegrityError(f"{folder}: {e}") from None


# one reader per format version; a reader never changes once its version has shipped
READERS = {1: _read_v1, 2: _read_v2, 3: _read_v3, 4: _read_v4, 5: _read_v5}


def read_state(path) -> RouterState:
    """The state of a router saved with ``Router.save`` (what :func:`router_ml.load_router`
    builds its router from); refuses anything it cannot verify.

    Raises ArtifactVersionError (unknown format), ArtifactIntegrityError (missing, changed,
    truncated, symlinked or misnamed files) or UntrustedTypeError (a type not allowed).
    """
    from router_ml.core.calibration import CalibrationRecord
    from router_ml.core.features import encoder_from_parts

    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactIntegrityError(f"{folder}: not a directory")
    manifest = _read_manifest(folder)
    version = manifest["format_version"]
    contents = _check_files(folder, manifest.get("files"), version)
    try:
        encoder = encoder_from_parts(manifest["encoder"], _read_parts(contents, folder))
        cal = manifest.get("calibration") or {}
        common = {"calibration": CalibrationRecord(**cal) if cal else None,
                  "training": manifest.get("training") or {},
                  "evaluation": manifest.get("evaluation") or {}, "manifest": manifest}
        state = READERS[version](manifest, contents, folder, encoder, common)
        _check_state(state, folder, manifest["encoder"])
    except ArtifactError:
        raise
    except Exception as e:  # whatever the libraries raise on parts that do not fit together
        # skops is imported only for skops files, so its refusal is recognised by name
        if type(e).__name__ == "UntrustedTypesFoundException":
            raise UntrustedTypeError(f"{folder}: {e}") from None
        raise ArtifactIntegrityError(
            f"{folder}: cannot rebuild the router ({type(e).__name__}: {e})") from e
    return state
