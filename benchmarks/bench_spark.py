"""Prompts per second: in-process ``router.score`` vs a local Spark session (local[2]).

    python benchmarks/bench_spark.py [--model models/default] [--sizes 10000,100000,1000000]
        [--cores 2]

The same synthetic prompts (templates with a row number) are scored in one process and with
:func:`router_ml.serve.spark.score_dataframe` on ``local[cores]``; Spark time covers the whole job
(generating the rows inside Spark, the pandas UDF, an aggregate that forces every score), with
the session already started and warmed up. Checks that both sums of scores agree. Prints one
row per size. Not part of ``make test``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEMPLATES = ["What is the capital of country number {}?",
             "Prove that the sequence a_n = n^2 + {} diverges, step by step.",
             "Write a short poem about the number {}.",
             "Solve 3x + {} = 22 for x and explain each step of the algebra carefully.",
             "Question: which of the following is NOT a prime? A) 2 B) 3 C) {} D) 7\nAnswer:"]


def prompts(n):
    return [TEMPLATES[i % len(TEMPLATES)].format(i) for i in range(n)]


def spark_prompts(spark, n):
    from pyspark.sql import functions as F

    parts = [t.split("{}") for t in TEMPLATES]
    k = F.col("id") % len(TEMPLATES)
    expr = None
    for j, (a, b) in enumerate(parts):
        text = F.concat(F.lit(a), F.col("id").cast("string"), F.lit(b))
        expr = F.when(k == j, text) if expr is None else expr.when(k == j, text)
    return spark.range(n, numPartitions=max(2, n // 50_000)).select(expr.alias("prompt"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "default"))
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    from pyspark.sql import functions as F

    from router_ml import load_router
    from router_ml.serve.spark import local_session, score_dataframe

    router = load_router(args.model)
    spark = local_session(args.cores)
    spark.sparkContext.setLogLevel("ERROR")
    score_dataframe(spark_prompts(spark, 1000), args.model).agg(F.sum("score")).collect()
    rows = []
    print(f"{'rows':>9} {'in-process /s':>14} {'spark /s':>10} {'spark/in-process':>17}")
    for n in map(int, args.sizes.split(",")):
        texts = prompts(n)
        t0 = time.perf_counter()
        total_local = float(router.score(texts).sum())
        t_local = time.perf_counter() - t0
        del texts
        t0 = time.perf_counter()
        total_spark = score_dataframe(spark_prompts(spark, n), args.model) \
            .agg(F.sum("score")).collect()[0][0]
        t_spark = time.perf_counter() - t0
        assert abs(total_spark - total_local) <= 1e-6 * n, (total_spark, total_local)
        r = {"rows": n, "in_process_per_s": round(n / t_local), "spark_per_s": round(n / t_spark),
             "in_process_s": round(t_local, 2), "spark_s": round(t_spark, 2)}
        rows.append(r)
        print(f"{n:>9} {r['in_process_per_s']:>14,} {r['spark_per_s']:>10,} "
              f"{t_local / t_spark:>16.2f}x", flush=True)
    spark.stop()
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
