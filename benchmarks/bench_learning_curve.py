"""Learning curve of training on a team's own logs: the default router's zero-shot routing
(its prior alone), heads from scratch and the warm start, trained on 100, 300, 1,000, 3,000
and all of a protocol's training rows, scored on the same test rows.

    python benchmarks/bench_learning_curve.py [--protocols mmlu,gsm8k,mixed,dcrouter] [--seeds 3] [--neighbours K]

The own-logs protocols stand for a team's logs: their training rows (a random subset of the
size, drawn per seed and fold; "all" varies only the folds' seed) train heads from scratch
(``TrainConfig()`` without extra rows: ``router-ml train --table --no-prior-router``) and the
warm start (``TrainConfig(estimator="warm")``: ``router-ml train --table``). The default
zero-shot is the default recipe (:data:`DEFAULT_ROUTER`) trained for the protocol, as
``router-ml train --protocol`` does: it does not depend on the size. Both priors (the
default's, and the warm start's) learn from every model's public outcomes minus the rows that
match a test question (``with_outcomes``); the warm start's prior also leaves out the rows
that match one of the training rows it is corrected with (so the held-out folds that choose
its strength are held out from it too). Pair protocols report APGR, multi-model ones AIQ
(with the share of the best single model's cost at which its quality is reached); the mean
over seeds with its standard error, and the warm start's margin over the better of the other
two with the paired standard error. Writes docs/reports/learning_curve.json (merged with the
protocols already there) and docs/reports/learning_curve.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from router_ml.learn.evaluation import evaluate_rows
from router_ml.learn.protocols import (
    MULTI_PROTOCOLS,
    protocol_folds,
    protocol_prices,
    with_outcomes,
)
from router_ml.learn.training import DEFAULT_ROUTER, TrainConfig, fit_router

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "docs" / "reports"
PROTOCOLS = ("mmlu", "gsm8k", "mixed", "dcrouter", "alpaca-tiers")
SIZES = ("100", "300", "1000", "3000", "all")
METHODS = {"heads": ("heads from scratch", TrainConfig(extra=())),
           "warm": ("warm start", TrainConfig(estimator="warm", extra=()))}


def _metric(report: dict, multi: bool) -> dict:
    if multi:
        return {"value": report["aiq"], "cost_share_at_best": report["cost_share_at_best"]}
    return {"value": report["apgr"]}


def run_protocol(protocol: str, sizes, seeds: int, data_dir=None, log=print,
                 neighbours: int | None = None) -> dict:
    folds = with_outcomes(protocol_folds(protocol, data_dir), DEFAULT_ROUTER.outcomes, data_dir)
    multi = protocol in MULTI_PROTOCOLS
    prices = protocol_prices(protocol, data_dir) if multi else None
    t0 = time.perf_counter()
    zero = {f.k: fit_router(f.train, DEFAULT_ROUTER, prices, outcomes=f.outcomes) for f in folds}
    out = {"metric": "AIQ" if multi else "APGR", "folds": len(folds),
           "train_rows": [len(f.train) for f in folds],
           "test_rows": sum(len(f.test) for f in folds),
           "zero_shot": _metric(evaluate_rows(zero, folds, prices)[0], multi), "sizes": {}}
    log(f"{protocol}: zero-shot {out['zero_shot']['value']:.4f} "
        f"({time.perf_counter() - t0:.0f} s)")
    smallest = min(len(f.train) for f in folds)
    for size in sizes:
        n = smallest if size == "all" else int(size)
        if size != "all" and n >= smallest:
            log(f"{protocol}: {size} rows skipped (a fold trains on {smallest})")
            continue
        runs = {m: [] for m in METHODS}
        for seed in range(seeds):
            sub = []
            for f in folds:
                rng = np.random.default_rng([seed, 0 if f.k is None else f.k + 1])
                idx = (np.arange(len(f.train)) if size == "all"
                       else np.sort(rng.choice(len(f.train), n, replace=False)))
                sub.append(replace(f, train=f.train.subset(idx)))
            for m, (_, config) in METHODS.items():
                t = time.perf_counter()
                config = replace(config, random_state=seed, neighbours=neighbours)
                routers = {f.k: fit_router(f.train, config, prices, outcomes=f.outcomes)
                           for f in sub}
                res = _metric(evaluate_rows(routers, sub, prices)[0], multi)
                if m == "warm":
                    res["chosen"] = [{**{k: r.training["warm_start"][k]
                                         for k in ("C", "C_ability", "rule")},
                                      "heads": r.training["warm_start"]["choice"]["chosen"]}
                                     for r in routers.values()]
                runs[m].append(res)
                log(f"{protocol} {size} seed {seed} {m}: {res['value']:.4f} "
                    f"({time.perf_counter() - t:.0f} s)")
        out["sizes"][size] = _summary(runs, out["zero_shot"]["value"], n)
    out["seconds"] = time.perf_counter() - t0
    return out


def _se(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def _summary(runs: dict, zero: float, n: int) -> dict:
    vals = {m: np.array([r["value"] for r in runs[m]]) for m in runs}
    s = {"rows": n, "seeds": len(vals["warm"]), "runs": runs}
    for m, v in vals.items():
        s[m] = {"mean": float(v.mean()), "se": _se(v)}
    # the warm start against the better of the other two, with the paired error over seeds
    if vals["heads"].mean() >= zero:
        best, diff = "heads", vals["warm"] - vals["heads"]
    else:
        best, diff = "zero-shot", vals["warm"] - zero
    s["margin"] = {"against": best, "mean": float(diff.mean()), "se": _se(diff)}
    s["met"] = bool(diff.mean() >= -(s["margin"]["se"] if np.isfinite(s["margin"]["se"]) else 0))
    return s


def to_markdown(results: dict) -> str:
    lines = ["# Learning curve: a team's own logs", "",
             "`python benchmarks/bench_learning_curve.py` (`make bench-learning-curve`). Mean "
             "over seeds ± standard error; the margin is the warm start's minus the better of "
             "the default zero-shot and the heads from scratch, ± its paired standard error; "
             "met: margin >= -1 standard error.", ""]
    for p, r in results.items():
        lines += [f"### {p} ({r['metric']}, {r['test_rows']} test rows, "
                  f"{'/'.join(map(str, sorted(set(r['train_rows']))))} training rows"
                  f"{' per fold' if r['folds'] > 1 else ''})", "",
                  "| training rows | default zero-shot | heads from scratch | warm start | "
                  "margin (against) | met |", "|---|---|---|---|---|---|"]
        for size, s in r["sizes"].items():
            label = f"all ({s['rows']})" if size == "all" else f"{int(size):,}"
            m = s["margin"]
            lines.append(
                f"| {label} | {r['zero_shot']['value']:.3f} | {s['heads']['mean']:.3f} ± "
                f"{s['heads']['se']:.3f} | {s['warm']['mean']:.3f} ± {s['warm']['se']:.3f} | "
                f"{m['mean']:+.3f} ± {m['se']:.3f} ({m['against']}) | "
                f"{'yes' if s['met'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocols", default="mmlu,gsm8k,mixed,dcrouter")
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--neighbours", type=int, default=None, metavar="K",
                   help="the heads' and the warm start's neighbours (default: the training "
                        "default; 0: the logistic heads alone)")
    p.add_argument("--out", type=Path, default=REPORTS)
    p.add_argument("--render", action="store_true",
                   help="only write the markdown again from the JSON report")
    args = p.parse_args(argv)
    protocols = [x for x in args.protocols.split(",") if x]
    for x in protocols:
        if x not in PROTOCOLS:
            p.error(f"protocol {x!r}: choose from {', '.join(PROTOCOLS)}")
    sizes = [x for x in args.sizes.split(",") if x]
    for x in sizes:
        if x != "all" and not x.isdigit():
            p.error(f"size {x!r}: a number of rows or 'all'")
    if args.seeds < 2:
        p.error("--seeds: at least 2, for a standard error")
    logging.basicConfig(level=logging.WARNING)
    path = args.out / "learning_curve.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.render:
        (args.out / "learning_curve.md").write_text(to_markdown(results) + "\n")
        return 0
    for x in protocols:
        results[x] = run_protocol(x, sizes, args.seeds, args.data_dir, neighbours=args.neighbours,
                                  log=lambda s: print(s, flush=True))
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "learning_curve.md").write_text(to_markdown(results) + "\n")
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
