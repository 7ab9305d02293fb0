"""notebooks/threshold_tuning.ipynb runs headless top to bottom on a small real sample."""

import os
import time
from pathlib import Path

import pytest

from router_ml.data import resolve_data_dir
from router_ml.errors import DataNotFoundError

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "threshold_tuning.ipynb"
SAMPLE = 1500  # test and training rows: about 20 s here, far below the 3-minute bound
TIME_LIMIT = 180  # seconds per run


def _data_missing() -> str:
    try:
        d = resolve_data_dir()
    except DataNotFoundError as e:
        return f"no shared data ({e})"
    if not (d / "routellm-evals").is_dir():
        return f"{d} has no routellm-evals/ (the notebook's default mmlu protocol needs it)"
    return ""


needs_data = pytest.mark.skipif(bool(_data_missing()), reason=_data_missing() or "data found")


def _run(env: dict, tmp: Path) -> tuple[object, float]:
    """Execute the notebook in a fresh kernel with ROUTER_ML_NB_* from ``env``; fails on the
    first cell that raises. Returns the executed notebook and the wall time in seconds."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    kernel_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_ML_NB_")}
    kernel_env.update({"MPLBACKEND": "Agg", "ROUTER_ML_NB_SAMPLE": str(SAMPLE), **env})
    client = nbclient.NotebookClient(nb, timeout=TIME_LIMIT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    start = time.monotonic()
    client.execute(env=kernel_env)
    return nb, time.monotonic() - start


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for i, c in enumerate(code):
        assert c.outputs == [] and c.execution_count is None, f"code cell {i} holds outputs"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell: parameters"


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    env = {"ROUTER_ML_NB_MODEL": str(tmp / "no-router-here"),  # trains a quick router
           "ROUTER_ML_NB_OUT": str(tmp / "router"), "ROUTER_ML_NB_PLOT": str(tmp / "curve.png"),
           "ROUTER_ML_NB_TARGET": "quality", "ROUTER_ML_NB_MAX_DROP": "0.02"}
    nb, seconds = _run(env, tmp)
    return tmp, nb, seconds


@needs_data
@pytest.mark.slow
@pytest.mark.timeout(2 * TIME_LIMIT)
def test_notebook_trains_tunes_saves_and_plots(quality_run):
    from router_ml import load_router

    tmp, nb, seconds = quality_run
    assert seconds < TIME_LIMIT, f"the notebook took {seconds:.0f} s on {SAMPLE} rows"
    text = _text(nb)
    assert "trained here on" in text
    png = tmp / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    router = load_router(tmp / "router")
    assert router.calibration.method == "quality"
    assert router.calibration.target == {"max_drop": 0.02}
    assert f"threshold {router.threshold:.4f}" in text


@needs_data
@pytest.mark.slow
@pytest.mark.timeout(2 * TIME_LIMIT)
def test_notebook_loads_a_saved_router_and_saves_a_budget_threshold(quality_run, tmp_path):
    from router_ml import load_router

    saved = quality_run[0] / "router"
    env = {"ROUTER_ML_NB_MODEL": str(saved), "ROUTER_ML_NB_OUT": str(tmp_path / "budget"),
           "ROUTER_ML_NB_TARGET": "budget", "ROUTER_ML_NB_BUDGET": "1200",
           "ROUTER_ML_NB_STRONG_PRICE": "gpt-4o", "ROUTER_ML_NB_WEAK_PRICE": "gpt-4o-mini"}
    nb, seconds = _run(env, tmp_path)
    assert seconds < TIME_LIMIT, f"the notebook took {seconds:.0f} s on {SAMPLE} rows"
    assert f"loaded from {saved}" in _text(nb)
    router = load_router(tmp_path / "budget")
    rec = router.calibration
    assert rec.method == "budget" and rec.target["budget_usd_per_month"] == 1200.0
    assert rec.target["strong"] == "gpt-4o" and 0 < rec.achieved["share"] < 1
    assert rec.achieved["monthly_cost_usd"] <= 1200.0
