"""The notebooks run headless top to bottom on real data: threshold_tuning.ipynb (pair
router, mmlu, a small sample) and multi_model_budget.ipynb (lam for a monthly budget on
dcrouter)."""

import os
import time
from pathlib import Path

import pytest

from router_ml.errors import DataNotFoundError
from router_ml.learn.sources import resolve_data_dir

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = NOTEBOOKS / "threshold_tuning.ipynb"
MULTI_NOTEBOOK = NOTEBOOKS / "multi_model_budget.ipynb"
SAMPLE = 1500  # test and training rows: about 20 s here, far below the 3-minute bound
TIME_LIMIT = 180  # seconds per run


def _data_missing(source: str = "routellm-evals", why: str = "the notebook's default mmlu "
                  "protocol needs it") -> str:
    try:
        d = resolve_data_dir()
    except DataNotFoundError as e:
        return f"no shared data ({e})"
    if not (d / source).is_dir():
        return f"{d} has no {source}/ ({why})"
    return ""


needs_data = pytest.mark.skipif(bool(_data_missing()), reason=_data_missing() or "data found")
_NO_DCROUTER = _data_missing("llmrouter-dcrouter", "multi_model_budget.ipynb trains on the "
                             "dcrouter protocol")
needs_dcrouter = pytest.mark.skipif(bool(_NO_DCROUTER), reason=_NO_DCROUTER or "data found")


def _run(env: dict, tmp: Path, notebook: Path = NOTEBOOK) -> tuple[object, float]:
    """Execute a notebook in a fresh kernel with ROUTER_ML_NB_* from ``env``; fails on the
    first cell that raises. Returns the executed notebook and the wall time in seconds."""
    nb = nbformat.read(notebook, as_version=4)
    kernel_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_ML_NB_")}
    kernel_env.update({"MPLBACKEND": "Agg", "ROUTER_ML_NB_SAMPLE": str(SAMPLE), **env})
    client = nbclient.NotebookClient(nb, timeout=TIME_LIMIT, kernel_name="python3",
                                     resources={"metadata": {"path": str(notebook.parent)}})
    start = time.monotonic()
    client.execute(env=kernel_env)
    return nb, time.monotonic() - start


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.mark.parametrize("notebook", [NOTEBOOK, MULTI_NOTEBOOK], ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
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


# multi_model_budget.ipynb: every training row of dcrouter (stats features: about 15 s here)
BUDGET_MONTH = 150.0  # USD per month: between the cheapest (~$34) and the best model (~$306)
REQUESTS = 1_000_000


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb-multi")
    env = {"ROUTER_ML_NB_SAMPLE": "0", "ROUTER_ML_NB_ENCODER": "stats",
           "ROUTER_ML_NB_OUT": str(tmp / "router"),
           "ROUTER_ML_NB_MULTI_PLOT": str(tmp / "multi.png"),
           "ROUTER_ML_NB_BUDGET": str(BUDGET_MONTH), "ROUTER_ML_NB_REQUESTS": str(REQUESTS)}
    nb, seconds = _run(env, tmp, MULTI_NOTEBOOK)
    return tmp, nb, seconds


@needs_dcrouter
@pytest.mark.slow
@pytest.mark.timeout(2 * TIME_LIMIT)
def test_multi_notebook_tunes_lam_for_a_monthly_budget(multi_run):
    import numpy as np

    from router_ml import load_router
    from router_ml.core.metrics import choose
    from router_ml.learn.protocols import fold, protocol_folds

    tmp, nb, seconds = multi_run
    assert seconds < TIME_LIMIT, f"the notebook took {seconds:.0f} s"
    assert (tmp / "multi.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = _text(nb)

    router = load_router(tmp / "router")
    assert len(router.models) == 9 and router.threshold is None
    budget = BUDGET_MONTH / REQUESTS
    rec = router.calibration
    assert rec.method == "budget"
    assert rec.target["budget"] == pytest.approx(budget, rel=1e-12)
    assert rec.achieved["lam"] == router.lam
    # the reloaded lam is the one the notebook chose and printed
    assert f"saved to {tmp / 'router'}: lam {router.lam!r}" in text
    assert f"chosen lam {router.lam!r} on {rec.n} calibration rows" in text

    # Recompute on the calibration rows (train.json, fold(prompt) == 0): the record is what
    # the saved router does there, and it is within the budget.
    split = protocol_folds("dcrouter")[0]
    cal = split.train.subset(np.array([fold(p) == 0 for p in split.train.prompts]))
    assert rec.n == len(cal)
    costs = router.costs(cal.prompts)
    pick = choose(router.decision_function(cal.prompts), costs, router.lam)
    rows = np.arange(len(cal))
    mean_cost = costs[rows, pick].mean()
    assert mean_cost <= budget * (1 + 1e-12)
    assert mean_cost == pytest.approx(rec.achieved["mean_cost"], rel=1e-9)
    assert cal.quality[rows, pick].mean() == pytest.approx(rec.achieved["quality"], rel=1e-9)

    # What the notebook reports for the test rows is what the saved router does there, and it
    # routes among several tiers rather than sending everything to one model.
    test = split.test
    c_test = router.costs(test.prompts)
    p_test = choose(router.decision_function(test.prompts), c_test, router.lam)
    r_test = np.arange(len(test))
    assert f"(${c_test[r_test, p_test].mean() * REQUESTS:,.2f}/month), quality " \
           f"{test.quality[r_test, p_test].mean():.4f}" in text
    assert len(np.unique(p_test)) >= 2, "one model takes every test prompt at the chosen lam"
    assert "prompt (first 80 characters)" in text


def test_the_docs_build_runs_notebooks_without_the_widget_warning(tmp_path):
    """docs/hooks.py runs a notebook in a kernel whose startup hides tqdm's "IProgress not
    found" warning (a library importing tqdm.auto gives it), so the pages do not show it."""
    import importlib.util

    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("docs_hooks", NOTEBOOKS.parent / "docs" /
                                                  "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import warnings\nfrom tqdm import TqdmWarning\n"
        "warnings.warn('IProgress not found. Please update jupyter and ipywidgets.', "
        "TqdmWarning)\nprint('ran')")])
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "w.ipynb")
    hooks._execute(tmp_path / "nb" / "w.ipynb", {}, tmp_path / "out")
    text = _text(nbformat.read(tmp_path / "out" / "notebooks" / "w.ipynb", as_version=4))
    assert "ran" in text and "IProgress" not in text and "TqdmWarning" not in text
