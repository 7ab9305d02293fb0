"""router_ml.serve.mlflow_flavor and router_ml.core._mlmodel: a saved router directory is an mlflow pyfunc
model; registered, loaded by alias and served with `mlflow models serve`. 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from router_ml import load_router
from router_ml.errors import ArtifactIntegrityError

pd = pytest.importorskip("pandas")
mlflow = pytest.importorskip("mlflow")

from servers import child_env, free_port, process  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["prove the theorem about the integral number 3", "say hello to my friend",
           "compute the eigenvalues of the matrix", "what day is it today", ""]


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def saved(make_router, tmp_path):
    router = make_router("tfidf")
    router.save(tmp_path / "router")
    return router, tmp_path / "router"


def _expected(router, prompts):
    d = router.route_batch(prompts)
    return [x.model for x in d], np.array([x.score for x in d])


def test_saved_router_loads_as_pyfunc_and_predicts_like_route(saved):
    router, folder = saved
    model = mlflow.pyfunc.load_model(str(folder))
    out = model.predict(pd.DataFrame({"prompt": PROMPTS}))
    models, scores = _expected(router, PROMPTS)
    assert list(out.columns) == ["model", "score"]
    assert out["model"].tolist() == models
    np.testing.assert_allclose(out["score"].to_numpy(), scores, atol=1e-12)
    assert set(models) == {router.strong_model, router.weak_model}  # both sides are exercised
    # a chat column: routed on its user turns, newest first, as the router routes the chat
    chats = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
              {"role": "assistant", "content": "hello"}, {"role": "user", "content": p}]
             for p in PROMPTS[:3]]
    out = model.predict(pd.DataFrame({"messages": chats}))
    models3, scores3 = _expected(router, [f"{p}\n\nhi" for p in PROMPTS[:3]])
    assert out["model"].tolist() == models3
    np.testing.assert_allclose(out["score"].to_numpy(), scores3, atol=1e-12)
    np.testing.assert_allclose(out["score"].to_numpy(), router.score(chats), atol=1e-12)
    # one user turn: exactly its text, as before
    out = model.predict(pd.DataFrame({"messages": [[c[0], c[3]] for c in chats]}))
    np.testing.assert_allclose(out["score"].to_numpy(), scores[:3], atol=1e-12)
    # no input schema: mlflow would turn a list into a column '0' and drop it (see below)
    assert model.metadata.get_input_schema() is None
    assert model.metadata.get_output_schema().input_names() == ["model", "score"]


@pytest.mark.parametrize("kind", ["list", "tuple", "str", "series", "array", "dict",
                                  "one column"])
def test_pyfunc_takes_prompts_as_mlflow_flavours_do(saved, kind):
    """A list, tuple, numpy array or Series of prompts, one prompt, a dict of columns, or a
    frame of one string column (spark_udf's '0'), all as the DataFrame's prompt column."""
    router, folder = saved
    model = mlflow.pyfunc.load_model(str(folder))
    data = {"list": list(PROMPTS), "tuple": tuple(PROMPTS), "str": PROMPTS[0],
            "series": pd.Series(PROMPTS, index=range(10, 10 + len(PROMPTS))),
            "array": np.array(PROMPTS), "dict": {"prompt": list(PROMPTS)},
            "one column": pd.DataFrame({"0": PROMPTS})}[kind]
    n = 1 if kind == "str" else len(PROMPTS)
    out = model.predict(data)
    models, scores = _expected(router, PROMPTS[:n])
    assert out["model"].tolist() == models
    np.testing.assert_allclose(out["score"].to_numpy(), scores, atol=1e-12)
    if kind == "series":
        assert out.index.tolist() == data.index.tolist()


def test_pyfunc_of_three_models_takes_a_list(tmp_path):
    from conftest import TIER_KINDS, TIER_PRICES, TIERS, planted_tiers

    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder

    prompts, Q, _ = planted_tiers(300)
    router = RouterSpec(TfidfEncoder(min_df=1), models=TIERS, prices=TIER_PRICES,
                    lam=20.0).fit(prompts, Q)
    router.save(tmp_path / "tiers")
    new = [f"{TIER_KINDS[i % 3]} case {i}" for i in range(30)]
    out = mlflow.pyfunc.load_model(str(tmp_path / "tiers")).predict(new)
    models, scores = _expected(router, new)
    assert out["model"].tolist() == models and len(set(models)) >= 2
    np.testing.assert_allclose(out["score"].to_numpy(), scores, atol=1e-12)


def test_a_wrong_input_says_what_it_got(saved, tmp_path):
    import shutil
    import warnings
    from pathlib import Path

    _, folder = saved
    model = mlflow.pyfunc.load_model(str(folder))
    with pytest.raises(TypeError, match="got builtins.int 5"):
        model.predict(5)
    with pytest.raises(ValueError, match=r"got a DataFrame of 1 rows with 'text' \(\w+\), "
                                         r"'n' \(int64\)"):
        model.predict(pd.DataFrame({"text": ["hi"], "n": [1]}))
    with pytest.raises(TypeError, match=r"prompts\[1\] must be str .*got int"):
        model.predict(["hi", 3])
    # a router saved with the earlier signature: mlflow drops a list's column before predict
    old = tmp_path / "v2"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "artifact-v2", old)
    with warnings.catch_warnings():  # its loader module is the flavour's old (moved) path
        warnings.simplefilter("ignore", DeprecationWarning)
        model = mlflow.pyfunc.load_model(str(old))
    with pytest.raises(ValueError, match="dropped the input's columns.*pd.DataFrame"):
        model.predict(["What is 2+2?"])


def test_mlmodel_is_the_same_with_and_without_mlflow(saved):
    from router_ml import __version__
    from router_ml.core import _mlmodel as mlmodel

    _, folder = saved
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in folder.iterdir() if p.name not in ("MLmodel", "manifest.json")}
    plain = mlmodel.mlmodel_dict(digests, __version__)
    assert plain == mlmodel.mlmodel_dict_with_mlflow(digests, __version__)
    text = (folder / "MLmodel").read_text()
    assert text == mlmodel.to_yaml(plain) + "\n"
    import yaml

    assert yaml.safe_load(text) == plain
    # the manifest lists it with its digest, like every other file
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["MLmodel"] == hashlib.sha256(text.encode()).hexdigest()


def test_a_saved_router_without_mlflow_writes_the_same_mlmodel(make_router, tmp_path):
    code = ("import sys; sys.modules['mlflow'] = None; sys.path.insert(0, sys.argv[2]);"
            "from conftest import planted_router;"
            "from router_ml.core.features import TfidfEncoder;"
            "planted_router(TfidfEncoder(min_df=1)).save(sys.argv[1])")
    import subprocess
    from pathlib import Path

    tests = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "plain"), tests], check=True)
    make_router("tfidf").save(tmp_path / "with")
    assert (tmp_path / "plain" / "MLmodel").read_bytes() == \
        (tmp_path / "with" / "MLmodel").read_bytes()


def test_a_tampered_artifact_is_refused_through_mlflow(saved):
    _, folder = saved
    part = folder / "encoder.idf.npy"
    data = bytearray(part.read_bytes())
    data[-1] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256 differs"):
        mlflow.pyfunc.load_model(str(folder))


def test_an_mlmodel_pointing_elsewhere_is_refused_even_resealed(saved):
    from router_ml.core import artifact

    _, folder = saved
    path = folder / "MLmodel"
    text = path.read_text()
    assert 'loader_module: "router_ml"' in text
    path.write_text(text.replace('loader_module: "router_ml"', 'loader_module: "evil.module"'))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["MLmodel"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest[artifact.MANIFEST_DIGEST] = artifact.manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="loader module"):
        load_router(folder)


@pytest.mark.slow
def test_register_load_by_alias_and_serve(saved, tmp_path):
    router, folder = saved
    from router_ml.serve.mlflow_flavor import log_model

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           **child_env()}
    server = [sys.executable, "-m", "mlflow", "server",
              "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
              "--artifacts-destination", str(tmp_path / "server-artifacts"),
              "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with process(server, f"{uri}/health", tmp_path / "server.log", env=env, cwd=tmp_path):
        try:
            info = log_model(folder, "router", registered_model_name="test-router",
                             tracking_uri=uri)
        finally:
            mlflow.set_tracking_uri(None)
        assert str(info.registered_model_version) == "1"
        client = mlflow.MlflowClient(tracking_uri=uri)
        assert client.get_model_version_by_alias("test-router", "champion").version == "1"
        mlflow.set_tracking_uri(uri)
        try:
            model = mlflow.pyfunc.load_model("models:/test-router@champion")
        finally:
            mlflow.set_tracking_uri(None)
        models, scores = _expected(router, PROMPTS)
        out = model.predict(pd.DataFrame({"prompt": PROMPTS}))
        assert out["model"].tolist() == models
        np.testing.assert_allclose(out["score"].to_numpy(), scores, atol=1e-12)

        sport = free_port()
        serve = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                 "models:/test-router@champion", "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(sport), "-w", "1"]
        with process(serve, f"http://127.0.0.1:{sport}/ping", tmp_path / "serve.log",
                     env={**env, "MLFLOW_TRACKING_URI": uri}, cwd=tmp_path):
            body = json.dumps({"dataframe_split": {"columns": ["prompt"],
                                                   "data": [[p] for p in PROMPTS]}}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{sport}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                got = json.loads(r.read())["predictions"]
            # a plain list of prompts, as mlflow's own flavours take it
            req = urllib.request.Request(f"http://127.0.0.1:{sport}/invocations",
                                         data=json.dumps({"inputs": PROMPTS}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                listed = json.loads(r.read())["predictions"]
        assert [g["model"] for g in listed] == models
        assert [g["model"] for g in got] == models
        np.testing.assert_allclose([g["score"] for g in got], scores, atol=1e-9)


@pytest.mark.slow
def test_train_register_sets_the_champion_alias(tmp_path, monkeypatch, capsys):
    import csv

    from router_ml.cli.train import train_main

    with open(tmp_path / "logs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "big", "small"])
        for i in range(60):
            hard = i % 2 == 0
            w.writerow([("prove the theorem " if hard else "say hello ") + str(i), 1,
                        0 if hard else 1])
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        assert train_main(["--table", str(tmp_path / "logs.csv"), "--model-columns", "big,small",
                           "--strong", "big", "--weak", "small", "--encoder", "tfidf", "--C", "1",
                           "--no-prior-router",
                           "--out", str(tmp_path / "r"), "--register", "mine"]) == 0
        assert "models:/mine@champion (version 1)" in capsys.readouterr().out
        mlflow.set_tracking_uri(uri)
        model = mlflow.pyfunc.load_model("models:/mine@champion")
    finally:
        mlflow.set_tracking_uri(None)
    router = load_router(tmp_path / "r")
    out = model.predict(pd.DataFrame({"prompt": PROMPTS}))
    models, scores = _expected(router, PROMPTS)
    assert out["model"].tolist() == models
    np.testing.assert_allclose(out["score"].to_numpy(), scores, atol=1e-12)


DOC = (ROOT / "docs" / "mlflow.md").read_text(encoding="utf-8")


def _doc_block(lang: str, containing: str) -> str:
    import re

    blocks = [b for b in re.findall(rf"^```{lang}\n(.*?)^```", DOC, re.M | re.S)
              if containing in b]
    assert len(blocks) == 1, f"docs/mlflow.md has no single ```{lang} block with {containing!r}"
    return blocks[0]


@pytest.mark.slow
def test_a_model_registered_by_train_loads_by_name_as_the_docs_say(tmp_path, monkeypatch,
                                                                   capsys):
    """train --register without MLFLOW_TRACKING_URI prints its store, and the docs' recipe
    (set that store, load models:/NAME@champion), run from the project folder, finds it."""
    import csv
    import os
    import subprocess

    from router_ml.cli.train import train_main

    monkeypatch.setattr("router_ml.learn.tracking.project_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "logs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "big", "small"])
        for i in range(60):
            hard = i % 2 == 0
            w.writerow([("prove the theorem " if hard else "say hello ") + str(i), 1,
                        0 if hard else 1])
    try:
        assert train_main(["--table", "logs.csv", "--model-columns", "big,small", "--encoder",
                           "tfidf", "--C", "1", "--out", "models/r", "--register", "mine"]) == 0
    finally:
        mlflow.set_tracking_uri(None)
    out = capsys.readouterr().out
    store = f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').as_posix()}"
    assert f"mlflow store: {store} (experiment 'router_ml')" in out
    assert f"mlflow.set_tracking_uri({store!r})" in out
    recipe = [line for line in _doc_block("python", "set_tracking_uri").splitlines()
              if "set_tracking_uri" in line or line.startswith("import")]
    code = "\n".join(recipe + [
        "m = mlflow.pyfunc.load_model('models:/mine@champion')",
        f"print(m.predict(pd.DataFrame({{'prompt': {PROMPTS[:2]!r}}}))['model'].tolist())"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={**env, **child_env(),
                                          "MLFLOW_DISABLE_TELEMETRY": "true"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    routed = [d.model for d in load_router(tmp_path / "models" / "r").route_batch(PROMPTS[:2])]
    assert done.stdout.strip().splitlines()[-1] == repr(routed)


@pytest.mark.slow
def test_mlflow_models_serve_as_the_docs_say(tmp_path):
    """The docs' serve command, from a project folder whose .venv/bin is not on PATH, and
    their requests: one prompt as "inputs" (a 0-d array to the flavour) and a DataFrame."""
    import os
    import re
    import shlex
    import shutil

    block = _doc_block("bash", "mlflow models serve").strip().splitlines()
    serve, curls = block[0], [line for line in block[1:] if line.startswith("curl")]
    port = free_port()
    assert "-p 5001" in serve and len(curls) == 2
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)  # this environment
    shutil.copytree(ROOT / "models" / "default", tmp_path / "models" / "default")
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": child_env()["PYTHONPATH"], "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = ["bash", "-c", serve.replace("-p 5001", f"-p {port}")]  # as a shell runs it
    router = load_router(ROOT / "models" / "default")
    with process(cmd, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env=env,
                 cwd=tmp_path):
        got = []
        for curl in curls:
            body = re.search(r"-d '(.*)'$", curl).group(1)
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=body.encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                got.append((json.loads(body), json.loads(r.read())["predictions"]))
    assert shlex.split(curls[0])[0] == "curl"
    for body, predictions in got:
        inputs = body.get("inputs")
        prompts = ([inputs] if isinstance(inputs, str) else
                   [row[0] for row in body["dataframe_split"]["data"]])
        decisions = router.route_batch(prompts)
        assert [p["model"] for p in predictions] == [d.model for d in decisions]
        np.testing.assert_allclose([p["score"] for p in predictions],
                                   [d.score for d in decisions], atol=1e-9)
