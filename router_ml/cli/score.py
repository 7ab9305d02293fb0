"""``router-ml score``: a saved router scores a Parquet, CSV or JSONL file
(:mod:`router_ml.serve.batch`), or a Parquet file on a local Spark
(:mod:`router_ml.serve.spark`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router_ml.errors import DataFormatError, RouterMLError
from router_ml.serve.batch import score_file


def score_parser(prog: str = "router-ml score") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Add the chosen model, for a pair "
                                "its score, and every candidate's predicted quality "
                                "(quality:<model>) to a Parquet, CSV or JSONL file of prompts, "
                                "batch by batch.")
    p.add_argument("--model", required=True, type=Path, help="router directory")
    p.add_argument("--input", required=True, type=Path, help="Parquet, CSV or JSONL file "
                   "(with --spark: anything spark.read.parquet reads)")
    p.add_argument("--output", required=True, type=Path, help="output file (format by "
                   "suffix); with --spark a Parquet directory")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--messages-column", default=None,
                   help="score each row's chat instead of a prompt: a column of JSON lists of "
                   '{"role", "content"} messages (or, in Parquet, lists of structs), scored '
                   "on their user turns, newest first, as route scores messages")
    p.add_argument("--tasks", type=Path, default=None,
                   help="a rules file whose [tasks.*] tables (else the default task set) name "
                        "each row's task: adds the columns task and task_similarity")
    p.add_argument("--batch-size", type=int, default=10_000)
    p.add_argument("--spark", action="store_true", help="score on a local SparkSession")
    p.add_argument("--spark-cores", type=int, default=2, help="local[N] for --spark")
    p.add_argument("--no-progress", action="store_true")
    return p


def score_main(argv=None, prog: str = "router-ml score") -> int:
    args = score_parser(prog).parse_args(argv)
    try:
        tasks = None
        if args.tasks:
            from router_ml.loop.tasks import TaskDetector, load_tasks

            tasks = TaskDetector(load_tasks(args.tasks))
        if args.spark:
            from router_ml.serve.spark import score_parquet

            n = score_parquet(args.model, args.input, args.output, args.prompt_column,
                              cores=args.spark_cores, messages_column=args.messages_column,
                              tasks=tasks)
        else:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DataFormatError("router-ml score needs pyarrow: "
                                      "pip install 'router_ml[spark]'") from None
            from router_ml.core.router import load_router

            n = score_file(load_router(args.model), args.input, args.output,
                           args.prompt_column, args.batch_size, progress=not args.no_progress,
                           messages_column=args.messages_column, tasks=tasks)
    except (RouterMLError, ImportError, OSError) as e:  # OSError: e.g. no permission to write
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(f"scored {n} rows into {args.output}")
    return 0


__all__ = ['score_main', 'score_parser']
