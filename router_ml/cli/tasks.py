"""``router-ml tasks eval``: how well a rules file's task definitions name the task of a team's
labelled prompts (per-task precision and recall, and the confusion matrix).

    router-ml tasks eval --rules rules.toml --table labelled.csv [--prompt-column prompt]
        [--task-column task] [--json]

The rules file's ``[tasks.*]`` tables are the definitions (the default task set when it has
none); the table is a CSV, JSONL or Parquet file with a prompt and a task column.
"""

from __future__ import annotations

import argparse
import json
import sys

from router_ml.errors import DataFormatError, RouterMLError


def tasks_parser(prog: str = "router-ml tasks") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Task types defined by example.")
    sub = p.add_subparsers(dest="action", required=True)
    e = sub.add_parser("eval", help="per-task precision and recall of a rules file's tasks on "
                       "labelled prompts")
    e.add_argument("--rules", required=True, help="rules file (.toml, .json, .yaml) whose "
                   "[tasks.*] tables define the tasks (none: the default task set)")
    e.add_argument("--table", required=True, help="labelled prompts (.csv, .jsonl, .parquet)")
    e.add_argument("--prompt-column", default="prompt")
    e.add_argument("--task-column", default="task")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def evaluate_tasks(tasks, prompts, labels) -> dict:
    """Accuracy, per-task precision/recall/support and the confusion matrix of a
    :class:`~router_ml.loop.tasks.TaskDetector` on ``tasks`` over labelled prompts. Columns
    of the matrix: the labels (the defined tasks first); columns: the defined tasks, then
    ``(none)`` (below every threshold)."""
    from router_ml.loop.tasks import TaskDetector

    detected = [t for t, _ in TaskDetector(tasks).detect_batch(prompts)]
    rows = [n for n in list(tasks) + sorted(set(labels) - set(tasks)) if n in set(labels)]
    columns = list(tasks) + ["(none)"]
    counts = {r: dict.fromkeys(columns, 0) for r in rows}
    for truth, got in zip(labels, detected):
        counts[truth][got if got is not None else "(none)"] += 1
    per_task = {}
    for name in tasks:
        tp = counts.get(name, {}).get(name, 0)
        predicted = sum(counts[r][name] for r in rows)
        support = sum(counts[name].values()) if name in counts else 0
        per_task[name] = {"precision": tp / predicted if predicted else None,
                          "recall": tp / support if support else None,
                          "detected": predicted, "labelled": support}
    right = sum(t == d for t, d in zip(labels, detected))
    return {"n": len(prompts), "accuracy": right / len(prompts) if prompts else None,
            "per_task": per_task, "undefined_labels": sorted(set(labels) - set(tasks)),
            "confusion": {"rows": rows, "columns": columns,
                          "counts": [[counts[r][c] for c in columns] for r in rows]}}


def _pct(x) -> str:
    return "   -" if x is None else f"{x:6.1%}"


def format_report(res: dict) -> str:
    lines = [f"{res['n']} labelled prompts, accuracy {_pct(res['accuracy']).strip()}", "",
             f"{'task':<20} {'precision':>9} {'recall':>7} {'detected':>8} {'labelled':>8}"]
    for name, s in res["per_task"].items():
        lines.append(f"{name:<20} {_pct(s['precision']):>9} {_pct(s['recall']):>7} "
                     f"{s['detected']:>8} {s['labelled']:>8}")
    if res["undefined_labels"]:
        lines += ["", "labels no task defines (always wrong): "
                  + ", ".join(res["undefined_labels"])]
    c = res["confusion"]
    width = max(8, *(len(x) for x in c["columns"] + c["rows"]))
    lines += ["", "confusion (rows: label, columns: detected)",
              " " * width + "".join(f" {x[:width]:>{width}}" for x in c["columns"])]
    for r, row in zip(c["rows"], c["counts"]):
        lines.append(f"{r[:width]:<{width}}" + "".join(f" {v:>{width}}" for v in row))
    return "\n".join(lines)


def tasks_main(argv=None, prog: str = "router-ml tasks") -> int:
    args = tasks_parser(prog).parse_args(argv)
    from router_ml.learn.tables import read_table
    from router_ml.loop.tasks import load_tasks

    try:
        tasks = load_tasks(args.rules)
        path, columns, rows, bad = read_table(args.table, args.prompt_column)
        for what, col in (("--prompt-column", args.prompt_column),
                          ("--task-column", args.task_column)):
            if col not in columns:
                raise DataFormatError(f"{path}: no column {col!r} ({what}); columns: "
                                    f"{', '.join(map(str, columns))}")
        prompts, labels, skipped = [], [], 0
        for r in rows:
            p, t = r.get(args.prompt_column), r.get(args.task_column)
            if not isinstance(p, str) or not p.strip() or t is None or str(t).strip() == "":
                skipped += 1
                continue
            prompts.append(p)
            labels.append(str(t).strip())
        if not prompts:
            raise DataFormatError(f"{path}: no row has both a prompt ({args.prompt_column!r}) and "
                                f"a task ({args.task_column!r})")
        res = evaluate_tasks(tasks, prompts, labels)
    except (RouterMLError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res["skipped_rows"] = skipped + bad
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(format_report(res))
        if res["skipped_rows"]:
            print(f"\n{res['skipped_rows']} rows skipped (no prompt or no task, or malformed)")
    return 0
