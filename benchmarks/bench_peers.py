"""Routing quality of the peers that work offline, side by side with router_ml's default,
on the pair protocols of docs/protocols.md and the real-chat protocol arena-rated, in one run.

    python benchmarks/bench_peers.py [--protocols mmlu,gsm8k] [--peers litellm,llmrouter-knn]

Peers (higher score = strong model more needed; every one sees the same test rows):
- ``litellm``: LiteLLM's rule-based complexity router with its default configuration
  (``ComplexityRouter.classify``: the weighted keyword/length score; no network, no LLM).
- ``litellm-v2``: the same router's ``heuristic_v2`` classifier (success probabilities from
  the UltraFeedback statistics it ships); score = 1 - P(success of the cheapest tier).
- ``llmrouter-knn``, ``llmrouter-mlp``, ``llmrouter-mf``: llmrouter-lib's KNNRouter,
  MLPRouter and MFRouter with their trainers and the hyper-parameters of the library's
  example configs, trained on the same all-MiniLM-L6-v2 embeddings (its own routers embed
  with Longformer, whose weights cannot be fetched here). Label: the best model of each row
  (the library's ``idxmax``), with ties to the weak model, i.e. strong iff q_strong > q_weak.
  llmrouter-lib needs torch, gradio, torch-geometric, peft and older pillow, so it runs in its
  own virtualenv (``--peers-venv``, default .venv-peers): this script creates it on first use,
  makes router_ml's site-packages visible to it through a .pth file (so its CPU torch and
  scikit-learn are reused, not fetched again as PyPI's CUDA build) and installs
  benchmarks/peers-requirements.txt there; nothing in .venv changes. The peer gets
  embeddings and labels as .npy files and hands scores back the same way. If that fails, the
  reason is printed and recorded and scikit-learn stand-ins of the same three ideas run
  instead, labelled ``sklearn-knn``/``sklearn-mlp``/``sklearn-mf`` (re-implementations, not
  the peer).
- ``router_ml``: the default recipe (``DEFAULT_ROUTER``: the difficulty estimator, learned
  from every model's outcomes as well, test questions dropped) fitted per fold with
  ``fit_router`` and scored with ``router.score``.

Training rows: the protocol's, plus the default recipe's extra sources
(``TrainConfig().extra``, test questions dropped) for every learned peer alike; ``--extra ""``
trains on the protocol rows alone. k-fold protocols pool their out-of-fold scores into one
curve. ``arena-rated`` (the rated Chatbot Arena prompts): Spearman's rho of each score with the
prompts' difficulty, with its bootstrap error (``arena.rated_metric``); every learned peer
trains on its one fold as in benchmarks/bench_quality.py (the pair's MMLU and GSM8K rows plus
the extra sources, minus the test prompts); not in the APGR mean. Per-prompt cost: median over
single-prompt calls on one batch of test prompts, in this run, embedding included for
embedding peers (sum of the medians of a single-prompt MiniLM encode, cache off, and the
peer's single-row prediction), reported as a ratio to router_ml's.
Writes reports/peers.json and reports/peers.md and prints the table. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).resolve().parent / "peers-requirements.txt"
LLMROUTER = ("llmrouter-knn", "llmrouter-mlp", "llmrouter-mf")
PEERS = ("litellm", "litellm-v2", *LLMROUTER, "router_ml")
LABELS = {
    "litellm": "LiteLLM complexity (default)",
    "litellm-v2": "LiteLLM heuristic_v2",
    "llmrouter-knn": "llmrouter kNN",
    "llmrouter-mlp": "llmrouter MLP",
    "llmrouter-mf": "llmrouter MF",
    "sklearn-knn": "sklearn kNN (re-impl.)",
    "sklearn-mlp": "sklearn MLP (re-impl.)",
    "sklearn-mf": "sklearn MF (re-impl.)",
    "router_ml": "router_ml default",
}
# The hyper-parameters of llmrouter-lib's example configs
# (configs/model_config_train/{knnrouter,mlprouter,mfrouter}.yaml of its repository), with
# n_jobs=1 for the 2-core machine and text_dim set to MiniLM's width.
HPARAMS = {
    "llmrouter-knn": {"n_neighbors": 5, "weights": "uniform", "algorithm": "auto",
                      "leaf_size": 30, "p": 2, "metric": "minkowski", "n_jobs": 1},
    "llmrouter-mlp": {"hidden_layer_sizes": [128, 64], "activation": "relu", "lr": 0.001,
                      "epochs": 100, "batch_size": 32, "alpha": 0.0001},
    "llmrouter-mf": {"latent_dim": 128, "text_dim": 384, "lr": 0.001, "epochs": 5,
                     "noise_alpha": 0.0, "batch_size": 64},
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _median_ms(fn, items) -> float:
    """Median wall time (ms) of fn(item) over items, after one warm-up call."""
    fn(items[0])
    times = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        times.append(1000 * (time.perf_counter() - t))
    return float(statistics.median(times))


def _interleaved_median_ms(fns: dict, items) -> dict:
    """{name: median wall time (ms) of fn(item)}, the functions called in turn on each item,
    after one warm-up call each."""
    for fn in fns.values():
        fn(items[0])
    times = {k: [] for k in fns}
    for x in items:
        for k, fn in fns.items():
            t = time.perf_counter()
            fn(x)
            times[k].append(1000 * (time.perf_counter() - t))
    return {k: float(statistics.median(v)) for k, v in times.items()}


# ----------------------------------------------------------------------------- LiteLLM

def litellm_scorer(kind: str):
    """prompt -> score of LiteLLM's complexity router (kind "litellm" or "litellm-v2")."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map fetch
    from litellm.router_strategy.complexity_router import ComplexityRouter

    # The scorers read only the prompt; the routing context (deployments) is not used, as in
    # LiteLLM's own eval_complexity_router.py.
    if kind == "litellm":
        router = ComplexityRouter(model_name="bench-peers", ctx=None)
        return lambda p: float(router.classify(p)[1])
    router = ComplexityRouter(model_name="bench-peers", ctx=None,
                              complexity_router_config={"classifier_type": "heuristic_v2"})

    def v2(p):
        probs = router._classify_with_heuristic_v2(p).heuristic_v2_forecast["probabilities"]
        return 1.0 - float(next(iter(probs.values())))  # the cheapest tier first

    return v2


