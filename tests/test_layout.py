"""The package's layers: every module imports only its own layer and those below it, and no
import circle exists anywhere, counting imports inside functions (they run too)."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "router_ml"
# lowest first; a module may import its own layer and those before it
LAYERS = ["base", "core", "learn", "loop", "serve", "cli", "package"]
BASE = {"router_ml.errors", "router_ml._version", "router_ml._moved"}
# imports that go up a layer (none: an unfitted router is router_ml.learn.spec.RouterSpec)
UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    if module == "router_ml":
        return "package"
    if module in BASE:
        return "base"
    return module.split(".")[1]


def _imports(module: str) -> set[str]:
    """The router_ml modules that ``module`` imports, at the top or inside a function."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # "from router_ml.core import artifact" imports the module router_ml.core.artifact
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n in MODULES and n != module}
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_layer_has_modules():
    assert {_layer(m) for m in MODULES} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    here = LAYERS.index(_layer(module))
    up = sorted(t for t in GRAPH[module]
                if LAYERS.index(_layer(t)) > here and (module, t) not in UPWARD)
    assert not up, f"{module} ({_layer(module)}) imports a higher layer: {up}"


def test_no_import_circle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):  # depth-first; a module met again while on the path closes a circle
        state[m] = 1
        path.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_upward_exceptions_are_used():
    for a, b in UPWARD:
        assert b in GRAPH[a], f"{a} no longer imports {b}: drop it from UPWARD"


def test_circle_detection_fails_on_a_circle(monkeypatch):
    monkeypatch.setitem(GRAPH, "router_ml.core.heads", GRAPH["router_ml.core.heads"] | {"router_ml.core.router"})
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circle()


@pytest.mark.parametrize("old,new,name", [
    ("router_ml.router", "router_ml.core.router", "Router"),
    ("router_ml.persistence", "router_ml.core.router", "load_router"),
    ("router_ml.data", "router_ml.learn.tables", "load_table"),
    ("router_ml.costs", "router_ml.learn.budget", "TrafficProfile"),
    ("router_ml.serving", "router_ml.serve.endpoint", "create_app"),
])
def test_old_paths_import_with_a_deprecation_warning(old, new, name):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old):
        mod = importlib.import_module(old)
    assert getattr(mod, name) is getattr(importlib.import_module(new), name)


def test_old_cli_names_warn():
    import router_ml.cli
    from router_ml.cli import commands

    with pytest.warns(DeprecationWarning, match="router_ml.cli.commands"):
        assert router_ml.cli.train_main is commands.train_main
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError):
            router_ml.cli.no_such_name  # noqa: B018


def test_the_benchmarks_import_no_cli_code():
    """Benchmarks measure the library: what they need lives in learn/, core/ or serve/ (they
    may run the router-ml command, as a user does)."""
    import re

    root = Path(__file__).resolve().parent.parent
    for f in sorted((root / "benchmarks").glob("*.py")):
        found = re.findall(r"^\s*(?:from router_ml\.cli\b|import router_ml\.cli\b).*$",
                           f.read_text(encoding="utf-8"), re.M)
        assert not found, (f.name, found)


def _private_crossings() -> list[tuple[str, str]]:
    out = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("router_ml"):
                out += [(module, f"{node.module}.{a.name}") for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_few_private_names_cross_modules():
    """A name with a leading underscore is its module's own; a module that needs another's
    helper gets a public name (benchmarks/layout.py --list prints them)."""
    found = _private_crossings()
    assert len(found) <= 10, found


def test_the_tests_mirror_the_package():
    """tests/<layer>/ holds the tests of router_ml/<layer>/; the repository's own checks
    (layout, README, packaging, notebooks, benchmarks) stay at the top."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    layers = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert folders == layers, (sorted(folders), sorted(layers))


def test_the_api_reference_shows_the_public_modules_only():
    """docs/api documents every module a user may import (no part of its name starts with
    ``_``), the command-line modules aside (docs/cli.md), and no internal one."""
    import re

    api = set(re.findall(r"^::: (router_ml[\w.]*)\s*$",
                         "\n".join(p.read_text() for p in (PKG.parent / "docs" / "api").glob("*.md")),
                         re.M))
    public = {m for m in MODULES if not any(part.startswith("_") for part in m.split("."))
              and not m.startswith("router_ml.cli") and MODULES[m].name != "__init__.py"}
    assert public | {"router_ml"} == api, (sorted(public - api), sorted(api - public))


def test_every_command_lives_in_cli():
    """A command's entry point (``*_main``) and its argument parser live in router_ml/cli; the
    layers below hold what the commands call."""
    found = [f"{m}.{n.name}" for m, path in MODULES.items() if not m.startswith("router_ml.cli")
             for n in ast.parse(path.read_text()).body
             if isinstance(n, ast.FunctionDef) and n.name.endswith(("_main", "_parser"))]
    assert not found, found
