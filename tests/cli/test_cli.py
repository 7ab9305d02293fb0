"""The training and evaluation scripts, end to end (TF-IDF or prompt statistics only: fast,
no torch)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from router_ml import load_router
from router_ml.cli.evaluate import evaluate_main
from router_ml.cli.train import train_main
from router_ml.core.metrics import apgr
from router_ml.core.prior import WEIGHTS
from router_ml.learn.protocols import protocol_folds

ROOT = Path(__file__).resolve().parents[2]



@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_help(script):
    out = subprocess.run([sys.executable, str(ROOT / "training" / script), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--protocol" in out


def test_random_baseline_on_mmlu(shared, tmp_path, capsys):
    report = tmp_path / "r.json"
    assert evaluate_main(["--baseline", "random", "--protocol", "mmlu", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    got = json.loads(report.read_text())
    assert got["n"] == 2811 and abs(got["apgr"] - 0.5) < 0.05
    assert got["oracle_apgr"] > 1.0 and got["random_apgr"] == pytest.approx(0.5)
    for word in ("APGR", "CPT(50%)", "CPT(80%)", "oracle APGR", "weak quality"):
        assert word in out
    assert report.with_suffix(".png").exists()


def test_default_outputs_go_under_the_current_directory_never_the_package(shared, tmp_path,
                                                                          monkeypatch):
    import router_ml

    monkeypatch.chdir(tmp_path)
    package = Path(router_ml.__file__).resolve().parent
    before = {p for p in package.rglob("*") if "__pycache__" not in p.parts}
    assert evaluate_main(["--baseline", "random", "--protocol", "mmlu"]) == 0
    assert list((tmp_path / "reports").glob("*.json"))
    assert {p for p in package.rglob("*") if "__pycache__" not in p.parts} == before
    # the checkout's script writes into the checkout's reports/
    src = (ROOT / "training" / "evaluate.py").read_text()
    assert "evaluate_main(root=ROOT)" in src and "ROOT = Path(__file__).resolve().parent.parent" in src


def test_train_and_evaluate_kfold_protocol(shared, tmp_path, capsys):
    out = tmp_path / "gsm"
    assert train_main(["--protocol", "gsm8k", "--out", str(out), "--no-tracking",
                       "--encoder", "stats", "--extra", ""]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"fold-{k}" for k in range(5)]
    printed = json.loads((out / "report.json").read_text())
    # recompute independently from the saved routers
    folds = protocol_folds("gsm8k", shared)
    scores = np.concatenate([load_router(out / f"fold-{f.k}").score(f.test.prompts) for f in folds])
    qs = np.concatenate([f.test.q_strong for f in folds])
    qw = np.concatenate([f.test.q_weak for f in folds])
    assert apgr(scores, qs, qw) == pytest.approx(printed["apgr"])
    report = tmp_path / "e.json"
    assert evaluate_main(["--model", str(out), "--protocol", "gsm8k", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["apgr"] == pytest.approx(printed["apgr"])
    assert json.loads(report.read_text())["trained_on_test_sources"] == []
    # a k-fold protocol needs the fold routers
    assert evaluate_main(["--model", str(out / "fold-0"), "--protocol", "gsm8k"]) == 2
    assert "lacks fold-0" in capsys.readouterr().err


@pytest.mark.parametrize("protocol,source", [("mmlu", "mmlu"), ("arena-rated", "arena-hard")])
def test_evaluating_the_default_on_rows_it_was_trained_on_warns(shared, tmp_path, caplog,
                                                                 protocol, source):
    """models/default learns from MMLU, GSM8K and arena-hard-v1 (which holds arena-rated's
    prompts): scored on such a protocol's test rows it says that they are not held out,
    naming the source, and the report records it."""
    report = tmp_path / "e.json"
    assert evaluate_main(["--model", str(ROOT / "models" / "default"), "--protocol", protocol,
                          "--report", str(report)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
              and "not held out" in r.getMessage()]
    assert len(warned) == 1 and f"trained on rows of {source}, which hold {protocol}'s " \
        "test prompts" in warned[0] and f"train --protocol {protocol}" in warned[0]
    assert json.loads(report.read_text())["trained_on_test_sources"] == [source]


def test_train_on_own_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = ["prompt,big,small"]
    for i in range(300):
        hard = i % 3 == 0
        small = int(rng.random() < 0.2) if hard else 1
        rows.append(f"{'prove the lemma' if hard else 'say hi'} number {i},1,{small}")
    table = tmp_path / "logs.csv"
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "mine"
    assert train_main(["--table", str(table), "--strong", "big", "--weak", "small",
                       "--out", str(out), "--no-tracking", "--encoder", "tfidf",
                       "--no-length-prior", "--no-prior-router"]) == 0
    r = load_router(out)
    assert r.length_prior is None and "length_prior_weight" not in r.training
    assert (r.strong_model, r.weak_model) == ("big", "small") and r.models == ["big", "small"]
    # your own table alone: the default extra sources are not mixed in
    assert r.training["config"]["extra"] == [] and r.training["n"] == 300
    assert r.calibration.method == "quality" and r.calibration.target == {"min_pgr": 0.8}
    # gain scores 0.5 + (q_strong - q_weak) / 2: up to 0.9 where the small model fails 80 %
    # of the time, 0.5 where both are always right
    hard, easy = r.score(["prove the lemma number 7", "say hi number 8"])
    assert hard > 0.65 and 0.5 <= easy < 0.6  # (C chosen from the grid shrinks both)
    assert r.route("say hi number 8").model == "small"
    # the threshold keeps 80 % of the strong model's gain on the out-of-fold scores
    assert r.calibration.achieved["pgr"] >= 0.8
    # --model-columns gives the pair too, the first column being the strong model; without
    # --no-length-prior the weight of the prior is chosen, and the decisions are the same
    assert train_main(["--table", str(table), "--model-columns", "big,small", "--out",
                       str(tmp_path / "cols"), "--no-tracking", "--encoder", "tfidf",
                       "--no-prior-router"]) == 0
    again = load_router(tmp_path / "cols")
    assert again.models == ["big", "small"]
    assert again.training["length_prior_weight"] in WEIGHTS
    probes = ["prove the lemma number 7", "say hi number 8"]
    assert [d.model for d in again.route_batch(probes)] == [d.model for d in r.route_batch(probes)]
    # --prior-weight fixes the weight instead
    assert train_main(["--table", str(table), "--model-columns", "big,small", "--out",
                       str(tmp_path / "fixed"), "--no-tracking", "--encoder", "tfidf",
                       "--prior-weight", "0.2", "--no-prior-router"]) == 0
    assert load_router(tmp_path / "fixed").length_prior.weight == 0.2
    # evaluated on the user's held-out rows
    report = tmp_path / "e.json"
    assert evaluate_main(["--model", str(out), "--table", str(table), "--report", str(report)]) == 0
    got = json.loads(report.read_text())
    assert got["n"] == 300 and got["apgr"] > 0.6 and got["table"] == str(table)
    # what the saved threshold does on those rows, from the router's own decisions
    prompts = [line.rsplit(",", 2)[0] for line in rows[1:]]
    Q = np.array([[float(x) for x in line.rsplit(",", 2)[1:]] for line in rows[1:]])
    strong = np.array([d.model == "big" for d in r.route_batch(prompts)])
    k = got["at_knob"]
    assert k["knob"] == "threshold" and k["value"] == pytest.approx(r.threshold)
    assert k["strong_share"] == pytest.approx(strong.mean())
    assert k["quality"] == pytest.approx(np.where(strong, Q[:, 0], Q[:, 1]).mean())
    assert 0 < k["strong_share"] < 1
    printed = capsys.readouterr().out
    assert f"at the saved threshold {r.threshold:.4g}: {100 * strong.mean():.1f} % strong" in printed


@pytest.mark.parametrize("protocol", [[], ["--protocol", "gsm8k"]])
def test_an_out_that_holds_something_else_fails_before_training(tmp_path, capsys, protocol):
    """--out onto a file, or into a folder holding other files, is refused before the data is
    read, with what to do; nothing there is changed."""
    table = tmp_path / "logs.csv"
    table.write_text("prompt,big,small\n" + "".join(f"q {i},1,{i % 2}\n" for i in range(40)))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me\n")
    (tmp_path / "file.txt").write_text("keep me too\n")
    source = protocol or ["--table", str(table)]
    for out, words in [(tmp_path / "notes", "is a non-empty folder without manifest.json"),
                       (tmp_path / "file.txt", "exists and is not a router directory")]:
        assert train_main([*source, "--out", str(out), "--no-tracking", "--encoder",
                           "tfidf", "--data-dir", str(tmp_path / "no-data")]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("error: FileExistsError: ") and words in captured.err
        assert "Choose a new path" in captured.err and "training" not in captured.out
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me\n"
    assert (tmp_path / "file.txt").read_text() == "keep me too\n"
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]


def test_a_table_of_one_repeated_prompt_says_so_without_verbose(tmp_path, capsys, caplog):
    table = tmp_path / "one.csv"
    table.write_text("prompt,big,small\n" + "".join(f"same prompt,1,{i % 2}\n"
                                                    for i in range(300)))
    assert train_main(["--table", str(table), "--out", str(tmp_path / "o"), "--no-tracking",
                       "--encoder", "tfidf"]) == 2
    assert "training on 1 rows" in capsys.readouterr().out
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("299 of 300 rows repeat the prompt of an earlier row" in w
               and "into 1 distinct prompts" in w for w in warned), warned


def test_evaluate_reads_a_table_on_the_scale_the_router_was_trained_on(tmp_path, capsys):
    """A router trained on 1-10 judge scores evaluates the held-out rows without
    --scale judge10 again; --scale still overrides."""
    rng = np.random.default_rng(0)
    rows = ["prompt,big,small"]
    for i in range(200):
        hard = i % 3 == 0
        rows.append(f"{'prove the lemma' if hard else 'say hi'} number {i},"
                    f"{rng.integers(8, 11)},{rng.integers(1, 4) if hard else rng.integers(8, 11)}")
    table = tmp_path / "judged.csv"
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "r"
    assert train_main(["--table", str(table), "--scale", "judge10", "--out", str(out),
                       "--no-tracking", "--encoder", "tfidf", "--no-length-prior"]) == 0
    assert load_router(out).training["scale"] == "judge10"
    report = tmp_path / "e.json"
    assert evaluate_main(["--model", str(out), "--table", str(table), "--report",
                          str(report)]) == 0
    got = json.loads(report.read_text())
    assert got["n"] == 200 and got["apgr"] > 0.6 and 0.6 < got["q_strong"] <= 1.0
    capsys.readouterr()
    assert evaluate_main(["--model", str(out), "--table", str(table), "--scale", "unit",
                          "--report", str(report)]) == 2
    assert "--scale judge10" in capsys.readouterr().err


def test_a_missing_training_package_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    """A core-only install: train says which extra to install, before any work, whether or
    not it logs to mlflow."""
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    table = tmp_path / "logs.csv"
    table.write_text("prompt,big,small\n" + "".join(f"q {i},1,{i % 2}\n" for i in range(40)))
    for tracking in ([], ["--no-tracking"]):
        assert train_main(["--table", str(table), "--out", str(tmp_path / "o"), *tracking]) == 2
        captured = capsys.readouterr()
        assert "needs the package 'datasets'" in captured.err
        assert "pip install 'router_ml[train]'" in captured.err and "mlflow" not in captured.err
        assert "training" not in captured.out
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.delitem(sys.modules, "datasets")
    assert train_main(["--table", str(table), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'router_ml[track]'; or pass --no-tracking" in err
    assert not (tmp_path / "o").exists()


def _tier_table(tmp_path):
    """Three candidates by their provider names, each best on one kind of prompt."""
    rng = np.random.default_rng(0)
    kinds = ["prove the lemma", "write a poem", "say hi"]
    rows = ["prompt,openai/gpt-4o,azure/gpt-4o,small"]
    for i in range(300):
        k = i % 3
        q = [int(rng.random() < (0.95 if j == k else (0.6 if j < 2 else 0.1))) for j in range(3)]
        rows.append(f"{kinds[k]} number {i}," + ",".join(map(str, q)))
    table = tmp_path / "tiers.csv"
    table.write_text("\n".join(rows) + "\n")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"openai/gpt-4o": {"input": 2.5, "output": 10.0},
                                  "azure/gpt-4o": {"input": 3.0, "output": 12.0},
                                  "small": {"input": 0.15, "output": 0.6}}))
    return table, prices


@pytest.mark.parametrize("target", [["--max-drop", "0.02"], ["--budget", "0.0015"],
                                    ["--dearest-share", "0.2"]])
def test_train_and_evaluate_three_models_from_a_table(tmp_path, capsys, target):
    table, prices = _tier_table(tmp_path)
    out = tmp_path / "tiers"
    assert train_main(["--table", str(table), "--model-columns",
                       "openai/gpt-4o,azure/gpt-4o,small", "--prices", str(prices), "--out",
                       str(out), "--no-tracking", "--encoder", "tfidf", "--no-prior-router",
                       *target]) == 0
    r = load_router(out)
    assert r.models == ["openai/gpt-4o", "azure/gpt-4o", "small"]  # names as given
    assert r.prices["azure/gpt-4o"] == {"input": 3.0, "output": 12.0}
    assert r.threshold is None and r.lam is not None
    key = target[0][2:].replace("-", "_")
    assert r.calibration.target == {key: float(target[1])} and r.calibration.n == 300
    a = r.calibration.achieved
    if key == "max_drop":
        assert a["quality"] >= a["best_single_quality"] - 0.02 - 1e-12
    elif key == "budget":
        assert a["mean_cost"] <= 0.0015 * (1 + 1e-12)
    assert "lam" in capsys.readouterr().out
    report = tmp_path / "e.json"
    assert evaluate_main(["--model", str(out), "--table", str(table), "--report", str(report)]) == 0
    got = json.loads(report.read_text())
    assert got["n"] == 300 and got["aiq"] > 0 and got["best_model"] in r.models
    printed = capsys.readouterr().out
    assert "AIQ" in printed
    # what the saved lam does on those rows, from the router's own decisions and prices
    lines = table.read_text().splitlines()[1:]
    prompts = [x.split(",")[0] for x in lines]
    Q = np.array([[float(v) for v in x.split(",")[1:]] for x in lines])
    pick = np.array([r.models.index(d.model) for d in r.route_batch(prompts)])
    C = r.costs(prompts)
    k = got["at_knob"]
    assert k["knob"] == "lam" and k["value"] == pytest.approx(r.lam)
    assert k["quality"] == pytest.approx(Q[np.arange(300), pick].mean())
    assert k["mean_cost"] == pytest.approx(C[np.arange(300), pick].mean())
    assert k["shares"] == {m: pytest.approx((pick == j).mean()) for j, m in enumerate(r.models)}
    assert k["best_model"] == got["best_model"] and k["best_quality"] == got["best_quality"]
    assert k["quality_drop"] == pytest.approx(got["best_quality"] - k["quality"])
    assert f"at the saved lam {r.lam:.4g}: quality {k['quality']:.3f}" in printed
    assert "small " in printed.split("calls:")[1]


def test_three_models_need_a_price_for_each(tmp_path, capsys):
    table, prices = _tier_table(tmp_path)
    prices.write_text(json.dumps({"openai/gpt-4o": {"input": 2.5, "output": 10.0}}))
    assert train_main(["--table", str(table), "--prices", str(prices), "--out",
                       str(tmp_path / "o"), "--no-tracking", "--encoder", "tfidf"]) == 2
    err = capsys.readouterr().err
    assert "UnknownModelError" in err and "'small'" in err


def _logged_costs_table(tmp_path, with_cost=("acme/large", "mid-7b", "tiny-1b")):
    """A RouterBench-style log: three models unknown to the price table, each with a
    <model>|total_cost column of costs made by planted per-token prices, and a token column."""
    import csv
    import math

    rng = np.random.default_rng(1)
    models = ["acme/large", "mid-7b", "tiny-1b"]
    planted = {"acme/large": (4.0, 16.0), "mid-7b": (0.8, 2.0), "tiny-1b": (0.1, 0.3)}
    kinds = ["prove the lemma", "write a poem", "say hi"]
    path = tmp_path / "logs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", *models, *(f"{m}|total_cost" for m in with_cost), "prompt_tokens"])
        for i in range(300):
            k = i % 3
            prompt = f"{kinds[k]} number {i}" + " and more" * int(rng.integers(0, 40))
            q = [int(rng.random() < (0.95 if j == k else (0.6 if j < 2 else 0.1)))
                 for j in range(3)]
            t = math.ceil(len(prompt) / 4)
            costs = [(planted[m][0] * t + planted[m][1] * 256) / 1e6 for m in with_cost]
            w.writerow([prompt, *q, *costs, t])
    return path, planted


def test_observed_costs_price_models_the_table_lacks(tmp_path, capsys):
    """No price file: each model's price is fitted to its observed costs, printed, and
    recorded in the manifest's training record; the recognised columns are printed."""
    table, planted = _logged_costs_table(tmp_path)
    out = tmp_path / "r"
    assert train_main(["--table", str(table), "--out", str(out), "--no-tracking",
                       "--encoder", "tfidf", "--jobs", "1", "--no-prior-router"]) == 0
    printed = capsys.readouterr().out
    assert "acme/large <- 'acme/large|total_cost'" in printed
    assert "'prompt_tokens'" in printed and "price of tiny-1b from its observed costs" in printed
    r = load_router(out)
    assert r.models == list(planted) and r.lam is not None
    for m, (inp, outp) in planted.items():  # the planted per-token prices are recovered
        assert r.prices[m]["input"] == pytest.approx(inp, rel=1e-6)
        assert r.prices[m]["output"] == pytest.approx(outp, rel=1e-6)
    rec = r.training["prices_from_costs"]
    assert "least squares" in rec["method"]
    assert rec["models"]["mid-7b"]["method"] == "least-squares"
    assert rec["models"]["mid-7b"]["rows"] == 300
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["prices_from_costs"] == rec


