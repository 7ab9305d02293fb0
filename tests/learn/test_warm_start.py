"""router_ml.learn.warm: a team's rows correct the default's prior (its difficulty and each
model's ability) instead of replacing it; small synthetic sets with a planted signal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from router_ml.learn import training
from router_ml.learn.rows import Rows
from router_ml.learn.warm import Prior, WarmStartEstimator, choose_warm


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# the prior: difficulty along feature 0; the truth of the team's rows: along feature 1
PRIOR_COEF = np.array([1.5, 0.0, 0.0, 0.0])
PRIOR_AB = np.array([[2.0, -1.0], [0.5, -1.5]])  # (a, s) of "big" and "small"


def _team_rows(n, seed=0):
    """X (n, 4) and 0/1 outcomes of two models whose true logit follows feature 1 alone."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    truth = np.column_stack([2.0 - 1.0 * X[:, 1], 0.5 - 2.5 * X[:, 1]])
    Y = (rng.random((n, 2)) < _sigmoid(truth)).astype(float)
    return X, Y, _sigmoid(truth)


def _prior_quality(X):
    d = X @ PRIOR_COEF
    return _sigmoid(PRIOR_AB[:, 0] + PRIOR_AB[:, 1] * d[:, None])


def _estimator(**kw):
    return WarmStartEstimator(prior_coef=PRIOR_COEF, prior_intercept=0.0, abilities=PRIOR_AB,
                              **kw)


def test_few_rows_stay_near_the_prior_and_many_move_to_the_planted_truth():
    X_new, _, truth_new = _team_rows(2000, seed=9)
    prior_new = _prior_quality(X_new)
    dist = {}
    for n in (20, 5000):
        X, Y, _ = _team_rows(n)
        V = _estimator(C=0.01, C_ability=0.01).fit(X, Y).decision_function(X_new)
        dist[n] = (np.abs(V - prior_new).mean(), np.abs(V - truth_new).mean())
    few, many = dist[20], dist[5000]
    assert few[0] < 0.05 < few[1]  # 20 rows: still the prior, far from the truth
    assert many[1] < 0.05 < many[0]  # 5,000 rows: the truth, far from the prior
    # C = 0 is the prior itself, whatever the rows say
    X, Y, _ = _team_rows(5000)
    V = _estimator(C=0.0, C_ability=0.0).fit(X, Y).decision_function(X_new)
    np.testing.assert_allclose(V, prior_new, atol=1e-12)


def test_the_shrinkage_is_chosen_on_held_out_folds():
    """Where the prior is wrong and rows are many, the search leaves it: the chosen strengths
    have the least held-out log-loss of the grid and route the held-out rows far better than
    the prior; a prior that is right is kept with few rows."""
    X, Y, _ = _team_rows(3000)
    many = choose_warm(_estimator(), X, Y, None)
    assert many["C"] > 0 and many["log_loss"] == min(many["log_losses"].values())
    assert many["log_losses"]["C=0 C_ability=0"] > many["log_loss"] + 0.05
    assert many["scores"]["gain C=0 C_ability=0"] < many["score"] - 0.05
    # the prior is the truth: a few rows cannot tell the grid apart, and a small C keeps it
    rng = np.random.default_rng(1)
    Xf = rng.normal(size=(120, 4))
    Yf = (rng.random((120, 2)) < _prior_quality(Xf)).astype(float)
    few = choose_warm(_estimator(), Xf, Yf, None, repeats=3)
    V = _estimator(C=few["C"], C_ability=few["C_ability"]).fit(Xf, Yf).decision_function(X)
    assert np.corrcoef(V[:, 0] - V[:, 1], (_prior_quality(X) @ [1, -1]))[0, 1] > 0.9


def test_the_corrected_heads_are_averaged_with_their_nearest_rows_qualities():
    X, Y, _ = _team_rows(400)
    X_new = _team_rows(30, seed=5)[0]
    plain = _estimator(C=0.1).fit(X, Y).heads_.head_values(X_new)
    mixed = _estimator(C=0.1, neighbours=25).fit(X, Y).heads_.head_values(X_new)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Tn = X_new / np.linalg.norm(X_new, axis=1, keepdims=True)
    near = np.argsort(-(Tn @ Xn.T), axis=1, kind="stable")[:, :25]
    np.testing.assert_allclose(mixed, 0.5 * plain + 0.5 * Y[near].mean(axis=1), atol=1e-6)