# ----------------------------------------------------------------------------- llmrouter-lib

def ensure_peers_venv(venv: Path) -> Path:
    """The python of the peers' virtualenv, created and filled on first use."""
    py = venv / "bin" / "python"
    if py.exists() and _peers_importable(py):
        return py
    print(f"setting up {venv} for llmrouter-lib (once)", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")  # keeps it out of git without editing .gitignore
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and
                p.is_dir() and str(p).startswith(sys.prefix))
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "_router_ml_venv.pth").write_text(f"{ours}\n")
    out = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"pip install -r {REQUIREMENTS.name} failed in {venv}: "
                           f"{(out.stderr or out.stdout).strip()[-800:]}")
    if not _peers_importable(py):
        raise RuntimeError(f"llmrouter-lib installed in {venv} but its routers do not import")
    return py


def _peers_importable(py: Path) -> bool:
    code = ("from llmrouter.models import KNNRouter, MLPRouter, MFRouter, KNNRouterTrainer, "
            "MLPTrainer, MFRouterTrainer")
    return subprocess.run([str(py), "-c", code], env={**os.environ, **OFFLINE_ENV},
                          capture_output=True, timeout=300).returncode == 0


def run_llmrouter(py: Path, peers, fold_data, timing_X, workdir: Path) -> dict:
    """Train and score llmrouter-lib's routers in the peers' virtualenv. fold_data: list of
    (X_train, q_strong, q_weak, X_test). Returns {peer: {"scores": [per fold], "predict_ms",
    "train_seconds"}}; raises RuntimeError with the worker's error."""
    for i, (Xtr, qs, qw, Xte) in enumerate(fold_data):
        d = workdir / f"fold-{i}"
        d.mkdir(parents=True, exist_ok=True)
        for name, a in (("X_train", Xtr), ("q_strong", qs), ("q_weak", qw), ("X_test", Xte)):
            np.save(d / f"{name}.npy", np.ascontiguousarray(a), allow_pickle=False)
    np.save(workdir / "X_timing.npy", np.ascontiguousarray(timing_X), allow_pickle=False)
    (workdir / "job.json").write_text(json.dumps({"peers": list(peers), "folds": len(fold_data),
                                                  "hparams": HPARAMS}))
    log = workdir / "worker.log"
    with open(log, "w") as f:
        rc = subprocess.run([str(py), str(Path(__file__).resolve()), "--worker", str(workdir)],
                            env={**os.environ, **OFFLINE_ENV}, stdout=f, stderr=subprocess.STDOUT,
                            timeout=3600).returncode
    if rc != 0:
        raise RuntimeError(f"llmrouter-lib worker exited {rc}: "
                           f"{log.read_text()[-1500:].strip()}")
    res = json.loads((workdir / "result.json").read_text())
    for peer in peers:
        res[peer]["scores"] = [np.load(workdir / f"fold-{i}" / f"{peer}.npy")
                               for i in range(len(fold_data))]
    return res