def test_a_price_file_that_contradicts_the_logged_costs_is_the_one_set_used(tmp_path, caplog):
    """A price file at 100x the logs' costs: training says so for each model, and lam is
    calibrated on the costs the saved router routes by (the file's), so the calibration's
    mean cost per request is one the router's own costs can give."""
    table, planted = _logged_costs_table(tmp_path)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({m: {"input": 100 * i, "output": 100 * o}
                                  for m, (i, o) in planted.items()}))
    out = tmp_path / "r"
    assert train_main(["--table", str(table), "--prices", str(prices), "--out", str(out),
                       "--no-tracking", "--encoder", "tfidf", "--jobs", "1",
                       "--budget", "0.05"]) == 0
    err = "\n".join(r.getMessage() for r in caplog.records if r.name.endswith("price_fit"))
    for m in planted:
        assert f"{m}: its price (the price file) puts its logged requests at" in err
    assert "100.0x the" in err and "more than 2x apart" in err
    caplog.clear()
    r = load_router(out)
    assert r.prices == {m: {"input": 100 * i, "output": 100 * o} for m, (i, o) in planted.items()}
    prompts = [line.split(",")[0] for line in table.read_text().splitlines()[1:]]
    per_model = r.costs(prompts).mean(axis=0)
    a = r.calibration.achieved
    assert per_model.min() * (1 - 1e-9) <= a["mean_cost"] <= per_model.max() * (1 + 1e-9)
    assert a["mean_cost"] <= 0.05 and a["met"]
    # prices that agree with the logs: no warning
    prices.write_text(json.dumps({m: {"input": i, "output": o} for m, (i, o) in planted.items()}))
    assert train_main(["--table", str(table), "--prices", str(prices), "--out", str(out),
                       "--no-tracking", "--encoder", "tfidf", "--jobs", "1"]) == 0
    assert [r for r in caplog.records if r.name.endswith("price_fit")] == []


