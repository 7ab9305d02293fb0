"""``router-ml report``: the report of a decision log (:func:`router_ml.loop.monitoring.report`),
printed, as JSON or as a dashboard."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from router_ml.errors import RouterMLError
from router_ml.loop.monitoring import PSI_ALERT, dashboard, format_report, report


def _read_scores(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".json":
        return np.asarray(json.loads(path.read_text()), float)
    return np.loadtxt(path, dtype=float, ndmin=1)


def report_main(argv=None) -> int:
    """``router-ml report LOG_DIR``: print the report; --json and --dashboard write it."""
    p = argparse.ArgumentParser(prog="router-ml report", description="Report on a decision "
                                "log: share per model, escalations, spend, drift, sampled quality.")
    p.add_argument("log", type=Path, help="the decision log folder")
    p.add_argument("--since", help="ISO time or Unix seconds (UTC)")
    p.add_argument("--until", help="ISO time or Unix seconds (UTC)")
    p.add_argument("--reference", type=Path, help="reference scores (.npy, .json or text, one "
                   "per line), e.g. the router's scores on its training prompts")
    p.add_argument("--psi-alert", type=float, default=PSI_ALERT)
    p.add_argument("--buckets", type=int, default=10, help="time buckets of the escalation trend")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--dashboard", type=Path, help="write a PNG dashboard here")
    p.add_argument("--fail-on-alert", action="store_true", help="exit 2 when there is an alert")
    args = p.parse_args(argv)
    num = lambda t: float(t) if t and re.fullmatch(r"[\d.]+", t) else t  # noqa: E731
    try:
        ref = _read_scores(args.reference) if args.reference else None
        rep = report(args.log, num(args.since), num(args.until), ref, buckets=args.buckets,
                     psi_alert=args.psi_alert)
    except (RouterMLError, OSError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(format_report(rep))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2) + "\n")
    if args.dashboard:
        print(f"dashboard: {dashboard(rep, args.dashboard)}")
    return 2 if args.fail_on_alert and rep["alerts"] else 0


__all__ = ['report_main']
