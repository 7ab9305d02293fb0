"""router_ml.serve.spark: 100,000 synthetic prompts scored on a local Spark (local[2]) equal the
in-process scores. Spark runs on 127.0.0.1, started and stopped by the test."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("pyspark")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
if shutil.which("java") is None:
    pytest.skip("no Java runtime (make install installs one)", allow_module_level=True)

from servers import child_env  # noqa: E402

N = 100_000


@pytest.fixture(scope="module")
def spark():
    from router_ml.serve.spark import local_session

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", child_env()["PYTHONPATH"])  # workers import this router_ml
        session = local_session(cores=2, memory="1g")
        try:
            yield session
        finally:
            session.stop()


@pytest.mark.slow
def test_100k_prompts_on_local_spark_equal_in_process(spark, make_router, tmp_path):
    import pandas as pd

    from router_ml.serve.spark import score_dataframe

    router = make_router("tfidf")
    router.save(tmp_path / "router")
    rng = np.random.default_rng(0)
    words = np.array("prove the theorem integral say hello friend compute eigenvalues matrix "
                     "what is capital of france color day today derive equation".split())
    prompts = [" ".join(words[rng.integers(0, len(words), rng.integers(1, 12))]) + f" {i}"
               for i in range(N)]
    df = spark.createDataFrame(pd.DataFrame({"id": np.arange(N), "prompt": prompts}))
    df = df.repartition(4)
    scored = score_dataframe(df, tmp_path / "router").orderBy("id").toPandas()
    assert len(scored) == N and scored["id"].tolist() == list(range(N))
    expected = router.score(prompts)
    np.testing.assert_allclose(scored["score"].to_numpy(), expected, rtol=0, atol=1e-6)
    models = np.where(expected >= router.threshold, router.strong_model, router.weak_model)
    assert (scored["model"].to_numpy() == models).all()
    assert 0.1 < (models == router.strong_model).mean() < 0.9


def test_score_parquet_cli_on_spark(spark, make_router, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from router_ml.cli.main import main

    router = make_router("tfidf")
    router.save(tmp_path / "router")
    prompts = [f"prove the theorem number {i}" if i % 3 else f"say hello {i}" for i in range(300)]
    pq.write_table(pa.table({"prompt": prompts, "k": list(range(300))}), tmp_path / "in.parquet")
    assert main(["score", "--spark", "--model", str(tmp_path / "router"), "--input",
                 str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out")]) == 0
    assert "scored 300 rows" in capsys.readouterr().out
    out = pq.read_table(tmp_path / "out").to_pandas().sort_values("k")
    np.testing.assert_allclose(out["score"].to_numpy(), router.score(prompts), atol=1e-6)


def test_a_router_of_three_models_on_spark(spark, tmp_path):
    """score_dataframe on N models: the chosen model (as route picks it) and one quality column
    per candidate, names exactly as the router's (dots and slashes included)."""
    import pandas as pd

    from conftest import TIER_KINDS, TIER_PRICES, planted_tiers
    from router_ml.learn.spec import RouterSpec
    from router_ml.core.encoders import TfidfEncoder
    from router_ml.serve.spark import score_dataframe

    models = ["openai/gpt-4o", "gpt-3.5-turbo", "small"]  # a dot Spark must not read as nesting
    prices = dict(zip(models, TIER_PRICES.values()))
    prompts, Q, _ = planted_tiers(300)
    router = RouterSpec(TfidfEncoder(min_df=1), models=models, prices=prices, lam=20.0).fit(prompts, Q)
    router.save(tmp_path / "tiers")
    new = [f"{TIER_KINDS[i % 3]} case {i}" for i in range(200)]
    df = spark.createDataFrame(pd.DataFrame({"id": np.arange(200), "prompt": new}))
    scored = score_dataframe(df, tmp_path / "tiers").orderBy("id").toPandas()
    assert list(scored.columns) == ["id", "prompt", "model", *(f"quality:{m}" for m in models)]
    expected = [d.model for d in router.route_batch(new)]
    assert scored["model"].tolist() == expected and len(set(expected)) >= 2
    np.testing.assert_allclose(scored[[f"quality:{m}" for m in models]].to_numpy(),
                               router.predict_quality(new), atol=1e-6)


def test_tasks_on_spark_equal_in_process(spark, make_router, tmp_path, capsys):
    """score --spark --tasks names each row's task as score --tasks does in this process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from router_ml.cli.main import main

    make_router("tfidf").save(tmp_path / "router")
    rules = tmp_path / "rules.toml"
    rules.write_text('[tasks.coding]\nexamples = ["Write a Python function", "Fix this bug in '
                     'my code"]\n[tasks.math]\nexamples = ["Solve for x: 2x = 4", "What is 7 '
                     'times 8?"]\nmin_similarity = 0.2\n')
    kinds = ["Write a function that sorts a list in Python {}", "Solve 3x + {} = 10 for x",
             "Fix the bug in my JavaScript code, line {}", "tell me about the weather {}"]
    prompts = [kinds[i % 4].format(i) for i in range(120)]
    pq.write_table(pa.table({"prompt": prompts, "k": list(range(120))}), tmp_path / "in.parquet")
    args = ["score", "--model", str(tmp_path / "router"), "--input", str(tmp_path / "in.parquet"),
            "--tasks", str(rules)]
    assert main([*args, "--output", str(tmp_path / "here.parquet"), "--no-progress"]) == 0
    assert main([*args, "--output", str(tmp_path / "spark"), "--spark"]) == 0
    assert "scored 120 rows" in capsys.readouterr().out
    here = pq.read_table(tmp_path / "here.parquet").to_pandas().sort_values("k")
    there = pq.read_table(tmp_path / "spark").to_pandas().sort_values("k")
    assert there["task"].tolist() == here["task"].tolist()
    assert {"coding", "math"} <= set(here["task"].dropna())
    np.testing.assert_allclose(there["task_similarity"], here["task_similarity"], atol=1e-6)
