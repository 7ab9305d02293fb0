"""mlflow pyfunc flavour of a saved router.

A router directory written by ``router.save(dir)`` carries an ``MLmodel`` file (see
:mod:`router_ml.core._mlmodel`) whose ``python_function`` flavour names the package,
``router_ml``, as its ``loader_module`` (a name that does not move with the modules; routers
saved earlier name this module, whose :func:`_load_pyfunc` still loads them), so::

    mlflow.pyfunc.load_model("models/default").predict(pd.DataFrame({"prompt": [...]}))
    PATH=.venv/bin:$PATH .venv/bin/mlflow models serve -m models/default --env-manager local

load through ``router_ml._load_pyfunc``, which is :func:`router_ml.load_router` with all its checks
(a changed file is refused here too). :func:`log_model` logs a router directory to an mlflow
run and optionally registers it with the alias ``champion``.

Prediction input, as mlflow's own flavours take it: one prompt (a string, or the 0-d array
``mlflow models serve`` makes of ``{"inputs": "a prompt"}``), a list, tuple,
numpy array or pandas Series of prompts, or a pandas DataFrame (or a dict of columns) with a
``prompt`` column of strings or a ``messages`` column of chats (lists of ``{"role",
"content"}``; a chat is routed on its user turns, newest first, see
:func:`router_ml.core.prompts.prompt_text`),
or a single column of strings under another name (``mlflow.pyfunc.spark_udf`` names its
columns ``0``, ``1``, ...). Anything else is a TypeError or ValueError that says what it got.
Output: a DataFrame with ``model`` (str) and ``score`` (float64 in [0, 1]) per row, in input
order (for a pair the score of :meth:`Router.score`, else the chosen model's predicted
quality).

mlflow is imported only by :func:`log_model`; loading and predicting need pandas (which mlflow
brings).
"""

from __future__ import annotations

import os
from pathlib import Path

from router_ml.core._mlmodel import LOADER_MODULE, mlflow_signature
from router_ml.core.prompts import prompt_text

DEFAULT_ALIAS = "champion"


class RouterPyfunc:
    """What mlflow wraps as a pyfunc model: ``predict(prompts) -> frame`` of ``model, score``
    (the input forms are in the module docstring)."""

    def __init__(self, router):
        self.router = router

    def get_raw_model(self):
        return self.router

    def prompts(self, model_input) -> list:
        """The prompts (strings or chats) of a prediction input (see the module docstring)."""
        import numpy as np
        import pandas as pd

        if isinstance(model_input, np.ndarray) and model_input.ndim == 0:
            model_input = model_input.item()  # mlflow's form of {"inputs": "one prompt"}
        if isinstance(model_input, str):
            return [model_input]
        if isinstance(model_input, dict):
            model_input = pd.DataFrame({k: v if isinstance(v, (list, tuple, np.ndarray, pd.Series))
                                        else [v] for k, v in model_input.items()})
        if isinstance(model_input, pd.Series):
            return model_input.tolist()
        if isinstance(model_input, (list, tuple)) or (isinstance(model_input, np.ndarray)
                                                      and model_input.ndim == 1):
            return list(model_input)
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"expected a prompt, a list or Series of prompts, or a pandas "
                            f"DataFrame with a 'prompt' or 'messages' column; got "
                            f"{_received(model_input)}")
        return _frame_prompts(model_input)

    def predict(self, model_input, params=None):
        import pandas as pd

        prompts = self.prompts(model_input)
        decisions = self.router.route_batch(prompts)
        index = model_input.index if isinstance(model_input, (pd.DataFrame, pd.Series)) else None
        return pd.DataFrame({"model": [d.model for d in decisions],
                             "score": [float(d.score) for d in decisions]}, index=index)


def _received(x) -> str:
    """What a prediction input is, for an error message: its type and shape or columns."""
    import pandas as pd

    if isinstance(x, pd.DataFrame):
        cols = ", ".join(f"{c!r} ({t})" for c, t in x.dtypes.items()) or "no columns"
        return f"a DataFrame of {len(x)} rows with {cols}"
    shape = getattr(x, "shape", None)
    return f"{type(x).__module__}.{type(x).__name__}" + (f" of shape {shape}" if shape else "") \
        + ("" if shape else f" {x!r:.60}")


def _frame_prompts(frame) -> list:
    has_prompt, has_messages = "prompt" in frame.columns, "messages" in frame.columns
    if has_prompt and frame["prompt"].notna().all():
        return frame["prompt"].tolist()
    if has_messages:
        out = []
        prompts = frame["prompt"] if has_prompt else [None] * len(frame)
        for i, (m, p) in enumerate(zip(frame["messages"], prompts)):
            if isinstance(p, str):
                out.append(p)
            elif m is None or (isinstance(m, float) and m != m):
                raise ValueError(f"row {i} has neither a prompt nor messages")
            else:
                out.append(prompt_text(m, f"messages row {i}"))
        return out
    if has_prompt:
        raise ValueError("the 'prompt' column has missing values; give every row a prompt "
                         "(or a 'messages' chat)")
    if len(frame.columns) == 1 and frame.iloc[:, 0].map(lambda v: isinstance(v, str)).all():
        return frame.iloc[:, 0].tolist()  # one column of prompts, e.g. spark_udf's "0"
    if len(frame.columns) == 0:
        raise ValueError(
            f"got {_received(frame)}: mlflow dropped the input's columns because they are not "
            "in this router's MLmodel signature (a router saved by an earlier router_ml declares "
            "'prompt' and 'messages' inputs, so a list becomes a column '0' that is dropped). "
            "Pass pd.DataFrame({'prompt': [...]}), or load and save the router again")
    raise ValueError(f"the input needs a 'prompt' column (strings) or a 'messages' column "
                     f"(chats), or a single column of strings; got {_received(frame)}")


def _load_pyfunc(path, model_config=None):
    """mlflow's entry point: ``path`` is the router directory."""
    from router_ml.core.router import load_router

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

    from router_ml.core.router import load_router
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
