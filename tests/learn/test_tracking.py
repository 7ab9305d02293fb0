"""router_ml.learn.tracking: runs logged to a local sqlite store and to a real mlflow server, a dead
server refused fast, and a disabled tracker that does nothing. Network: 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from servers import free_port

from router_ml import TrackingError
from router_ml.learn.tracking import (
    Tracker,
    default_tracking_uri,
    project_root,
    resolve_tracking_uri,
)

REPO = Path(__file__).resolve().parents[2]
HTTP_VARS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")

# mlflow's own deprecation noise (sqlalchemy, starlette) is not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:mlflow.*"),
]


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in HTTP_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    """One local store for the module's local tests: creating the sqlite schema takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def outputs(tmp_path):
    """A curve PNG and a small router directory to upload."""
    plot = tmp_path / "out" / "curve.png"
    router = tmp_path / "out" / "router-dir"
    (router / "sub").mkdir(parents=True)
    plot.write_bytes(b"\x89PNG\r\n\x1a\n fake")
    (router / "manifest.json").write_text('{"format_version": 1}\n')
    (router / "sub" / "classifier.skops").write_bytes(b"zip")
    return plot, router


def _log_a_run(tracker, plot, router):
    params = {"encoder": "tfidf", "C": 1.0, "extra": ("arena-hard", "dcrouter"),
              "seed": None, "target": {"min_pgr": 0.8}}
    report = {"n": 2808, "apgr": 0.61, "cpt50": np.float64(0.35), "cpt80": None,
              "auc": float("nan"), "CPT(50%)": 0.35000001}
    with tracker.run("mmlu", params) as run:
        run.log_metrics(report)
        run.log_metrics({"apgr": 0.5}, prefix="fold_", step=3)
        run.log_artifact(plot)
        run.log_dir(router, "router")
    return run


def _check_logged(client, run):
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.info.run_name == "mmlu"
    assert r.data.params == {"encoder": "tfidf", "C": "1.0", "extra": "arena-hard,dcrouter",
                             "seed": "None", "target.min_pgr": "0.8"}
    assert r.data.metrics == pytest.approx({"n": 2808, "apgr": 0.61, "cpt50": 0.35,
                                            "CPT_50": 0.35000001, "fold_apgr": 0.5})
    assert [m.step for m in client.get_metric_history(run.run_id, "fold_apgr")] == [3]
    assert r.data.tags["router_ml.version"]
    top = {f.path for f in client.list_artifacts(run.run_id)}
    assert top == {"curve.png", "router"}
    files = {f.path for f in client.list_artifacts(run.run_id, "router")}
    assert files == {"router/manifest.json", "router/sub"}
    assert [f.path for f in client.list_artifacts(run.run_id, "router/sub")] == [
        "router/sub/classifier.skops"]


# ------------------------------------------------------------------------ local store


def test_local_sqlite_store_logs_params_metrics_and_artifacts(tmp_path, outputs, monkeypatch):
    from mlflow import MlflowClient

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # nothing may land in the working directory
    store = tmp_path / "store"  # not created yet: check() makes it
    uri = f"sqlite:///{store / 'mlflow.db'}"
    tracker = Tracker(experiment="unit", tracking_uri=uri)
    tracker.check()
    run = _log_a_run(tracker, *outputs)

    assert len(run.run_id) == 32 and run.url is None
    _check_logged(MlflowClient(tracking_uri=uri), run)
    art = store / "artifacts" / run.run_id / "artifacts"
    assert (art / "router" / "sub" / "classifier.skops").read_bytes() == b"zip"
    assert list(cwd.iterdir()) == []
    assert not any(v in os.environ for v in HTTP_VARS)  # scoped, restored

    # a second tracker on the same store reuses the experiment
    again = Tracker(experiment="unit", tracking_uri=uri)
    with again.run("second", {}) as run2:  # run() checks by itself
        pass
    assert run2.experiment_id == run.experiment_id


def test_failing_block_marks_the_run_failed_and_propagates(sqlite_uri):
    from mlflow import MlflowClient

    uri = sqlite_uri
    tracker = Tracker(experiment="unit", tracking_uri=uri)
    with pytest.raises(RuntimeError, match="boom"):
        with tracker.run("broken", {"a": 1}) as run:
            raise RuntimeError("boom")
    assert MlflowClient(tracking_uri=uri).get_run(run.run_id).info.status == "FAILED"


def test_bad_metric_values_and_artifact_paths_are_clear_errors(tmp_path, sqlite_uri):
    tracker = Tracker(experiment="unit", tracking_uri=sqlite_uri)
    with tracker.run("bad", None) as run:
        with pytest.raises(TypeError, match="'protocol' must be a number"):
            run.log_metrics({"apgr": 0.5, "protocol": "mmlu"})
        with pytest.raises(TypeError, match="must be a number"):
            run.log_metrics({"curve": [0.1, 0.2]})
        with pytest.raises(ValueError, match="both become"):
            run.log_metrics({"cpt(50)": 0.1, "cpt[50]": 0.2})
        with pytest.raises(FileNotFoundError):
            run.log_artifact(tmp_path / "missing.png")
        with pytest.raises(NotADirectoryError):
            run.log_dir(tmp_path / "missing-dir")


