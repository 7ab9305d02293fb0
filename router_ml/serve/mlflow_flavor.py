"""mlflow pyfunc flavour of a saved router.

A router directory written by ``router.save(dir)`` carries an ``MLmodel`` file (see
:mod:`router_ml.core.mlmodel`) whose ``python_function`` flavour names this module as its
``loader_module``, so::

    mlflow.pyfunc.load_model("models/default").predict(pd.DataFrame({"prompt": [...]}))
    mlflow models serve -m models/default --env-manager local

load through :func:`_load_pyfunc`, which is :func:`router_ml.load_router` with all its checks
(a changed file is refused here too). :func:`log_model` logs a router directory to an mlflow
run and optionally registers it with the alias ``champion``.

Prediction input: a pandas DataFrame with a ``prompt`` column of strings, or a ``messages``
column of chats (lists of ``{"role", "content"}``; the last user turn is routed, see
:func:`router_ml.core.prompts.prompt_text`); also accepted: a list of strings or a dict of columns. Output: a
DataFrame with ``model`` (str) and ``score`` (float64 in [0, 1]) per row, in input order.

mlflow is imported only by :func:`log_model`; loading and predicting need pandas (which mlflow
brings).
"""

from __future__ import annotations

import os
from pathlib import Path

from router_ml.core.mlmodel import LOADER_MODULE, mlflow_signature
from router_ml.core.prompts import prompt_text

DEFAULT_ALIAS = "champion"


class RouterPyfunc:
    """What mlflow wraps as a pyfunc model: ``predict(frame) -> frame`` of ``model, score``."""

    def __init__(self, router):
        self.router = router

    def get_raw_model(self):
        return self.router

    def prompts(self, model_input) -> list[str]:
        """The prompts of a prediction input (see the module docstring)."""
        import pandas as pd

        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        if isinstance(model_input, (list, tuple)):
            model_input = pd.DataFrame({"prompt": list(model_input)})
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame with a 'prompt' or 'messages' column, "
                            f"got {type(model_input).__name__}")
        has_prompt = "prompt" in model_input.columns
        has_messages = "messages" in model_input.columns
        if has_prompt and model_input["prompt"].notna().all():
            return model_input["prompt"].tolist()
        if has_messages:
            out = []
            for i, (m, p) in enumerate(zip(model_input["messages"],
                                           model_input["prompt"] if has_prompt
                                           else [None] * len(model_input))):
                if isinstance(p, str):
                    out.append(p)
                elif m is None or (isinstance(m, float) and m != m):
                    raise ValueError(f"row {i} has neither a prompt nor messages")
                else:
                    out.append(prompt_text(m))
            return out
        if has_prompt:
            raise ValueError("the 'prompt' column has missing values; give every row a prompt "
                             "(or a 'messages' chat)")
        raise ValueError(f"the input needs a 'prompt' column (strings) or a 'messages' column "
                         f"(chats); it has {list(model_input.columns)}")

    def predict(self, model_input, params=None):
        import pandas as pd

        prompts = self.prompts(model_input)
        decisions = self.router.route_batch(prompts)
        index = model_input.index if isinstance(model_input, pd.DataFrame) else None
        return pd.DataFrame({"model": [d.model for d in decisions],
                             "score": [float(d.score) for d in decisions]}, index=index)


def _load_pyfunc(path, model_config=None):
    """mlflow's entry point: ``path`` is the router directory."""
    from router_ml.core.load import load_router

    return RouterPyfunc(load_router(path))


def pip_requirements() -> list[str]:
    """The packages a serving environment needs, pinned to what is installed here."""
    from importlib import metadata

    reqs = []
    for pkg in ("router_ml", "numpy", "tokenizers", "model2vec", "pandas"):
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def log_model(router_dir, name: str = "model", registered_model_name: str | None = None, *,
              alias: str | None = DEFAULT_ALIAS, run_id: str | None = None,
              tracking_uri: str | None = None):
    """Log the router directory ``router_dir`` as an mlflow pyfunc model named ``name``.

    Uses the active run, else ``run_id``'s run, else a new run. With
    ``registered_model_name`` the model is also registered, and ``alias`` (default
    ``champion``) is pointed at the new version, so ``models:/<registered_model_name>@champion``
    loads it. The directory is checked with ``load_router`` first: a damaged router is never
    logged. Returns mlflow's ``ModelInfo``.
    """
    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    from router_ml.core.load import load_router
    from router_ml.errors import TrackingError

    router_dir = Path(router_dir)
    load_router(router_dir)  # refuse to log what we would refuse to load
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    started = None
    if mlflow.active_run() is None:
        started = mlflow.start_run(run_id=run_id)
    try:
        info = mlflow.pyfunc.log_model(
            name=name, loader_module=LOADER_MODULE, data_path=str(router_dir),
            signature=mlflow_signature(), pip_requirements=pip_requirements(),
            input_example=pd.DataFrame({"prompt": ["What is 2+2?"]}),
            registered_model_name=registered_model_name)
        if registered_model_name and alias:
            version = info.registered_model_version
            if version is None:
                raise TrackingError(f"mlflow did not register {registered_model_name!r}; use a "
                                    "tracking server or database store with a model registry")
            mlflow.MlflowClient().set_registered_model_alias(registered_model_name, alias,
                                                             str(version))
    finally:
        if started is not None:
            mlflow.end_run()
    return info


__all__ = ["RouterPyfunc", "log_model", "pip_requirements"]
