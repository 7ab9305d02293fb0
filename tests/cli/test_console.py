"""The router-ml command: every sub-command answers --help; missing modules and unknown
commands are clear errors; default outputs go to the current directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from servers import child_env

from router_ml.cli.main import COMMANDS, main


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "router_ml.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **child_env()}, timeout=120)


def test_top_level_help_lists_every_command():
    out = _run("--help")
    assert out.returncode == 0
    for name in ("train", "evaluate", "label", "report", "serve", "score", "data"):
        assert name in COMMANDS and f"  {name}" in out.stdout


@pytest.mark.parametrize("name,word", [("train", "--protocol"), ("evaluate", "--baseline"),
                                        ("serve", "--upstream-base"), ("score", "--spark"),
                                        ("data", "fetch")])
def test_each_command_has_help(name, word):
    out = _run(name, "--help")
    assert out.returncode == 0, out.stderr
    assert f"usage: router-ml {name}" in out.stdout and word in out.stdout


@pytest.mark.parametrize("name,module", [("label", "router_ml.loop.labeling"),
                                         ("report", "router_ml.loop.monitoring")])
def test_commands_of_other_modules_dispatch_or_say_what_is_missing(name, module, capsys,
                                                                   monkeypatch):
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        out = _run(name, "--help")
        assert out.returncode == 0, out.stderr
        return
    assert main([name, "--help"]) == 2
    err = capsys.readouterr().err
    assert module in err and f"router-ml {name}" in err


def test_unknown_command(capsys):
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_train_without_out_writes_to_the_current_directory(tmp_path):
    import csv

    with open(tmp_path / "logs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "big", "small"])
        for i in range(60):
            hard = i % 2 == 0
            w.writerow([("prove the theorem " if hard else "say hello ") + str(i),
                        1, 0 if hard else 1])
    out = _run("train", "--table", "logs.csv", "--model-columns", "big,small", "--strong",
               "big", "--weak", "small", "--encoder", "tfidf", "--no-tracking", "--C", "1",
               "--no-prior-router",
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    from router_ml import load_router

    router = load_router(tmp_path / "models" / "logs")
    assert (router.strong_model, router.weak_model) == ("big", "small")