def test_a_model_without_price_or_cost_names_the_prices_option(tmp_path, capsys):
    table, _ = _logged_costs_table(tmp_path, with_cost=("acme/large", "mid-7b"))
    assert train_main(["--table", str(table), "--out", str(tmp_path / "r"), "--no-tracking",
                       "--encoder", "tfidf", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "UnknownModelError" in err and "'tiny-1b'" in err and "--prices" in err
    assert "load_prices" not in err


def test_clear_error_for_unknown_model(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("prompt,a,b\nx,1,0\ny,0,1\n")
    assert train_main(["--table", str(table), "--strong", "gpt-9", "--weak", "b",
                       "--no-tracking", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'gpt-9'" in err and "known models: a, b" in err


def test_default_router_trains_on_the_extra_rows_too(shared):
    """Without --protocol, the default extra source (arena-hard) joins MMLU and GSM8K."""
    from router_ml.cli import commands as cli
    from router_ml.learn.protocols import all_training_rows

    base = all_training_rows(shared)
    rows = all_training_rows(shared, extra=("arena-hard",))
    added = len(rows) - len(base)
    assert 250 < added < 300 and set(rows.sources[len(base):]) == {"arena-hard"}
    from router_ml.learn.training import TrainConfig

    args = cli.train_parser().parse_args([])
    assert "arena-hard" in TrainConfig().extra
    assert cli.config_from_args(args).extra == TrainConfig().extra
    args = cli.train_parser().parse_args(["--extra", ""])
    assert cli.config_from_args(args).extra == ()


def test_train_without_options_is_the_default_recipe_and_a_table_chooses_its_own_weight():
    from router_ml.cli import commands as cli
    from router_ml.learn.training import DEFAULT_ROUTER

    args = cli.train_parser().parse_args([])
    assert cli.config_from_args(args).to_dict() == DEFAULT_ROUTER.to_dict()
    assert cli.config_from_args(cli.train_parser().parse_args(
        ["--prior-weight", "0.4"])).prior_weight == 0.4
    assert cli.config_from_args(cli.train_parser().parse_args(
        ["--no-length-prior"])).prior_weight is None
    table = cli.train_parser().parse_args(["--table", "t.csv", "--estimator", "difficulty"])
    assert cli.config_from_args(table).prior_weight is None
