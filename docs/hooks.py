"""MkDocs hooks (mkdocs.yml): the notebooks of ``notebooks/`` become pages with their outputs,
and the docstrings' Sphinx roles (``:class:`~router_ml.core.router.Router```) read as code.

Each notebook runs headless in a fresh kernel, as ``tests/test_notebook.py`` runs it (a quick
router on a sample of 1,500 rows for the threshold notebook, every dcrouter row for the
budget one), into a temporary folder; the copy in ``notebooks/`` stays without outputs. A
notebook whose data source is not found is shown without outputs, and the build says so.
A notebook that raises fails the build.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {  # notebook: (the data source it needs, its parameters)
    "threshold_tuning.ipynb": ("routellm-evals", {"ROUTER_ML_NB_SAMPLE": "1500"}),
    "multi_model_budget.ipynb": ("llmrouter-dcrouter", {"ROUTER_ML_NB_SAMPLE": "0"}),
}
log = logging.getLogger("mkdocs.hooks.notebooks")
ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):<code>(~?)([^<]*)</code>")
_runs: list[Path] = []  # this build's temporary folders


def _data_source(name: str) -> bool:
    from router_ml.errors import DataNotFoundError
    from router_ml.learn.sources import resolve_data_dir

    try:
        return (resolve_data_dir() / name).is_dir()
    except DataNotFoundError:
        return False


def _execute(path: Path, params: dict, out: Path) -> None:
    """Runs ``path`` into ``out / "notebooks" / path.name``."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_ML_NB_")}
    env.update({"MPLBACKEND": "Agg", "ROUTER_ML_NB_MODEL": str(out / "no-router-here"),
                "ROUTER_ML_NB_OUT": str(out / f"{path.stem}-router"),
                "IPYTHONDIR": str(_quiet_ipython(out)), **params})
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
    (out / "notebooks").mkdir(exist_ok=True)
    nbformat.write(nb, out / "notebooks" / path.name)


def _quiet_ipython(out: Path) -> Path:
    """An IPython folder whose startup file hides tqdm's warning that Jupyter widgets are
    missing (libraries that import tqdm.auto in a kernel give it): a page shows no widgets,
    so the warning would only be noise in the notebook's output."""
    startup = out / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-no-widget-warning.py").write_text(
        "import warnings\n"
        "warnings.filterwarnings('ignore', message='IProgress not found')\n", encoding="utf-8")
    return out / "ipython"


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files, config):
    out = Path(tempfile.mkdtemp(prefix="router-ml-docs-"))
    _runs.append(out)
    for name, (source, params) in NOTEBOOKS.items():
        src_dir = ROOT
        if _data_source(source):
            log.info("executing notebooks/%s", name)
            _execute(ROOT / "notebooks" / name, params, out)
            src_dir = out
        else:
            log.info("notebooks/%s is shown without outputs: no %s data source found", name,
                     source)
        # a File read from src_dir (mkdocs-jupyter does not read generated files)
        files.append(File(f"notebooks/{name}", src_dir=str(src_dir), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_post_build(config):
    while _runs:
        shutil.rmtree(_runs.pop(), ignore_errors=True)


def on_page_content(html, page, config, files):
    # ``:func:`~a.b.c``` renders as ":func:<code>~a.b.c</code>": keep the code, and with the
    # tilde only its last name, as Sphinx shows it
    return ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html)