def test_a_model_unknown_to_the_prior_gets_its_ability_from_the_rows():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4000, 4))
    d = X @ PRIOR_COEF
    Y = (rng.random((4000, 2)) < _sigmoid(np.column_stack([2.0 - d, -0.7 - 0.6 * d]))).astype(float)
    abilities = np.array([[2.0, -1.0], [np.nan, np.nan]])
    est = WarmStartEstimator(prior_coef=PRIOR_COEF, prior_intercept=0.0, abilities=abilities,
                             C=0.0, C_ability=0.0).fit(X, Y)
    np.testing.assert_allclose(est.abilities_[0], [2.0, -1.0])
    np.testing.assert_allclose(est.abilities_[1], [-0.7, -0.6], atol=0.1)


def test_prior_abilities_come_from_the_public_outcomes_by_name():
    prior = Prior(np.zeros(3), 0.0, {"GPT-4o": (1.0, -1.0)})
    ab = prior.abilities_of(["gpt-4o", "mine-7b"])
    assert ab[0].tolist() == [1.0, -1.0] and np.isnan(ab[1]).all()
    assert prior.difficulty_weights(5).tolist() == [0.0] * 5
    with pytest.raises(ValueError, match="must start with the prior's 3"):
        prior.difficulty_weights(2)


def test_a_model_whose_public_outcomes_all_match_the_team_rows_is_unknown_to_the_prior():
    """The prior drops the public rows that match the team's; a model left without any is
    learnt from the team's rows, as a model the default never met."""
    from router_ml.learn.rows import union
    from router_ml.learn.warm import prior_outcomes

    team = _team(40)
    mine = Rows(team.prompts, team.quality[:, :1], ("mine-7b",), team.groups, team.sources)
    outcomes, dropped = prior_outcomes(union([_public(), mine]), team)
    assert dropped == 40
    prior = Prior.fit(outcomes)
    assert sorted(prior.abilities) == ["big", "x", "y"]
    assert np.isnan(prior.abilities_of(["mine-7b"])).all()


def test_bad_input_is_a_clear_error():
    X, Y, _ = _team_rows(50)
    with pytest.raises(ValueError, match="one weight per feature"):
        WarmStartEstimator(prior_coef=np.zeros(3)).fit(X, Y)
    with pytest.raises(ValueError, match=r"abilities must be \(a, s\) per output"):
        WarmStartEstimator(abilities=np.zeros((3, 2))).fit(X, Y)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        _estimator().fit(X, Y * 2)
    with pytest.raises(ValueError, match="public outcomes"):
        Prior.fit(None)


# ---------------------------------------------------------------- through the training recipe

KINDS = ["prove the theorem about", "say hello to"]


def _rows(n, models, source, p_ok, seed):
    rng = np.random.default_rng(seed)
    prompts, Q = [], []
    for i in range(n):
        hard = i % 2 == 0
        prompts.append(f"{KINDS[0 if hard else 1]} item {source} {i}")
        Q.append([float(rng.random() < p_ok(m, hard)) for m in models])
    src = np.array([source] * n, dtype=object)
    return Rows(prompts, np.array(Q), tuple(models), src, src)


def _public():
    """Every model's public outcomes: hard prompts are hard for all, "big" is able."""
    return _rows(300, ["big", "x", "y"], "public",
                 lambda m, hard: (0.8 if m == "big" else 0.25) if hard else 0.95, seed=3)


def _team(n=120):
    # "small" is unknown to the prior: its ability comes from these rows
    return _rows(n, ["big", "small"], "mine",
                 lambda m, hard: 0.9 if m == "big" or not hard else 0.2, seed=4)


