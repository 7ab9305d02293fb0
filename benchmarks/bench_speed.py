"""Per-request cost of each router profile on this machine.

    python benchmarks/bench_speed.py [--profiles default,stats,tfidf,static,minilm,knn] [--n-route 1000]

For each profile: route() latency p50/p99 over MMLU test prompts (one call each) after the
router has scored 5,000 MMLU training prompts, as a running service has (the static encoder
remembers chunks of text), and the p50 of a fresh router over the 1,000 before; score()
throughput on one batch of 5,000 MMLU prompts (the best of 3 x 3 calls in three fresh
processes each way, alternating: the Hugging Face tokenizer on one thread,
TOKENIZERS_PARALLELISM=false as ``make`` sets it, and with its default parallelism over the
machine's cores; and the median of the first call in each one-thread process, before the
static encoder has remembered any chunk of text), and a fresh process's load_router() plus
first decision (wall time and peak resident memory). The default profile is models/default (built
by make train); the others are trained on the mmlu protocol's training rows (as is a
default-config router for the APGR column, so every APGR is on the same mmlu test rows).
Numbers are comparable within one run only: the machine is shared. Writes reports/speed.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from router_ml import load_router
from router_ml.learn import evaluation
from router_ml.learn.protocols import protocol_folds, with_extra
from router_ml.learn.training import TrainConfig, fit_router

ROOT = Path(__file__).resolve().parent.parent
PROFILES = {
    "stats": TrainConfig(encoder="stats", extra=("arena-hard",)),
    "tfidf": TrainConfig(encoder="tfidf"),
    "static": TrainConfig(encoder="static"),
    "minilm": TrainConfig(encoder="minilm+surface"),
    # the default with kNN heads: the training rows are kept and searched per prompt
    "knn": TrainConfig(classifier="knn"),
    # heads from scratch (--table --no-prior-router): logistic heads and their 100 nearest
    # training rows (numpy), and the logistic heads alone
    "heads": TrainConfig(),
    "heads-logistic": TrainConfig(neighbours=0),
}

# Peak RSS from /proc (VmHWM): getrusage's maxrss survives exec and would count the parent.
_FRESH = """
import json, sys, time
t0 = time.perf_counter()
from router_ml import load_router
r = load_router(sys.argv[1])
d = r.route("What is the capital of France?")
t1 = time.perf_counter()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"load_first_s": t1 - t0, "torch": "torch" in sys.modules,
                  "rss_mb": int(hwm) / 1024}))
"""


_BATCH = """
import json, sys, time
from router_ml import load_router
from router_ml.core.features import encoders_of
r = load_router(sys.argv[1])
for e in encoders_of(r.encoder):
    if hasattr(e, "cache_dir"):
        e.cache_dir = False
prompts = json.load(open(sys.argv[2]))
r.score(prompts[:20])
t = time.perf_counter()
r.score(prompts)  # the first batch: what the encoder remembers (chunks of text) is still empty
first = time.perf_counter() - t
best = float("inf")
for _ in range(3):
    t = time.perf_counter()
    r.score(prompts)
    best = min(best, time.perf_counter() - t)
print(json.dumps({"throughput_per_s": len(prompts) / best, "first_per_s": len(prompts) / first}))
"""


def batch_throughput(path: Path, batch: list[str], parallel: bool) -> dict:
    """score() prompts/s on ``batch`` in a fresh process, the tokenizer parallel or not: the
    best of three calls, and the first call."""
    import os

    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(batch, f)
        f.flush()
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "true" if parallel else "false"}
        out = subprocess.run([sys.executable, "-c", _BATCH, str(path), f.name],
                             capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def batch_throughputs(path: Path, batch: list[str], rounds: int = 3) -> dict:
    """The best prompts/s of each tokenizer setting over ``rounds`` alternating fresh
    processes (alternating, so that a busy spell on the shared machine hits both alike), and
    the median over the one-thread processes of their first call."""
    runs = {False: [], True: []}
    for _ in range(rounds):
        for parallel in (False, True):
            runs[parallel].append(batch_throughput(path, batch, parallel))
    return {"throughput_per_s": max(r["throughput_per_s"] for r in runs[False]),
            "throughput_parallel_per_s": max(r["throughput_per_s"] for r in runs[True]),
            "first_batch_per_s": float(np.median([r["first_per_s"] for r in runs[False]]))}


def no_cache(encoder):
    """Turn off the embedding cache so that a transformer encoder's cost is measured."""
    from router_ml.core.features import encoders_of

    for e in encoders_of(encoder):
        if hasattr(e, "cache_dir"):
            e.cache_dir = False


