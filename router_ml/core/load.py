"""Loading a saved router: :func:`load_router` rebuilds a :class:`~router_ml.core.router.Router`
from a directory that :mod:`router_ml.core.artifact` has verified (format version, manifest
digest, file checksums, the skops allow-list) before anything is built. Every format version
ever written loads here (version 1 through :func:`_load_v1`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from router_ml.core.artifact import (
    ESTIMATOR_FILE,
    V1_CLASSIFIER_FILE,
    _audit_skops,
    _check_files,
    _load_array,
    _read_manifest,
)
from router_ml.core.state import SCORE_RULES, RouterState
from router_ml.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    UntrustedTypeError,
)


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


def _check_router(router, folder: Path, spec) -> None:
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


def _load_v1(manifest: dict, contents: dict, folder: Path, encoder, common: dict):
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


def _load_state(manifest: dict, contents: dict, folder: Path, version: int, encoder,
                common: dict) -> RouterState:
    """A version-2 to version-4 artifact's state."""
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
    score = "gain"  # version 3 and before
    if version >= 4:
        if manifest["score"] not in SCORE_RULES:
            raise ArtifactIntegrityError(f"{folder}: unknown score rule {manifest['score']!r}")
        score = manifest["score"]
    prior = None
    if version >= 3 and manifest.get("prior") is not None:
        from router_ml.core.prior import LengthPrior

        if len(manifest["models"]) != 2:
            raise ArtifactIntegrityError(f"{folder}: a length prior needs two models")
        try:
            prior = LengthPrior.from_dict(manifest["prior"])
        except (ValueError, TypeError, KeyError) as e:
            raise ArtifactIntegrityError(f"{folder}: the prior is malformed: {e}") from None
    return RouterState(encoder, estimator, manifest["models"], prices=prices,
                       **{knob["kind"]: knob["value"]}, score_rule=score, prior=prior,
                       coverage=coverage, fallback=fallback, **common)


def load_router(path):
    """Load a router saved with ``Router.save``; refuses anything it cannot verify.

    Raises ArtifactVersionError (unknown format), ArtifactIntegrityError (missing, changed,
    truncated, symlinked or misnamed files) or UntrustedTypeError (a type not allowed).
    """
    from router_ml.core.calibration import CalibrationRecord
    from router_ml.core.features import encoder_from_parts
    from router_ml.core.router import Router

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
        reader = _load_v1 if version == 1 else _load_state
        state = (reader(manifest, contents, folder, encoder, common) if version == 1
                 else reader(manifest, contents, folder, version, encoder, common))
        router = Router(state)
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