# ------------------------------------------------------------------------ real server


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a temporary sqlite store and artifact directory;
    yields its URI and always stops its whole process group."""
    from servers import process

    port = free_port()
    env = {"MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    uri = f"http://127.0.0.1:{port}"
    with process(cmd, f"{uri}/health", tmp_path / "server.log", env=env, cwd=tmp_path):
        yield uri, tmp_path / "server-artifacts"


@pytest.mark.slow
def test_tracking_server_run_has_metrics_and_artifacts(mlflow_server, outputs, monkeypatch):
    from mlflow import MlflowClient

    uri, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as a user points the script at a server
    tracker = Tracker(experiment="server")
    assert tracker.uri == uri
    tracker.check()
    run = _log_a_run(tracker, *outputs)

    assert run.url == f"{uri}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    _check_logged(MlflowClient(tracking_uri=uri), run)
    # uploaded through the server's artifact proxy into its --artifacts-destination
    stored = artifacts / run.experiment_id / run.run_id / "artifacts" / "router" / "manifest.json"
    assert stored.read_text() == '{"format_version": 1}\n'


# ------------------------------------------------------------------------ unreachable


def test_unreachable_server_fails_fast_with_a_clear_error(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # closed again: nothing listens
    tracker = Tracker(tracking_uri=uri)
    with pytest.raises(TrackingError, match="not reachable") as err:
        tracker.check()
    assert uri in str(err.value) and "--no-tracking" in str(err.value)
    assert not any(v in os.environ for v in HTTP_VARS)

    entered = []
    with pytest.raises(TrackingError):
        with tracker.run("never", {"a": 1}):
            entered.append(True)  # no training work before the store is known to work
    assert entered == []


def test_password_is_not_shown_in_errors():
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as err:
        Tracker(tracking_uri=uri).check()
    assert "s3cret" not in str(err.value) and "alice:***@" in str(err.value)


# ------------------------------------------------------------------------ disabled, defaults


def test_disabled_tracker_does_nothing_imports_nothing_writes_nothing(tmp_path):
    # A fresh interpreter: mlflow must not even be imported, whatever MLFLOW_TRACKING_URI says.
    code = textwrap.dedent(f"""
        import sys
        from router_ml.learn.tracking import Tracker
        assert "mlflow" not in sys.modules, "import router_ml.learn.tracking imported mlflow"
        t = Tracker(experiment="x", enabled=False)
        t.check()
        with t.run("r", {{"a": 1}}) as run:
            run.log_params({{"b": 2}})
            run.log_metrics({{"apgr": 0.5, "bad": "text"}})
            run.log_artifact("missing.png")
            run.log_dir("missing-dir", "router")
        assert run.run_id is None and run.url is None
        assert "mlflow" not in sys.modules, "a disabled tracker imported mlflow"
        print("ok")
    """)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert list(tmp_path.iterdir()) == []


def test_tracking_uri_resolution(monkeypatch, tmp_path):
    assert project_root() == REPO  # a source checkout
    assert default_tracking_uri() == f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}"
    assert resolve_tracking_uri() == default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert resolve_tracking_uri() == default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert Tracker().uri == "http://tracking.example:5000"
    assert Tracker(tracking_uri="sqlite:///x.db").uri == "sqlite:///x.db"
    assert Tracker().tracking_uri is None  # __init__ only stores


def test_a_multi_model_report_logs_its_numbers_as_metrics_and_its_best_model_as_a_param(
        sqlite_uri):
    # `train.py --protocol dcrouter` logs such a report; its best model's name is text
    from mlflow import MlflowClient

    from router_ml.cli.report import log_report
    from router_ml.learn.evaluation import evaluate_multi

    rng = np.random.default_rng(0)
    q = rng.random((40, 3))
    costs = np.tile([1e-4, 1e-3, 1e-2], (40, 1))
    report = evaluate_multi(q + rng.normal(0, 0.1, q.shape), q, costs, ["s", "m", "l"]).to_dict()
    assert isinstance(report["best_model"], str)
    tracker = Tracker(experiment="unit", tracking_uri=sqlite_uri)
    with tracker.run("dcrouter", {}) as run:
        log_report(run, report)
    r = MlflowClient(tracking_uri=sqlite_uri).get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["best_model"] == report["best_model"]
    assert r.data.metrics["aiq"] == pytest.approx(report["aiq"])
    assert "best_model" not in r.data.metrics
