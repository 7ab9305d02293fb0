"""``router-ml label``: candidate models answer prompts and a judge grades them into training rows,
or a decision log's judged samples become rows (:mod:`router_ml.loop.labeling`)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from router_ml.errors import RouterMLError
from router_ml.loop.clients import LiteLLMClient
from router_ml.loop.labeling import label_prompts, rows_from_log


def _read_prompts(path: Path, column: str) -> list[str]:
    if path.suffix.lower() == ".txt":
        return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    with path.open(newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".csv":
            return [r[column] for r in csv.DictReader(f) if r.get(column, "").strip()]
        return [r[column] for r in map(json.loads, filter(str.strip, f)) if str(r.get(column, "")).strip()]


def label_main(argv=None) -> int:
    """``router-ml label``: label prompts with models and a judge, or turn a log into rows."""
    p = argparse.ArgumentParser(prog="router-ml label", description="Turn prompts into training "
                                "rows: candidate models answer, a judge grades (resumable).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", type=Path, help="prompts: .txt (one per line), .csv or .jsonl")
    src.add_argument("--from-log", type=Path, help="a decision log folder: its judged samples")
    p.add_argument("--out", type=Path, required=True, help="the table to append to (.csv, .jsonl)")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--models", help="comma-separated candidate models")
    p.add_argument("--judge", help="the judge model")
    p.add_argument("--mode", choices=("single", "pairwise"), default="single")
    p.add_argument("--baseline", help="pairwise: the model the others are compared with")
    p.add_argument("--api-base", help="OpenAI-compatible server, e.g. http://127.0.0.1:4000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable holding the key")
    p.add_argument("--rate", type=float, help="requests per second")
    p.add_argument("--budget", type=float, help="stop before spending more USD than this")
    p.add_argument("--prices", type=Path, help="price file (JSON, TOML, YAML)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.from_log:
            s = rows_from_log(args.from_log, args.out)
        else:
            if not args.models or not args.judge:
                p.error("--prompts needs --models and --judge")
            from router_ml.core.prices import load_prices

            client = LiteLLMClient(api_base=args.api_base, api_key=os.environ.get(args.api_key_env))
            s = label_prompts(_read_prompts(args.prompts, args.prompt_column),
                              args.models.split(","), client, args.judge, args.out,
                              mode=args.mode, baseline=args.baseline, rate=args.rate,
                              budget_usd=args.budget, prices=load_prices(args.prices),
                              progress=not args.no_progress)
    except (RouterMLError, OSError, ValueError, KeyError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"{s.path}: {s.labelled} rows labelled, {s.skipped} already there, {s.failed} failed, "
          f"${s.cost_usd:.4f} spent" + (f"; stopped: {s.stopped}" if s.stopped else "")
          + f" (scale {s.scale})")
    return 0


__all__ = ['label_main']