def fresh_process(path: Path, repeats: int = 3) -> dict:
    """Median load + first decision time of a new interpreter, its peak RSS, torch imported?
    Each run starts with an empty embedding cache, so a transformer is loaded as on a cold start."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            out = subprocess.run([sys.executable, "-c", _FRESH, str(path)], capture_output=True,
                                 text=True, check=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                             "ROUTER_ML_CACHE": cache})
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["load_first_s"])
    return runs[len(runs) // 2]


def route_latencies(router, prompts) -> np.ndarray:
    """Milliseconds of one route() call per prompt."""
    lat = []
    for p in prompts:
        t = time.perf_counter()
        router.route(p)
        lat.append(time.perf_counter() - t)
    return np.array(lat) * 1000


def measure(path: Path, prompts: list[str], n_route: int, n_batch: int, warm: list[str]) -> dict:
    """route() latency of a fresh router, then of the same router after it scored ``warm``
    (other prompts), on the next ``n_route`` prompts; throughput; a fresh process."""
    router = load_router(path)
    no_cache(router.encoder)
    router.route("What is the capital of France?")  # warm up lazy imports
    fresh = route_latencies(router, prompts[:n_route])
    router.score(warm)  # what a service has met after a while (the static encoder's chunks)
    warmed = route_latencies(router, prompts[n_route:2 * n_route])
    batch = (prompts * (n_batch // len(prompts) + 1))[:n_batch]
    return {"p50_ms": float(np.percentile(warmed, 50)), "p99_ms": float(np.percentile(warmed, 99)),
            "fresh_p50_ms": float(np.percentile(fresh, 50)),
            **batch_throughputs(path, batch), **fresh_process(path)}


def main(argv=None) -> int:
    import os

    from router_ml.core.transformer import EMBEDDING_CACHE_ENV, default_cache_dir

    # the benchmark encodes the same prompts in every run: it opts in to the embedding cache
    os.environ.setdefault(EMBEDDING_CACHE_ENV, str(default_cache_dir()))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="default,stats,tfidf,static,minilm")
    p.add_argument("--default-model", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--n-route", type=int, default=1000)
    p.add_argument("--n-batch", type=int, default=5000)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "speed.json")
    args = p.parse_args(argv)
    folds = {(): protocol_folds("mmlu")[0]}  # by extra training sources
    fold = folds[()]
    prompts = list(fold.test.prompts)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.profiles.split(","):
            if name == "default":
                if not args.default_model.is_dir():
                    print(f"skip default: {args.default_model} missing (run make train)")
                    continue
                path = args.default_model
                # APGR of the default configuration, trained without the mmlu test rows
                cfg = TrainConfig(**{k: v for k, v in load_router(path).training["config"].items()
                                     if k in TrainConfig.__dataclass_fields__})
                cfg.extra = tuple(cfg.extra)
            else:
                path, cfg = None, PROFILES[name]
            if cfg.extra not in folds:
                folds[cfg.extra] = with_extra([folds[()]], cfg.extra)[0]
            fold = folds[cfg.extra]
            print(f"[{name}] training on mmlu training rows", flush=True)
            t = time.perf_counter()
            mmlu_router = fit_router(fold.train, cfg)
            train_s = time.perf_counter() - t
            a = evaluation.apgr(mmlu_router.score(prompts), fold.test.q_strong, fold.test.q_weak)
            if path is None:
                path = Path(tmp) / name
                mmlu_router.save(path)
            print(f"[{name}] measuring", flush=True)
            results[name] = {**measure(path, prompts, args.n_route, args.n_batch,
                                       list(folds[()].train.prompts)[:args.n_batch]),
                             "mmlu_apgr": a, "mmlu_train_s": train_s}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(to_markdown(results))
    print(quality_gap(args.out.parent / "quality.json"))
    return 0


def quality_gap(path: Path) -> str:
    """The default's APGR on every protocol next to the best profile of the quality bench."""
    if not path.exists():
        return f"(no {path}: run make bench-quality for the default's APGR on every protocol)"
    results = json.loads(path.read_text())
    lines = ["| protocol | default APGR | best profile | its APGR | gap |", "|---|---|---|---|---|"]
    for proto, r in results.items():
        if not r["pair"]:
            continue
        rows = {k: v for k, v in r["rows"].items() if k not in ("random", "length")}
        if "default" not in rows:
            continue
        best = max(rows, key=lambda k: rows[k]["apgr"])
        d, b = rows["default"]["apgr"], rows[best]["apgr"]
        lines.append(f"| {proto} | {d:.3f} | {best} | {b:.3f} | {b - d:.3f} |")
    return "\n".join(lines) + "\n"


def to_markdown(results: dict) -> str:
    lines = ["| profile | route p50 (ms) | route p99 (ms) | route p50, fresh router (ms) | "
             "score (prompts/s), tokenizer on one "
             "thread | score (prompts/s), tokenizer parallel | first batch (prompts/s) | load + "
             "first decision (s) | RSS (MB) | torch imported | mmlu APGR |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['fresh_p50_ms']:.2f} | "
                     f"{r['throughput_per_s']:,.0f} | {r['throughput_parallel_per_s']:,.0f} | "
                     f"{r['first_batch_per_s']:,.0f} | "
                     f"{r['load_first_s']:.2f} | {r['rss_mb']:.0f} | "
                     f"{'yes' if r['torch'] else 'no'} | {r['mmlu_apgr']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
