"""Routing quality on every protocol: baselines, reference configurations and the default.

    python benchmarks/bench_quality.py [--configs default,tfidf,minilm] [--protocols ...]

Each learned configuration is trained per fold with the same recipe as training/train.py,
saved, reloaded with load_router, and scored on the test rows from the reloaded router; k-fold
protocols pool their out-of-fold scores into one curve. Writes reports/quality.json and
reports/quality.md, and logs one mlflow run per configuration (--no-tracking to skip).
The MiniLM reference encodes every prompt once (about 10 minutes cold, cached on disk after).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from router_ml import evaluation, load_router
from router_ml.data import STRONG_MODEL, WEAK_MODEL
from router_ml.cli import PUBLISHED, baseline_scores, pooled_scores
from router_ml.protocols import PROTOCOLS, protocol_folds
from router_ml.tracking import Tracker
from router_ml.training import TrainConfig, fit_router

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"mmlu": 0.72, "mmlu-subjects": 0.65, "gsm8k": 0.70, "mmlu-to-gsm8k": 0.65}
CONFIGS = {
    "default": ("default", TrainConfig()),
    "tfidf": ("T + LR", TrainConfig(encoder="tfidf", label="strong_better", C=1.0)),
    "minilm": ("E + LR", TrainConfig(encoder="minilm", label="strong_better", C=1.0)),
    "accurate": ("E + stats, gain", TrainConfig(encoder="minilm+stats")),
}


def run_config(config: TrainConfig, folds, workdir: Path) -> tuple[np.ndarray, float]:
    """Out-of-fold scores from saved-and-reloaded routers, and the training seconds."""
    t0 = time.perf_counter()
    routers = {}
    for f in folds:
        path = workdir / f"fold-{f.k}"
        fit_router(f.train, config, STRONG_MODEL, WEAK_MODEL).save(path)
        routers[f.k] = path
    seconds = time.perf_counter() - t0
    scores, *_ = pooled_scores(folds, lambda f: load_router(routers[f.k]).score(f.test.prompts))
    return scores, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="default,tfidf,minilm,accurate",
                   help=f"comma-separated, from: {', '.join(CONFIGS)}")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    p.add_argument("--no-tracking", action="store_true")
    args = p.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            p.error(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    tracker = Tracker(experiment="router_ml-bench-quality", enabled=not args.no_tracking)
    tracker.check()
    results = {}
    for protocol in args.protocols.split(","):
        folds = protocol_folds(protocol)
        _, qs, qw, prompts = pooled_scores(folds, lambda f: np.zeros(len(f.test)))
        rows = {}
        for b in ("random", "length"):
            rows[b] = evaluation.evaluate(baseline_scores(b, prompts), qs, qw).to_dict()
        for c in configs:
            label, config = CONFIGS[c]
            print(f"[{protocol}] training {label} ({len(folds)} fold(s))", flush=True)
            with tempfile.TemporaryDirectory() as tmp, \
                    tracker.run(f"{protocol}-{c}", {**config.to_dict(), "protocol": protocol}) as run:
                scores, seconds = run_config(config, folds, Path(tmp))
                rep = evaluation.evaluate(scores, qs, qw).to_dict()
                rep["train_seconds"] = round(seconds, 1)
                run.log_metrics(rep)
            rows[label] = rep
            print(f"[{protocol}] {label}: APGR {rep['apgr']:.3f}, CPT50 {rep['cpt50']:.3f}", flush=True)
        results[protocol] = {"n": len(prompts), "rows": rows, "published": PUBLISHED.get(protocol),
                             "target_apgr": TARGETS.get(protocol)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    md = to_markdown(results)
    (args.out / "quality.md").write_text(md)
    print(md)
    return 0


def to_markdown(results: dict) -> str:
    labels = []
    for r in results.values():
        labels += [k for k in r["rows"] if k not in labels]
    head = "| protocol | n | " + " | ".join(labels) + " | oracle | RouteLLM (published) | target |"
    lines = ["APGR (CPT(50%) in brackets). Command: `make bench-quality`.", "", head,
             "|" + "---|" * (len(labels) + 5)]
    for proto, r in results.items():
        first = next(iter(r["rows"].values()))
        cells = []
        for k in labels:
            v = r["rows"].get(k)
            cells.append("-" if v is None else f"{v['apgr']:.3f} ({100 * v['cpt50']:.1f} %)")
        pub = r["published"]
        pub_s = f"{pub['apgr']:.3f} ({100 * pub['cpt50']:.1f} %)" if pub else "-"
        lines.append(f"| {proto} | {r['n']} | " + " | ".join(cells)
                     + f" | {first['oracle_apgr']:.3f} | {pub_s} | {r['target_apgr'] or '-'} |")
    missed = []
    for proto, r in results.items():
        d = r["rows"].get("default")
        if d and r["target_apgr"] and d["apgr"] < r["target_apgr"]:
            missed.append(f"- {proto}: default APGR {d['apgr']:.3f} < target {r['target_apgr']}")
    if missed:
        lines += ["", "Targets not met:", *missed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
