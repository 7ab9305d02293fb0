"""The README's and the guides' Python examples run as written.

Every ```python block of README.md and docs/*.md runs in a fresh interpreter whose working
directory stands
for the repository root: a temporary folder with a copy of ``models/default`` (so the examples
write their logs, ``mlflow.db`` and ``models/mine`` there, not into the checkout), the files
the README shows as file blocks (a ```toml block whose first line is ``# rules.toml: ...`` is
written to ``rules.toml``), and ``models/mine``, a router of three priced models standing for
the one "Train on your own data" builds. A block that needs a network model call or a server
says so on a line ``# readme: skip (<reason>)`` and is skipped with that reason. No network:
mlflow's store is a SQLite file in the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servers import child_env

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SKIP = re.compile(r"#\s*readme:\s*skip\s*\((.+)\)")
FILE = re.compile(r"#\s*([\w.-]+\.(?:toml|json|ya?ml)):")


def _blocks() -> list[tuple[str, str, str]]:
    """(language, page:first line, code) of every fenced block of the pages."""
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        out += [(m.group(1), f"{page.name}:{text.count(chr(10), 0, m.start()) + 2}", m.group(2))
                for m in FENCE.finditer(text)]
    return out


PYTHON = [(line, code) for lang, line, code in _blocks() if lang == "python"]


def test_the_readme_has_python_examples():
    assert len(PYTHON) >= 3  # the block parser found them (a fence change would hide them)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A stand-in for the repository root (see the module docstring)."""
    from conftest import TIER_PRICES, TIERS, planted_tiers

    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder

    folder = tmp_path_factory.mktemp("readme-root")
    shutil.copytree(ROOT / "models" / "default", folder / "models" / "default")
    prompts, Q, _ = planted_tiers(300)
    RouterSpec(TfidfEncoder(min_df=1), models=TIERS, prices=TIER_PRICES,
           lam=20.0).fit(prompts, Q).save(folder / "models" / "mine")
    for lang, _, code in _blocks():
        first = code.splitlines()[0] if code.strip() else ""
        m = FILE.match(first)
        if lang != "python" and m:
            (folder / m.group(1)).write_text(code, encoding="utf-8")
    return folder


@pytest.mark.parametrize("code", [c for _, c in PYTHON],
                         ids=[where for where, _ in PYTHON])
def test_readme_example_runs(code, root):
    skip = SKIP.search(code)
    if skip:
        pytest.skip(skip.group(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(child_env(), MLFLOW_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1",
               MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"the example failed:\n{done.stderr[-3000:]}"


def test_the_months_bill_is_the_benchmarks_output():
    # the README's and the site's table of a month's bill are what bench_money.py prints
    # for the committed quality report, not typed
    import json

    from conftest import load_benchmark

    money = load_benchmark("bench_money")
    table = money.bill_table(json.loads((ROOT / "docs" / "reports" / "quality.json").read_text()),
                             "default", 1_000_000, 400)
    assert len(table.splitlines()) >= 4
    assert table in (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / "docs" / "reports" / "money.md").read_text(encoding="utf-8") == table
    assert '--8<-- "docs/reports/money.md"' in (ROOT / "docs" / "index.md").read_text()


def test_the_readme_says_how_to_read_its_numbers_before_using_them():
    """Each measure and name the tables use is explained in "How to read these numbers",
    which comes before the first table and before any other use of them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## How to read these numbers")
    end = text.index("\n## ", start + 1)
    assert start < text.index("\n|")  # before the first table
    for term in ("APGR", "PGR", "CPT", "AIQ", "rho", "oracle", "loso", "suite score",
                 "length", "gain kept"):
        first = text.find(term)
        assert start <= first < end, f"{term!r} is used before it is explained"


def test_the_readme_names_every_protocol_where_the_default_is_below_length():
    """The sentence on the loss to the length baseline names exactly the protocols of the
    quality table where the default's APGR is below length's."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = next(line for line in lines if "| length |" in line)
    cols = [c.strip() for c in header.strip("|").split("|")]
    i_len = cols.index("length")
    i_def = next(i for i, c in enumerate(cols) if c.startswith("**default**"))
    below, above = set(), set()
    for line in lines[lines.index(header) + 2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.sub(r"\*\*|\s*\(.*\)", "", cells[0])
        if len(cells) != len(cols) or not re.fullmatch(r"[a-z0-9-]+", name):
            continue
        values = [re.match(r"\**(-?[0-9.]+)", cells[i]) for i in (i_len, i_def)]
        if not all(values):
            continue
        length, default = (float(v.group(1)) for v in values)
        (below if default < length else above).add(name)
    assert below and above
    sentence = re.search(r"It is below\s+the\s+length\s+baseline\s+on\s+(.*?)\s+in\s+the\s+table",
                         text, re.S).group(1)
    named = set(re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", sentence.replace("and", ",")))
    assert named == below


@pytest.mark.slow
def test_the_site_pages_link_what_they_name(tmp_path):
    """`mkdocs build` (the notebooks without outputs here: no data source): every entry of a
    notebook page's contents links an anchor of the page and keeps its words (lam included);
    404.html takes its assets from site_url's path; the pages name files that exist and show
    the price file and the serving quick start."""
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_ML_")}
    env.update(child_env(), ROUTER_ML_DATA=str(tmp_path / "no-data"),
               ROUTER_ML_SITE_URL="http://docs.example/router-ml/", NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for page in ("multi_model_budget", "threshold_tuning"):
        html = (site / "notebooks" / page / "index.html").read_text(encoding="utf-8")
        ids = set(re.findall(r'id="([^"]+)"', html))
        toc = re.findall(r'<a href="#([^"]+)" class="md-nav__link">\s*<span class="md-ellipsis">'
                         r'\s*(.*?)\s*</span>', html, re.S)
        assert toc and all(anchor in ids for anchor, _ in toc), page
        for anchor, title in toc:  # the words of the heading, none dropped
            assert re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") == anchor, (page, title)
    budget = (site / "notebooks" / "multi_model_budget" / "index.html").read_text()
    assert "Choose lam for a monthly budget" in budget
    threshold = (site / "notebooks" / "threshold_tuning" / "index.html").read_text()
    for path in re.findall(r"router_ml/[\w/]+\.json", threshold):
        assert (ROOT / path).is_file(), path
    assert "router_ml/core/prices.json" in threshold
    page404 = (site / "404.html").read_text(encoding="utf-8")
    assets = re.findall(r'(?:href|src)="([^"]*assets/[^"]*)"', page404)
    assert assets and all(a.startswith("/router-ml/assets/") for a in assets), assets[:3]
    training = (site / "training" / "index.html").read_text(encoding="utf-8")
    assert "llama-3.1-8b" in training and "prices.toml" in training
    assert "Quick start" in (site / "serving" / "index.html").read_text(encoding="utf-8")
