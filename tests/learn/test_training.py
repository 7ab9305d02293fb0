"""router_ml.learn.training: the default's static embedding is an input of training (committed,
checked by sha256), so training builds the same router on any machine."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from router_ml.learn import training


def test_the_committed_static_embedding_matches_its_digests():
    for name, digest in training.STATIC_SHA256.items():
        assert hashlib.sha256((training.STATIC_DIR / name).read_bytes()).hexdigest() == digest


def test_the_default_static_encoder_is_read_from_the_committed_files(monkeypatch):
    def no_distil(*a, **k):
        raise AssertionError("the default static embedding must not be distilled again")

    from router_ml.core.static import StaticEncoder

    monkeypatch.setattr(StaticEncoder, "distill", no_distil)
    enc = training.static_encoder()
    parts = enc.parts()
    expect = np.load(training.STATIC_DIR / "vectors.npy", allow_pickle=False)
    assert parts["vectors"].dtype == np.int8 and np.array_equal(parts["vectors"], expect)
    assert parts["tokenizer"] == (training.STATIC_DIR / "tokenizer.json").read_text("utf-8")
    X = enc.transform(["What is 2+2?", "Prove that there are infinitely many primes."])
    assert X.shape == (2, 64) and np.isfinite(X).all()


def test_a_changed_static_file_is_refused_by_name(tmp_path):
    folder = tmp_path / "static"
    shutil.copytree(training.STATIC_DIR, folder)
    data = bytearray((folder / "vectors.npy").read_bytes())
    data[-1] ^= 1
    (folder / "vectors.npy").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"vectors.npy: sha256 differs"):
        training.committed_static_encoder(folder)


def _pair_table(tmp_path, signal: bool):
    rng = np.random.default_rng(0)
    rows = ["prompt,big,small"]
    for i in range(300):
        hard = i % 3 == 0
        small = (int(rng.random() < 0.2) if hard else 1) if signal else int(rng.random() < 0.6)
        rows.append(f"{'prove the lemma' if hard else 'say hi'} number {i},1,{small}")
    table = tmp_path / f"logs-{signal}.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


@pytest.mark.parametrize("signal", [True, False])
def test_training_warns_when_routing_is_no_better_than_random(tmp_path, caplog, signal):
    from router_ml import load_router
    from router_ml.cli.train import train_main

    out = tmp_path / "r"
    assert train_main(["--table", str(_pair_table(tmp_path, signal)), "--model-columns",
                       "big,small", "--out", str(out), "--no-tracking", "--encoder", "tfidf",
                       "--no-length-prior", "--no-prior-router"]) == 0
    warned = "within its bootstrap error" in caplog.text
    check = load_router(out).training["cv_signal"]
    assert check["baseline"] == 0.5 and check["se"] > 0
    assert warned is (not signal) and check["no_signal"] is (not signal)


def test_other_heads_are_kept_only_when_they_win_by_more_than_their_error(tmp_path, caplog,
                                                                           monkeypatch):
    """With three models the search also tries kNN heads; they need scikit-learn to load, so
    they are kept only when they beat the logistic heads by more than the folds' error, and
    training says which heads it kept and what that means for loading."""
    from router_ml.learn.rows import Rows

    rng = np.random.default_rng(0)
    kinds = ["prove the lemma", "write a poem", "say hi"]
    prompts, Q = [], []
    for i in range(240):
        k = i % 3
        prompts.append(f"{kinds[k]} number {i}")
        Q.append([float(rng.random() < (0.95 if j == k else 0.3)) for j in range(3)])
    rows = Rows(prompts, np.array(Q), ("a", "b", "c"), np.array(["t"] * 240, dtype=object),
                np.array(["t"] * 240, dtype=object))
    prices = {"a": {"input": 3.0, "output": 12.0}, "b": {"input": 1.0, "output": 4.0},
              "c": {"input": 0.1, "output": 0.4}}
    config = training.TrainConfig(encoder="tfidf", extra=(), classifier="auto",
                                  length_prior=False)
    # the kNN heads' held-out score lifted above the logistic ones' by less than, then by
    # more than, the folds' standard error
    from sklearn.model_selection import GridSearchCV

    fit = GridSearchCV.fit
    for lift, kept in ((1e-9, "logistic"), (10.0, "kNN")):
        def lifted_fit(self, X, y=None, _lift=lift, **kw):
            res = fit(self, X, y, **kw)
            r = self.cv_results_
            knn = np.array([p.get("classifier") is not None for p in r["params"]])
            r["mean_test_score"] = np.where(knn, r["mean_test_score"] + _lift,
                                            r["mean_test_score"])
            return res

        monkeypatch.setattr(GridSearchCV, "fit", lifted_fit)
        caplog.clear()
        router = training.fit_router(rows, config, prices)
        assert router.training["heads"] == kept
        assert ("load with numpy alone" in caplog.text) is (kept == "logistic")
        assert ("needs scikit-learn to load" in caplog.text) is (kept == "kNN")


@pytest.mark.parametrize("rank", [0, 1])
def test_the_difficulty_estimator_learns_from_other_models_outcomes(tmp_path, rank):
    """A pair with few rows and other models' outcomes on other prompts: the difficulty learned
    from every outcome sends the hard kind of prompt to the strong model, the pair's score is
    1 - q_weak, and the saved router gives the same scores (with a low-rank model x prompt
    term too)."""
    from router_ml import load_router
    from router_ml.learn.rows import Rows

    rng = np.random.default_rng(0)
    kinds = ["prove the theorem about", "say hello to"]

    def rows(n, models, source, p_ok):
        prompts, Q = [], []
        for i in range(n):
            hard = i % 2 == 0
            prompts.append(f"{kinds[0 if hard else 1]} item {source} {i}")
            Q.append([float(rng.random() < p_ok(m, hard)) for m in models])
        src = np.array([source] * n, dtype=object)
        return Rows(prompts, np.array(Q), tuple(models), src, src)

    pair = rows(40, ["big", "small"], "mine", lambda m, hard: 0.9 if m == "big" or not hard else 0.3)
    others = rows(400, ["x", "y", "z"], "public", lambda m, hard: 0.2 if hard else 0.9)
    config = training.TrainConfig(estimator="difficulty", encoder="tfidf", extra=(),
                                  length_prior=False, coverage=None, rank=rank)
    router = training.fit_router(pair, config, outcomes=others)
    assert router.score_rule == "weak" and router.training["heads"] == "difficulty"
    assert router.training["n_outcomes"] == 440 and router.training["outcome_models"] == 5
    hard, easy = router.score(["prove the theorem about item new 1", "say hello to item new 2"])
    assert hard > easy
    V = router.predict_quality(["prove the theorem about item new 1"])
    assert router.score(["prove the theorem about item new 1"])[0] == pytest.approx(1 - V[0, 1])
    router.save(tmp_path / "r")
    again = load_router(tmp_path / "r")
    assert again.score_rule == "weak"
    probes = ["prove the theorem about item new 1", "say hello to item new 2"]
    np.testing.assert_allclose(again.score(probes), router.score(probes), atol=1e-12)
    if rank:
        with pytest.raises(ValueError, match="rank 1 is the difficulty estimator's"):
            training.fit_router(pair, training.TrainConfig(encoder="tfidf", extra=(), rank=1))


def _same_numbers(a, b, where: str = "manifest"):
    """JSON values a and b alike, floats within 1e-9 (relative): BLAS kernels differ between
    CPUs in the last digits of a sum, and so do the files' digests that hash those numbers."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            if k not in ("files", "manifest_sha256"):
                _same_numbers(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where


def _without_uuid(path) -> list[str]:
    return [line for line in path.read_text().splitlines() if "model_uuid" not in line]


@pytest.mark.slow
def test_make_train_rebuilds_the_committed_default_router(shared, tmp_path):
    """The committed models/default is what training builds from the data and the committed
    static embedding: the same files, every number within 1e-9 of the committed one (the
    same bytes on the CPU it was built on; BLAS kernels of other CPUs change the last
    digits), and the same route for every prompt tried."""
    import json
    from pathlib import Path

    from router_ml import load_router
    from router_ml.cli.train import train_main

    committed = Path(__file__).resolve().parents[2] / "models" / "default"
    out = tmp_path / "default"
    assert train_main(["--out", str(out), "--no-tracking", "--data-dir", str(shared)]) == 0
    names = sorted(p.name for p in committed.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        a, b = committed / name, out / name
        if name.endswith(".npy"):
            x, y = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
            assert x.dtype == y.dtype and x.shape == y.shape, name
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-12, err_msg=name)
        elif name == "manifest.json":
            _same_numbers(json.loads(a.read_text()), json.loads(b.read_text()))
        elif name == "MLmodel":  # its model_uuid hashes the files' digests
            assert _without_uuid(b) == _without_uuid(a)
        else:
            assert b.read_bytes() == a.read_bytes(), name
    lines = (shared / "arena-hard-v1" / "question.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["turns"][0] for line in lines]
    prompts += ["hi", "", "What is 2+2?", "Prove that there are infinitely many primes."]
    old, new = load_router(committed), load_router(out)
    assert [d.model for d in new.route_batch(prompts)] == [
        d.model for d in old.route_batch(prompts)]
    np.testing.assert_allclose(new.score(prompts), old.score(prompts), rtol=1e-9, atol=1e-12)


def test_a_rebuild_whose_fit_differs_in_the_last_digits_saves_the_same_bytes(tmp_path,
                                                                            monkeypatch):
    """What another CPU's BLAS kernels do to make train (the last bits of the features the
    difficulty estimator fits on), done here by nudging them one ulp: the router's files
    are the same bytes, MLmodel's model_uuid included. Without the rounding the heads, the
    prior and the records differ in their last digits."""
    from router_ml.cli.train import train_main
    from router_ml.learn.difficulty import DifficultyEstimator

    rng = np.random.default_rng(0)
    kinds = ["prove the theorem about", "say hello to", "compute the integral of",
             "write a poem on"]
    lines = ["prompt,big,small"]
    for i in range(300):
        k = i % 4
        prompt = f"{kinds[k]} item {i}" + " and more" * int(rng.integers(0, 30))
        lines.append(f"{prompt},{int(rng.random() < 0.9)},"
                     f"{int(rng.random() < (0.3 if k % 2 == 0 else 0.9))}")
    table = tmp_path / "logs.csv"
    table.write_text("\n".join(lines) + "\n")
    args = ["--table", str(table), "--estimator", "difficulty", "--encoder", "static",
            "--no-tracking", "--jobs", "1"]
    assert train_main([*args, "--out", str(tmp_path / "a")]) == 0
    fit = DifficultyEstimator.fit

    def nudged(self, X, Y, *a, **kw):
        return fit(self, np.nextafter(np.asarray(X, dtype=np.float64), 0.0), Y, *a, **kw)

    monkeypatch.setattr(DifficultyEstimator, "fit", nudged)
    assert train_main([*args, "--out", str(tmp_path / "b")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert {"estimator.coef.npy", "manifest.json", "MLmodel"} <= set(names)
    for name in names:
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