def worker(workdir: Path) -> int:
    """Runs inside the peers' virtualenv: llmrouter-lib's own routers and trainers."""
    import pandas as pd  # noqa: F401  (llmrouter reads its routing table with pandas)
    import torch
    import yaml

    torch.set_num_threads(1)
    from llmrouter.models import (
        KNNRouter,
        KNNRouterTrainer,
        MFRouter,
        MFRouterTrainer,
        MLPRouter,
        MLPTrainer,
    )
    from llmrouter.utils import load_model

    job = json.loads((workdir / "job.json").read_text())
    strong, weak = "strong", "weak"
    X_timing = torch.from_numpy(np.load(workdir / "X_timing.npy"))
    out = {p: {"train_seconds": 0.0} for p in job["peers"]}

    for i in range(job["folds"]):
        d = workdir / f"fold-{i}"
        Xtr = np.load(d / "X_train.npy")
        qs, qw = np.load(d / "q_strong.npy"), np.load(d / "q_weak.npy")
        Xte = torch.from_numpy(np.load(d / "X_test.npy")).float()
        torch.save(torch.from_numpy(Xtr).float(), d / "emb.pt")
        # One routing row per (query, model), the weak model first: the library's idxmax
        # keeps the first best row, so a tie labels the weak model.
        with open(d / "routing.jsonl", "w") as f:
            for j in range(len(Xtr)):
                for m, q in ((weak, qw[j]), (strong, qs[j])):
                    f.write(json.dumps({"query": f"q{j}", "model_name": m,
                                        "performance": float(q), "embedding_id": j}) + "\n")
        (d / "llm.json").write_text(json.dumps({strong: {"model": strong}, weak: {"model": weak}}))
        for peer in job["peers"]:
            torch.manual_seed(0)
            np.random.seed(0)
            model_file = d / f"{peer}.pkl"
            cfg = {"data_path": {"query_embedding_data": str(d / "emb.pt"),
                                 "routing_data_train": str(d / "routing.jsonl"),
                                 "llm_data": str(d / "llm.json")},
                   "model_path": {"ini_model_path": "", "save_model_path": str(model_file),
                                  "load_model_path": str(model_file)},
                   "metric": {"weights": {"performance": 1, "cost": 0, "llm_judge": 0}},
                   "hparam": job["hparams"][peer]}
            cfg_path = d / f"{peer}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            t = time.perf_counter()
            if peer == "llmrouter-knn":
                router = KNNRouter(str(cfg_path))
                KNNRouterTrainer(router).train()
                knn = load_model(str(model_file))
                classes = list(knn.classes_)

                def score(X, knn=knn, classes=classes):
                    if strong not in classes:
                        return np.zeros(len(X))
                    return knn.predict_proba(X.numpy())[:, classes.index(strong)]
            elif peer == "llmrouter-mlp":
                router = MLPRouter(str(cfg_path))
                MLPTrainer(router, device="cpu").train()
                router.load_model_path = str(model_file)
                mlp, _ = router._load_mlp_model()
                k = router.model_to_idx.get(strong)

                def score(X, mlp=mlp, k=k):
                    if k is None:
                        return np.zeros(len(X))
                    with torch.no_grad():
                        return torch.softmax(mlp(X), dim=-1)[:, k].numpy()
            else:
                router = MFRouter(str(cfg_path))
                MFRouterTrainer(router, device="cpu").train()
                router.load_model_path = str(model_file)
                mf = router._load_mf_model()
                ks, kw = router.model_to_idx.get(strong), router.model_to_idx.get(weak)

                def score(X, mf=mf, ks=ks, kw=kw):
                    if ks is None or kw is None:
                        return np.zeros(len(X)) if ks is None else np.ones(len(X))
                    with torch.no_grad():  # delta(strong, q) - delta(weak, q), per prompt
                        s = [mf.score_all(mf.project_text(x)) for x in X]
                        return np.array([float(v[ks] - v[kw]) for v in s])
            out[peer]["train_seconds"] += time.perf_counter() - t
            np.save(d / f"{peer}.npy", np.asarray(score(Xte), dtype=np.float64),
                    allow_pickle=False)
            if i == 0:
                rows = [X_timing[j:j + 1] for j in range(len(X_timing))]
                out[peer]["predict_ms"] = _median_ms(score, rows)
            print(f"[worker] fold {i} {peer} done", flush=True)
    from importlib.metadata import version

    out["versions"] = {"llmrouter-lib": version("llmrouter-lib"), "torch": torch.__version__}
    (workdir / "result.json").write_text(json.dumps(out))
    return 0