def test_the_warm_router_saves_as_numpy_heads_and_reloads_with_the_same_scores(tmp_path):
    from router_ml import load_router

    config = training.TrainConfig(estimator="warm", encoder="static+surface", extra=(),
                                  coverage=None)
    router = training.fit_router(_team(), config, outcomes=_public())
    info = router.training
    assert info["heads"] == "warm-start"
    # a pair: the corrected heads take the nearest training rows as the heads from scratch do
    assert info["neighbours"] == 100 and router.state.heads.neighbours.k == 100
    assert info["warm_start"]["models_from_prior"] == ["big"]
    assert info["warm_start"]["models_from_rows"] == ["small"]
    probes = ["prove the theorem about item new 1", "say hello to item new 2"]
    hard, easy = router.score(probes)
    assert hard > easy
    router.save(tmp_path / "r")
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["estimator"]["type"] == "heads"
    assert not list((tmp_path / "r").glob("*.skops"))
    again = load_router(tmp_path / "r")
    assert again.score_rule == router.score_rule
    np.testing.assert_allclose(again.score(probes), router.score(probes), atol=1e-12)
    np.testing.assert_allclose(again.predict_quality(probes), router.predict_quality(probes),
                               atol=1e-12)
    # what a service loads: numpy alone, no scikit-learn
    import subprocess
    import sys

    code = ("import sys; from router_ml import load_router; "
            f"r = load_router({str(tmp_path / 'r')!r}); r.route('What is 2+2?'); "
            "print(sorted(m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_warm_start_needs_the_prior_or_its_outcomes():
    config = training.TrainConfig(estimator="warm", extra=(), coverage=None)
    with pytest.raises(ValueError, match="public outcomes"):
        training.fit_router(_team(), config)


def _table(tmp_path, n=120):
    team = _team(n)
    lines = ["prompt,big,small"] + [f"{p},{int(q[0])},{int(q[1])}"
                                    for p, q in zip(team.prompts, team.quality)]
    path = tmp_path / "logs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def public_outcomes(monkeypatch):
    """The public outcomes the CLI's warm start reads, without the data folder."""
    from router_ml.learn import protocols

    seen = []

    def fake(sources, data_dir=None):
        seen.append(tuple(sources))
        return _public()

    monkeypatch.setattr(protocols, "outcome_rows", fake)
    return seen


def _train(tmp_path, *flags):
    from router_ml import load_router
    from router_ml.cli.train import train_main

    out = tmp_path / ("r" + "".join(flags).replace("-", "_"))
    rc = train_main(["--table", str(_table(tmp_path)), "--model-columns", "big,small",
                     "--out", str(out), "--no-tracking", "--jobs", "1", *flags])
    return rc, (load_router(out) if rc == 0 else None)


def test_table_training_warm_starts_by_default(tmp_path, public_outcomes):
    rc, router = _train(tmp_path)
    assert rc == 0 and router.training["heads"] == "warm-start"
    assert public_outcomes == [training.DEFAULT_ROUTER.outcomes]
    assert router.training["config"]["estimator"] == "warm"


@pytest.mark.parametrize("flags", [("--no-prior-router",), ("--estimator", "heads")])
def test_no_prior_router_and_heads_give_the_heads_from_scratch(tmp_path, public_outcomes,
                                                                flags):
    """The previous --table behaviour: gain heads on the rows alone, the same router as the
    recipe's heads configuration, and no public outcomes read."""
    rc, router = _train(tmp_path, *flags)
    assert rc == 0 and router.training["heads"] == "logistic" and public_outcomes == []
    from router_ml.learn.tables import load_table
    from router_ml.learn.rows import rows_of
    from router_ml.learn.sources import models_of

    ds = load_table(_table(tmp_path), prompt_column="prompt", model_columns=["big", "small"])
    config = training.TrainConfig(extra=(), n_jobs=1)
    expect = training.fit_router(rows_of(ds, list(models_of(ds)), complete=True), config)
    probes = ["prove the theorem about item new 1", "say hello to item new 2"]
    np.testing.assert_allclose(router.score(probes), expect.score(probes), atol=1e-9)
    assert router.threshold == pytest.approx(expect.threshold)


def test_no_prior_router_with_the_warm_estimator_is_an_error(tmp_path, public_outcomes, capsys):
    rc, _ = _train(tmp_path, "--no-prior-router", "--estimator", "warm")
    assert rc != 0 and "--no-prior-router" in capsys.readouterr().err


def test_the_warm_start_without_the_data_names_the_way_out(tmp_path, monkeypatch, capsys):
    from router_ml.learn import protocols

    def missing(sources, data_dir=None):
        raise FileNotFoundError("no data folder at /nowhere")

    monkeypatch.setattr(protocols, "outcome_rows", missing)
    # by default (--table alone) it trains heads from the rows and says why
    rc, router = _train(tmp_path)
    out = capsys.readouterr().out
    assert rc == 0 and router.training["heads"] != "warm-start"
    assert "/nowhere" in out and "--data-dir" in out
    # asked for by name, the warm start's missing data is an error that names the way out
    rc, _ = _train(tmp_path, "--estimator", "warm")
    err = capsys.readouterr().err
    assert rc != 0 and "/nowhere" in err and "--no-prior-router" in err


def test_table_training_with_another_encoder_trains_heads(tmp_path, public_outcomes):
    rc, router = _train(tmp_path, "--encoder", "tfidf")
    assert rc == 0 and router.training["heads"] != "warm-start"


def test_the_learning_curve_compares_the_warm_start_with_the_better_of_the_other_two():
    from conftest import load_benchmark

    bench = load_benchmark("bench_learning_curve")

    def runs(heads, warm):
        return {"heads": [{"value": v} for v in heads], "warm": [{"value": v} for v in warm]}

    # heads from scratch beat the zero-shot: the margin is paired over seeds
    s = bench._summary(runs([0.60, 0.62, 0.64], [0.595, 0.625, 0.63]), 0.55, 300)
    assert s["margin"]["against"] == "heads"
    assert s["margin"]["mean"] == pytest.approx(-0.01 / 3)
    se = np.std([-0.005, 0.005, -0.01], ddof=1) / np.sqrt(3)
    assert s["margin"]["se"] == pytest.approx(se) and s["met"] is True  # within one error
    s = bench._summary(runs([0.60, 0.62, 0.64], [0.58, 0.60, 0.62]), 0.55, 300)
    assert s["margin"]["se"] == 0.0 and s["met"] is False  # 0.02 short, no spread at all
    # the zero-shot is the better one: the margin is against it
    s = bench._summary(runs([0.50, 0.52, 0.54], [0.60, 0.61, 0.62]), 0.58, 100)
    assert s["margin"]["against"] == "zero-shot" and s["met"] is True
    md = bench.to_markdown({"mmlu": {"metric": "APGR", "folds": 1, "train_rows": [1000],
                                     "test_rows": 50, "zero_shot": {"value": 0.58},
                                     "sizes": {"100": s}}})
    row = "| 100 | 0.580 | 0.520 ± 0.012 | 0.610 ± 0.006 | +0.030 ± 0.006 (zero-shot) | yes |"
    assert row in md


def test_the_warm_start_keeps_whichever_routes_the_held_out_rows_better():
    from router_ml.learn.training import warm_or_scratch

    rng = np.random.default_rng(0)
    n = 600
    strong_needed = rng.random(n) < 0.5
    Y = np.column_stack([np.ones(n), (~strong_needed).astype(float)])  # strong, weak
    right = np.column_stack([np.full(n, 0.9), np.where(strong_needed, 0.1, 0.9)])
    noise = np.column_stack([np.full(n, 0.9), rng.random(n)])
    choice = warm_or_scratch(Y, noise, right, None, "gain")
    assert choice["chosen"] == "scratch" and choice["scratch"] - choice["warm"] > choice["se"]
    assert warm_or_scratch(Y, right, noise, None, "gain")["chosen"] == "warm"
    # the same predictions: no lead at all, the prior stays
    assert warm_or_scratch(Y, right, right.copy(), None, "gain")["chosen"] == "warm"
    # a small lead: the better wins by default; a margin in standard errors keeps the prior
    slightly = right.copy()
    flip = np.flatnonzero(strong_needed)[:2]
    slightly[flip, 1] = 0.95  # the warm start misses 2 rows that need the strong model
    small = warm_or_scratch(Y, slightly, right, None, "gain")
    assert 0 < small["scratch"] - small["warm"] < 2 * small["se"]
    assert small["chosen"] == "scratch" and small["margin"] == 0
    assert warm_or_scratch(Y, slightly, right, None, "gain", margin=2)["chosen"] == "warm"


def test_a_kept_scratch_is_the_router_estimator_heads_fits(monkeypatch):
    """When the warm start keeps the heads from scratch, they are the very heads (features as
    the encoder gives them, same choice, same knob) that estimator "heads" fits."""
    team = _team(300)
    real = training.warm_or_scratch

    def keep_scratch(*args, **kw):
        return {**real(*args, **kw), "chosen": "scratch"}

    monkeypatch.setattr(training, "warm_or_scratch", keep_scratch)
    warm = training.fit_router(team, training.TrainConfig(estimator="warm", extra=(),
                                                          coverage=None), outcomes=_public())
    heads = training.fit_router(team, training.TrainConfig(extra=(), coverage=None))
    assert warm.training["warm_start"]["choice"]["chosen"] == "scratch"
    probes = ["prove the theorem about item new 1", "say hello to item new 2"]
    np.testing.assert_allclose(warm.predict_quality(probes), heads.predict_quality(probes),
                               atol=1e-12)
    np.testing.assert_allclose(warm.score(probes), heads.score(probes), atol=1e-12)
    assert warm.threshold == heads.threshold
