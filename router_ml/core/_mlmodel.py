"""The ``MLmodel`` file that makes a saved router directory an mlflow pyfunc model.

``save_router`` writes it into every router directory (and lists it, with its sha256, in the
manifest like any other file), so ``mlflow.pyfunc.load_model(dir)`` and ``mlflow models serve
-m dir`` work on a directory written by ``router.save``. mlflow then imports
``router_ml`` and calls its ``_load_pyfunc(dir)``, which is ``load_router(dir)``:
the same checks as any load. Note that mlflow reads ``MLmodel`` itself before router_ml sees
the directory: load only artifacts you trust (as for any mlflow model).

With mlflow importable the file is built with mlflow's own classes (``mlflow.models.Model``,
``mlflow.pyfunc.add_to_model``, ``Model.add_flavor``, ``ModelSignature``); without it (the
core install) the same content is written from :func:`mlmodel_dict`. Either way the text is
deterministic (no creation time, a model uuid derived from the other files' digests, the
Python version as major.minor), so identical routers still save byte-identical directories.

Signature: output columns ``model`` (string) and ``score`` (double); no input schema. With
one, mlflow's schema enforcement turns a list of prompts (or an unnamed Series) into a frame
whose only column, ``0``, is not in the schema, and drops it before the model sees it; the
flavour (:class:`router_ml.serve.mlflow_flavor.RouterPyfunc`) checks its input itself: a
DataFrame with a ``prompt`` (string) or ``messages`` (chat) column, a list or Series of
prompts, or one prompt.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

MLMODEL = "MLmodel"
# the package itself (router_ml._load_pyfunc), a name that does not move with the modules
LOADER_MODULE = "router_ml"
# what earlier artifacts name: the flavour's module, and its place before the package was laid
# out in layers (router_ml._moved)
OLD_LOADER_MODULES = ("router_ml.serve.mlflow_flavor", "router_ml.mlflow_flavor")
FLAVOR = "router_ml"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

# mlflow's JSON form of the signature (ColSpec.to_dict order: type, then name, then required);
# no inputs: see the module docstring
SIGNATURE = {
    "inputs": None,
    "outputs": [{"type": "string", "name": "model", "required": True},
                {"type": "double", "name": "score", "required": True}],
}


def model_uuid(file_digests: dict[str, str]) -> str:
    """32 hex characters from the sha256 of the router's files: same router, same uuid."""
    text = json.dumps(dict(sorted(file_digests.items())), separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def mlmodel_dict(file_digests: dict[str, str], router_ml_version: str) -> dict:
    """The MLmodel content, without mlflow (the reference the mlflow-built one must equal)."""
    return {
        "flavors": {
            "python_function": {"loader_module": LOADER_MODULE,
                                "python_version": PYTHON_VERSION},
            FLAVOR: {"router_ml_version": router_ml_version, "manifest": "manifest.json"},
        },
        "model_uuid": model_uuid(file_digests),
        "signature": {"inputs": None, "outputs": json.dumps(SIGNATURE["outputs"]),
                      "params": None},
        "is_signature_from_type_hint": False,
        "type_hint_from_example": False,
    }


def mlflow_signature():
    """The signature as an ``mlflow.models.ModelSignature`` (needs mlflow)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=None, outputs=Schema([ColSpec("string", "model"), ColSpec("double", "score")]))


def mlmodel_dict_with_mlflow(file_digests: dict[str, str], router_ml_version: str) -> dict:
    """The MLmodel content built with mlflow's classes, made deterministic."""
    import mlflow.pyfunc
    from mlflow.models import Model

    model = Model(mlflow_version=None, model_uuid=model_uuid(file_digests),
                  signature=mlflow_signature())
    mlflow.pyfunc.add_to_model(model, loader_module=LOADER_MODULE)
    model.add_flavor(FLAVOR, router_ml_version=router_ml_version, manifest="manifest.json")
    # a time stamp would make identical routers differ; empty fields say nothing
    d = {k: v for k, v in model.to_dict().items() if v is not None and k != "utc_time_created"}
    d["flavors"]["python_function"]["python_version"] = PYTHON_VERSION
    return d


def _yaml_scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a double-quoted JSON string is a YAML string


def to_yaml(d: dict, indent: int = 0) -> str:
    """Block-style YAML of nested dicts of scalars, keys sorted (as mlflow's own to_yaml)."""
    lines = []
    for k in sorted(d):
        v = d[k]
        if isinstance(v, dict):
            lines.append(" " * indent + f"{k}:")
            lines.append(to_yaml(v, indent + 2))
        else:
            lines.append(" " * indent + f"{k}: {_yaml_scalar(v)}")
    return "\n".join(lines)


def write_mlmodel(folder: Path, file_digests: dict[str, str]) -> Path:
    """Write ``folder/MLmodel`` for a router whose other files have these sha256 digests."""
    from router_ml._version import __version__

    try:
        import mlflow.models  # noqa: F401
    except ImportError:
        content = mlmodel_dict(file_digests, __version__)
    else:
        content = mlmodel_dict_with_mlflow(file_digests, __version__)
    path = Path(folder) / MLMODEL
    path.write_text(to_yaml(content) + "\n", encoding="utf-8")
    return path


def check_mlmodel(data: bytes, path) -> None:
    """Refuse an ``MLmodel`` that is not text or that would make mlflow load other code: it
    must name :data:`LOADER_MODULE` (or its old name) as its only loader module and add no code
    paths.

    Raises ArtifactIntegrityError. (Its sha256 is checked with the other files first.)
    """
    from router_ml.errors import ArtifactIntegrityError

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactIntegrityError(f"{path}: not a text file; the MLmodel was replaced") from None
    keys = [line.split(":", 1) for line in text.splitlines() if ":" in line]
    loaders = [v.strip().strip("\"'") for k, v in keys if k.strip() == "loader_module"]
    if len(loaders) != 1 or loaders[0] not in (LOADER_MODULE, *OLD_LOADER_MODULES):
        raise ArtifactIntegrityError(f"{path}: the loader module must be {LOADER_MODULE!r}, "
                                     f"found {loaders}; the MLmodel was changed")
    if any(k.strip() in ("code", "model_code_path") for k, _ in keys):
        raise ArtifactIntegrityError(f"{path}: adds code paths; the MLmodel was changed")