# ----------------------------------------------------------------------------- fallback

def sklearn_peer(name: str, Xtr, qs, qw):
    """A scikit-learn stand-in for an llmrouter-lib router (re-implementation, labelled so).

    sklearn-mf: for two models RouteLLM's bilinear score w'((v_s - v_w) * W q) is linear in
    the prompt embedding q, so it is a logistic regression on q without intercept."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier

    y = (qs > qw).astype(int)
    if y.min() == y.max():
        return lambda X: np.full(len(X), float(y[0]))
    est = {"sklearn-knn": KNeighborsClassifier(5),
           "sklearn-mlp": MLPClassifier((128, 64), alpha=1e-4, max_iter=100, random_state=0),
           "sklearn-mf": LogisticRegression(fit_intercept=False, max_iter=1000)}[name]
    est.fit(Xtr, y)
    return lambda X: est.predict_proba(X)[:, 1]


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocols", default=None, help="comma-separated pair protocols (all)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"from: {', '.join(PEERS)}")
    p.add_argument("--extra", default=None,
                   help="extra training sources, comma-separated (default: TrainConfig().extra; "
                        "'' for none)")
    p.add_argument("--timing-prompts", type=int, default=50,
                   help="single-prompt calls per peer for the per-prompt cost")
    p.add_argument("--peers-venv", type=Path, default=ROOT / ".venv-peers")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:  # in the peers' virtualenv, where router_ml is not importable
        return worker(args.worker)
    from router_ml.core.transformer import EMBEDDING_CACHE_ENV, default_cache_dir

    # the benchmark encodes the same prompts in every run: it opts in to the embedding cache
    os.environ.setdefault(EMBEDDING_CACHE_ENV, str(default_cache_dir()))
    os.environ.update({k: v for k, v in OFFLINE_ENV.items() if "THREADS" not in k})
    from router_ml.learn import arena, evaluation
    from router_ml.learn.evaluation import baseline_scores, pooled_scores
    from router_ml.core.transformer import SentenceTransformerEncoder
    from router_ml.learn.protocols import PAIR_PROTOCOLS, protocol_folds, with_outcomes
    from router_ml.learn.training import DEFAULT_ROUTER, TrainConfig, fit_router

    known = (*PAIR_PROTOCOLS, "arena-rated")
    protocols = [x for x in (args.protocols or ",".join(known)).split(",") if x]
    peers = [x for x in args.peers.split(",") if x]
    for x in protocols:
        if x not in known:
            p.error(f"unknown protocol {x!r}; choose from {', '.join(known)}")
    for x in peers:
        if x not in PEERS:
            p.error(f"unknown peer {x!r}; choose from {', '.join(PEERS)}")
    extra = TrainConfig().extra if args.extra is None else tuple(
        s for s in args.extra.split(",") if s)
    args.out.mkdir(parents=True, exist_ok=True)

    notes, py = [], None
    embed_peers = [x for x in peers if x in LLMROUTER]
    if embed_peers:
        try:
            py = ensure_peers_venv(args.peers_venv)
        except Exception as e:  # recorded and shown; the stand-ins run instead
            notes.append(f"llmrouter-lib unavailable ({e}); scikit-learn re-implementations "
                         "run in its place and are labelled sklearn-*")
            print("note:", notes[-1], flush=True)
    encoder = SentenceTransformerEncoder()
    litellm = {k: litellm_scorer(k) for k in peers if k.startswith("litellm")}

    results, cost, timing_prompts = {}, {}, None
    timed = dict(litellm)  # single-prompt callables timed together at the end
    for protocol in protocols:
        t0 = time.perf_counter()
        rated = protocol == "arena-rated"
        folds = protocol_folds(protocol, extra=extra)
        _, qs, qw, prompts = pooled_scores(folds, lambda f: np.zeros(len(f.test)))
        if timing_prompts is None:
            timing_prompts = list(prompts[: args.timing_prompts])

        def metric(s):
            s = np.asarray(s, dtype=np.float64)
            return (arena.rated_metric(s, folds[0].difficulty) if rated
                    else evaluation.evaluate(s, qs, qw).to_dict())

        key = "rho" if rated else "apgr"
        rows = {b: metric(baseline_scores(b, prompts)) for b in ("random", "length")}
        scores, info = {}, {}

        def record(name, s, seconds):
            rep = metric(s)
            rep["seconds"] = round(seconds, 1)
            rows[name] = rep
            scores[name] = s
            print(f"[{protocol}] {LABELS[name]}: {key} {rep[key]:.3f} ({seconds:.0f} s)",
                  flush=True)

        for name, fn in litellm.items():
            t = time.perf_counter()
            record(name, np.array([fn(x) for x in prompts]), time.perf_counter() - t)
        if embed_peers:
            t = time.perf_counter()
            emb = {}
            allp = sorted({x for f in folds for x in (*f.train.prompts, *f.test.prompts)})
            for x, v in zip(allp, encoder.transform(allp)):  # cached ones are read, not encoded
                emb[x] = v

            def E(ps):
                return np.stack([emb[x] for x in ps]).astype(np.float32)

            fold_data = [(E(f.train.prompts), f.train.q_strong, f.train.q_weak, E(f.test.prompts))
                         for f in folds]
            info["embed_seconds"] = round(time.perf_counter() - t, 1)
            done = False
            if py is not None:
                try:
                    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
                        t = time.perf_counter()
                        res = run_llmrouter(py, embed_peers, fold_data,
                                            encoder.transform(timing_prompts), Path(tmp))
                    for name in embed_peers:
                        record(name, np.concatenate(res[name]["scores"]),
                               res[name]["train_seconds"])
                        cost.setdefault(name, {"predict_ms": res[name]["predict_ms"]})
                    info["llmrouter_versions"] = res["versions"]
                    done = True
                except Exception as e:
                    notes.append(f"{protocol}: llmrouter-lib failed ({e}); scikit-learn "
                                 "re-implementations run in its place")
                    print("note:", notes[-1], flush=True)
            if not done:
                for name in embed_peers:
                    alt = name.replace("llmrouter-", "sklearn-")
                    t = time.perf_counter()
                    s, fn = [], None
                    for Xtr, q1, q0, Xte in fold_data:
                        fn = sklearn_peer(alt, Xtr, q1, q0)
                        s.append(fn(Xte))
                    record(alt, np.concatenate(s), time.perf_counter() - t)
                    if alt not in cost:
                        X = encoder.transform(timing_prompts)
                        cost[alt] = {"predict_ms": _median_ms(fn, [X[j:j + 1]
                                                                   for j in range(len(X))])}
        if "router_ml" in peers:
            t = time.perf_counter()
            outcome_folds = with_outcomes(folds, DEFAULT_ROUTER.outcomes)
            routers = {f.k: fit_router(f.train, DEFAULT_ROUTER, None, outcomes=o.outcomes)
                       for f, o in zip(folds, outcome_folds)}
            train_s = time.perf_counter() - t
            record("router_ml", pooled_scores(folds, lambda f: routers[f.k].score(
                f.test.prompts))[0], train_s)
            if timed.get("router_ml") is None:
                timed["router_ml"] = (lambda r: lambda x: r.score([x]))(routers[folds[0].k])
        results[protocol] = {"metric": key, "rows": rows,
                             "dropped": sum(f.dropped for f in folds),
                             "n_train": [len(f.train) for f in folds],
                             "seconds": round(time.perf_counter() - t0, 1), **info}
        _write(args.out, results, cost, peers, extra, notes, timing_prompts)

    # Per-prompt cost, measured once on the same prompts at the end of the run, the callables
    # interleaved prompt by prompt so that a load spike on the shared machine hits them all.
    if timing_prompts:
        if any("predict_ms" in c for c in cost.values()):
            one = SentenceTransformerEncoder(cache_dir=False)
            timed["embed"] = lambda x: one.transform([x])
        # One thread each, as the peers' worker: on a shared 2-core machine a second torch
        # thread waiting for a busy core makes one MiniLM encode ~20x slower (~550 vs ~30 ms).
        import torch
        from threadpoolctl import threadpool_limits

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(1):
                ms = _interleaved_median_ms(timed, timing_prompts)
        finally:
            torch.set_num_threads(threads)
        for name in timed:
            if name != "embed":
                cost[name] = {"ms": ms[name]}
        for c in cost.values():
            if "predict_ms" in c:
                c.update(embed_ms=ms["embed"], ms=ms["embed"] + c["predict_ms"])
        base = cost.get("router_ml", {}).get("ms")
        for c in cost.values():
            c["ratio"] = c["ms"] / base if base else None
    md = _write(args.out, results, cost, peers, extra, notes, timing_prompts)
    print(md)
    return 0


def _columns(results):
    seen = []
    for r in results.values():
        for k in r["rows"]:
            if k not in seen and k not in ("random", "length"):
                seen.append(k)
    return seen


def _write(out: Path, results, cost, peers, extra, notes, timing_prompts) -> str:
    meta = {"peers": peers, "extra": list(extra), "notes": notes,
            "timing_prompts": len(timing_prompts or []), "python": platform.python_version(),
            "labels": LABELS, "hparams": HPARAMS}
    (out / "peers.json").write_text(json.dumps(
        {"meta": meta, "protocols": results, "cost": cost}, indent=2, default=float) + "\n")
    md = to_markdown(results, cost, extra, notes, len(timing_prompts or []))
    (out / "peers.md").write_text(md)
    return md


def to_markdown(results, cost, extra, notes, n_timing) -> str:
    cols = _columns(results)
    head = ["protocol", "n", "random", "length", *[LABELS[c] for c in cols], "oracle"]
    lines = ["# Peers: APGR on the pair protocols"
             + (", rho on arena-rated" if "arena-rated" in results else ""), "",
             "Generated by `make bench-peers` (benchmarks/bench_peers.py). Higher is better; "
             "random routing gives 0.5. Learned peers train on the protocol's training rows"
             + (f" plus {', '.join(extra)} (test questions dropped)" if extra else "") + "."
             + (" arena-rated: Spearman's rho of the score with the rated Chatbot Arena prompts' "
                "difficulty ± bootstrap error (random gives 0; no oracle); learned peers train "
                "on the pair's MMLU and GSM8K rows (and the extra rows) minus its prompts; "
                "not in the mean."
                if "arena-rated" in results else ""), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = {c: [] for c in cols}
    for proto, r in results.items():
        rows, key = r["rows"], r.get("metric", "apgr")
        anyrow = next(iter(rows.values()))
        cells = [proto, str(anyrow["n"]), f"{rows['random'][key]:.3f}",
                 f"{rows['length'][key]:.3f}"]
        best = max((rows[c][key] for c in cols if c in rows), default=None)
        for c in cols:
            if c in rows:
                v = rows[c][key]
                if key == "apgr":
                    means[c].append(v)
                cell = f"{v:.3f}" + (f" ± {rows[c]['se']:.3f}" if key == "rho" else "")
                cells.append(f"**{cell}**" if v == best else cell)
            else:
                cells.append("")
        cells.append(f"{anyrow['oracle_apgr']:.3f}" if key == "apgr" else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if sum(r.get("metric", "apgr") == "apgr" for r in results.values()) > 1:
        lines.append("| mean | | | | " + " | ".join(
            f"{np.mean(means[c]):.3f}" if means[c] else "" for c in cols) + " | |")
    if cost:
        def cell(c):
            x = cost.get(c)
            if not x or "ms" not in x:
                return ""
            s = f"{x['ms']:.2f} ms"
            r = x.get("ratio")
            return s + ("" if not r else f" ({r:.0f}x)" if r >= 10 else f" ({r:.2g}x)")

        lines.append("| per-prompt cost (x router_ml) | | | | "
                     + " | ".join(cell(c) for c in cols) + " | |")
        lines += ["", f"Per-prompt cost: median of {n_timing} single-prompt calls in this run; "
                  "embedding peers include a single-prompt all-MiniLM-L6-v2 encode (cache off)"
                  + (f", {next(v['embed_ms'] for v in cost.values() if 'embed_ms' in v):.1f} ms"
                     if any("embed_ms" in v for v in cost.values()) else "")
                  + ", plus the peer's single-row prediction (timed in its own process); the "
                  "other calls are interleaved prompt by prompt; every call on one thread."]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
