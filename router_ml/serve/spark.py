"""Scoring a Spark DataFrame's prompt column (or chat column) with a saved router (pandas UDF).

    from router_ml.serve.spark import local_session, score_dataframe
    spark = local_session(cores=2)
    scored = score_dataframe(spark.read.parquet("logs.parquet"), "models/default")

The router directory is shipped to the executors with ``SparkContext.addFile`` and loaded
(with all of ``load_router``'s checks) once per Python worker; each Arrow batch of prompts is
routed as ``router.route_batch`` routes it. The columns added are those of ``router-ml score``
(:func:`router_ml.serve._columns.output_columns`): ``model``, ``score`` for a pair, and
``quality:<model>`` per candidate, and with ``tasks`` (a
:class:`router_ml.loop.tasks.TaskDetector`, shipped with the job) ``task`` and
``task_similarity``, as ``router-ml score --tasks`` names them. Results equal in-process scoring
(float64, to 1e-6).
Alternatively ``mlflow.pyfunc.spark_udf(spark, "models:/NAME@champion")`` works on the same
directory (see :mod:`router_ml.serve.mlflow_flavor`).

Needs pyspark, pandas and pyarrow (``pip install 'router_ml[spark]'``) and a Java runtime.
"""


import os
import sys
import threading
from pathlib import Path

_ROUTERS: dict[str, object] = {}
_LOCK = threading.Lock()


def local_session(cores: int = 2, app_name: str = "router_ml", memory: str = "2g"):
    """A local SparkSession (``local[cores]``) bound to 127.0.0.1, without the web UI, whose
    Python workers run this interpreter."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master(f"local[{cores}]").appName(app_name)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.memory", memory)
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.shuffle.partitions", str(max(2, cores)))
            .getOrCreate())


def _router(name: str):
    """The router shipped as ``name`` (SparkFiles), loaded once per worker process."""
    with _LOCK:
        router = _ROUTERS.get(name)
        if router is None:
            from pyspark import SparkFiles

            from router_ml.core.router import load_router

            router = _ROUTERS[name] = load_router(SparkFiles.get(name))
        return router


def _score_series(name: str, messages_column: str | None = None, tasks=None):
    import pandas as pd

    from router_ml.serve._columns import decision_columns

    def score(prompts: pd.Series) -> pd.DataFrame:
        prompts = prompts.tolist()
        if messages_column:  # JSON chats: the text route scores for their messages
            from router_ml.core.prompts import chat_texts

            prompts = chat_texts(prompts, f"the DataFrame's {messages_column!r} at batch")
        cols = list(decision_columns(_router(name), prompts).values())
        if tasks is not None:
            found = tasks.detect_batch(prompts)
            cols += [[t for t, _ in found], [s for _, s in found]]
        # positional field names: model names may hold dots, which Spark reads as nesting
        return pd.DataFrame({f"c{i}": v for i, v in enumerate(cols)})

    return score


def _result_type(columns):
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    return StructType([StructField(f"c{i}", StringType() if c in ("model", "task")
                                   else DoubleType())
                       for i, c in enumerate(columns)])


def score_dataframe(df, model_dir, prompt_column: str = "prompt", *,
                    messages_column: str | None = None, tasks=None):
    """``df`` with the columns of ``router-ml score`` from the router saved in ``model_dir``:
    ``model`` (string), ``score`` (double in [0, 1], two-model routers) and
    ``quality:<model>`` (double in [0, 1]) per candidate. Lazy, like any Spark transformation.
    messages_column: score each row's chat instead, a column of JSON lists of ``{"role",
    "content"}`` messages (or an array of such structs), on its user turns, newest first, as
    ``route`` scores messages (:func:`router_ml.core.prompts.chat_texts`). tasks: a
    :class:`router_ml.loop.tasks.TaskDetector`, which adds ``task`` (string, null when no task
    is close enough) and ``task_similarity`` (double), as :func:`router_ml.serve.batch.score_batch`
    does; the detector goes to the executors with the job (its encoder is the package's)."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from router_ml.core.router import load_router
    from router_ml.errors import DataFormatError
    from router_ml.serve._columns import output_columns
    from router_ml.serve.batch import TASK_COLUMNS

    model_dir = Path(model_dir).resolve()
    columns = output_columns(load_router(model_dir))  # fails here, before any job
    if tasks is not None:
        columns = [*columns, *TASK_COLUMNS]
    column = messages_column or prompt_column
    if column not in df.columns:
        raise DataFormatError(f"no column {column!r} in the DataFrame (columns: "
                              f"{', '.join(df.columns)})")
    for c in columns:
        if c in df.columns:
            raise DataFormatError(f"the DataFrame already has a {c!r} column; rename it first")
    sc = df.sparkSession.sparkContext
    sc.addFile(str(model_dir), recursive=True)
    udf = pandas_udf(_score_series(model_dir.name, messages_column, tasks),
                     _result_type(columns))
    tmp = "__router_ml_result"
    arg = F.col(column)
    if messages_column and dict(df.dtypes)[column] != "string":
        arg = F.to_json(arg)  # an array of structs: to the UDF as JSON text
    out = df.withColumn(tmp, udf(arg))
    return out.withColumns({c: F.col(tmp).getField(f"c{i}")
                            for i, c in enumerate(columns)}).drop(tmp)


def score_parquet(model_dir, input_path, output_path, prompt_column: str = "prompt",
                  cores: int = 2, *, messages_column: str | None = None, tasks=None) -> int:
    """Score a Parquet file or directory into a Parquet directory on a local session
    (``messages_column``, ``tasks``: see :func:`score_dataframe`); returns the number of
    rows."""
    spark = local_session(cores)
    df = spark.read.parquet(str(input_path))
    scored = score_dataframe(df, model_dir, prompt_column, messages_column=messages_column,
                             tasks=tasks)
    scored.write.mode("overwrite").parquet(str(output_path))
    return spark.read.parquet(str(output_path)).count()


__all__ = ["local_session", "score_dataframe", "score_parquet"]
