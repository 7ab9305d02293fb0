"""Routing quality on every protocol: baselines, reference configurations, the default, and
every configuration tried to improve it.

    python benchmarks/bench_quality.py [--configs default,tfidf,...] [--protocols ...]

Each learned configuration is trained per fold with the same recipe as training/train.py,
saved, reloaded with load_router, and scored on the test rows from the reloaded router; k-fold
protocols pool their out-of-fold scores into one curve. Ensembles average the ranks of two
such routers' scores. Writes reports/quality.json and reports/quality.md, and logs one mlflow run per
configuration and protocol (--no-tracking to skip). The MiniLM configurations encode every
prompt once and cache the embeddings on disk; with that cache warm, all configurations took
10 minutes on 2 cores here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from router_ml import evaluation, load_router
from router_ml.cli import PUBLISHED, baseline_scores, pooled_scores
from router_ml.data import STRONG_MODEL, WEAK_MODEL, load_source, models_of, quality_matrix
from router_ml.protocols import PROTOCOLS, protocol_folds, question_words, with_extra
from router_ml.tracking import Tracker
from router_ml.training import TrainConfig, fit_router

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"mmlu": 0.72, "mmlu-subjects": 0.65, "gsm8k": 0.70, "mmlu-to-gsm8k": 0.65}
MMLU_CPT50_TARGET = 0.22
# key: (label in the report, configuration). The first four are the main table's columns.
CONFIGS = {
    "default": ("default", TrainConfig()),
    # the reference rows: the protocol's own training rows only
    "tfidf": ("T + LR", TrainConfig(encoder="tfidf", label="strong_better", C=1.0, extra=())),
    "minilm": ("E + LR", TrainConfig(encoder="minilm", label="strong_better", C=1.0, extra=())),
    "accurate": ("E + stats, gain", TrainConfig(encoder="minilm+stats")),
    # what else was tried: features, labels, classifiers, extra data (label gain, logistic
    # regression with C chosen by inner cross-validation and the arena-hard rows added, unless
    # the name says otherwise)
    "static-stats": ("static + stats", TrainConfig(encoder="static+stats")),
    "static": ("static", TrainConfig(encoder="static")),
    "tfidf-gain": ("T", TrainConfig(encoder="tfidf")),
    "minilm-gain": ("E", TrainConfig(encoder="minilm")),
    "sb": ("stats, strong_better", TrainConfig(label="strong_better")),
    "graded": ("stats, graded", TrainConfig(label="graded")),
    "hgb": ("stats, boosting", TrainConfig(classifier="hgb")),
    "mlp": ("stats, MLP", TrainConfig(classifier="mlp")),
    "knn": ("static, kNN k=100", TrainConfig(encoder="static", classifier="knn", k=100)),
    "no-arena": ("default without arena-hard rows", TrainConfig(extra=())),
}
# Equal-weight rank averages of two configurations above (computed when both ran).
ENSEMBLES = {"ens-static": ("default + static + stats (mean)", ("default", "static-stats")),
             "ens-minilm": ("default + E (mean)", ("default", "minilm-gain"))}
MAIN = ("random", "length", "T + LR", "E + LR", "E + stats, gain", "default")


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


def rank_mean(*score_vectors) -> np.ndarray:
    """Average of the score vectors after mapping each to its ranks in [0, 1]."""
    from scipy.stats import rankdata

    return np.mean([(rankdata(s) - 1) / max(len(s) - 1, 1) for s in score_vectors], axis=0)


def paired_se(a, b, qs, qw, n_boot: int = 200, seed: int = 0) -> float:
    """Bootstrap standard error of APGR(a) - APGR(b) over resampled test prompts (the same
    resample for both score vectors)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(a), len(a))
        try:
            diffs.append(evaluation.apgr(a[i], qs[i], qw[i]) - evaluation.apgr(b[i], qs[i], qw[i]))
        except ValueError:  # a resample where both models are equally good: APGR undefined
            continue
    return float(np.std(diffs, ddof=1))


def _by_stem(prompts) -> dict:
    """Positions of the prompts by normalised question stem."""
    out = defaultdict(list)
    for i, p in enumerate(prompts):
        out[" ".join(question_words(p))].append(i)
    return out


def diagnostics(folds_by_protocol: dict) -> dict:
    """How much of the signal is the subject, and whether other models' outcomes on the very
    same questions predict this pair's gain (they are what llmrouter-dcrouter could teach).
    folds_by_protocol: {protocol: its folds without extra rows}."""
    out = {}
    for protocol in ("mmlu", "mmlu-subjects"):
        if protocol not in folds_by_protocol:
            continue
        folds = folds_by_protocol[protocol]
        own, train_means = [], []
        for f in folds:
            gain_te = f.test.q_strong - f.test.q_weak
            gain_tr = f.train.q_strong - f.train.q_weak
            g_te, g_tr = np.asarray(f.test.groups), np.asarray(f.train.groups)
            te_mean = {g: gain_te[g_te == g].mean() for g in set(g_te)}
            tr_mean = {g: gain_tr[g_tr == g].mean() for g in set(g_tr)}
            own.append([te_mean[g] for g in g_te])
            train_means.append([tr_mean.get(g, np.nan) for g in g_te])
        _, qs, qw, _ = pooled_scores(folds, lambda f: np.zeros(len(f.test)))
        out[protocol] = {"subject_mean_gain_of_test_rows": evaluation.apgr(np.concatenate(own), qs, qw)}
        train_means = np.concatenate(train_means)
        if not np.isnan(train_means).any():  # subjects seen in training
            out[protocol]["subject_mean_gain_of_training_rows"] = evaluation.apgr(train_means, qs, qw)
    dc = load_source("dcrouter")
    dc_acc = np.nanmean(quality_matrix(dc), axis=1)
    keys_dc = _by_stem(dc["prompt"][:])
    for name in ("gsm8k", "mmlu"):
        src = load_source(name)
        q = quality_matrix(src, [STRONG_MODEL, WEAK_MODEL])
        # questions whose normalised stem occurs exactly once on each side
        prompts = src["prompt"][:]
        keys_src = _by_stem(prompts)
        pairs = [(v[0], keys_dc[k][0]) for k, v in keys_src.items()
                 if len(v) == 1 and len(keys_dc.get(k, ())) == 1]
        if len(pairs) < 100:  # too few to say anything
            continue
        i, j = np.array(pairs).T
        lengths = np.array([len(prompts[int(a)]) for a in i], dtype=float)
        out[f"{name}-in-dcrouter"] = {
            "n": len(pairs), "dcrouter_models": len(models_of(dc)),
            "minus_mean_accuracy_of_dcrouter_models": evaluation.apgr(-dc_acc[j], q[i, 0], q[i, 1]),
            "length": evaluation.apgr(lengths, q[i, 0], q[i, 1])}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated, from: {', '.join(CONFIGS)}")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    p.add_argument("--no-tracking", action="store_true")
    args = p.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            p.error(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    protocols = [x for x in args.protocols.split(",") if x]
    tracker = Tracker(experiment="router_ml-bench-quality", enabled=not args.no_tracking)
    tracker.check()
    results, base_folds = {}, {}
    for protocol in protocols:
        folds_by_extra = {(): protocol_folds(protocol)}
        base_folds[protocol] = folds_by_extra[()]
        _, qs, qw, prompts = pooled_scores(folds_by_extra[()], lambda f: np.zeros(len(f.test)))
        rows, scores = {}, {}
        for b in ("random", "length"):
            rows[b] = evaluation.evaluate(baseline_scores(b, prompts), qs, qw).to_dict()
        for c in configs:
            label, config = CONFIGS[c]
            if config.extra not in folds_by_extra:
                folds_by_extra[config.extra] = with_extra(folds_by_extra[()], config.extra)
            folds = folds_by_extra[config.extra]
            print(f"[{protocol}] training {label} ({len(folds)} fold(s))", flush=True)
            with tempfile.TemporaryDirectory() as tmp, \
                    tracker.run(f"{protocol}-{c}", {**config.to_dict(), "protocol": protocol}) as run:
                scores[c], seconds = run_config(config, folds, Path(tmp))
                rep = evaluation.evaluate(scores[c], qs, qw).to_dict()
                rep["train_seconds"] = round(seconds, 1)
                rep["extra_rows_dropped"] = sum(f.dropped for f in folds)
                run.log_metrics(rep)
            rows[label] = rep
            print(f"[{protocol}] {label}: APGR {rep['apgr']:.3f}, CPT50 {rep['cpt50']:.3f}", flush=True)
        for key, (label, members) in ENSEMBLES.items():
            if all(m in scores for m in members):
                scores[key] = rank_mean(*(scores[m] for m in members))
                rows[label] = evaluation.evaluate(scores[key], qs, qw).to_dict()
        if "default" in scores:  # is a difference to the default more than noise?
            labels = {**{k: v[0] for k, v in CONFIGS.items()}, **{k: v[0] for k, v in ENSEMBLES.items()}}
            for key, s in scores.items():
                if key != "default":
                    rows[labels[key]]["minus_default"] = rows[labels[key]]["apgr"] - rows["default"]["apgr"]
                    rows[labels[key]]["minus_default_se"] = paired_se(s, scores["default"], qs, qw)
        results[protocol] = {"n": len(prompts), "rows": rows, "published": PUBLISHED.get(protocol),
                             "target_apgr": TARGETS.get(protocol)}
    report = {"protocols": results, "diagnostics": diagnostics(base_folds)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    md = to_markdown(report)
    (args.out / "quality.md").write_text(md)
    print(md)
    return 0


def _cell(v) -> str:
    return "-" if v is None else f"{v['apgr']:.3f} ({100 * v['cpt50']:.1f} %)"


def to_markdown(report: dict) -> str:
    results = report["protocols"]
    lines = ["# Routing quality", "",
             "Command: `make bench-quality`. Pair: gpt-4-1106-preview (strong) and "
             "Mixtral-8x7B-Instruct-v0.1 (weak). APGR with CPT(50%) in brackets; "
             "protocols and metrics as in DESIGN.md section 4.", "",
             "| protocol | n | q weak | q strong | " + " | ".join(MAIN)
             + " | default CPT(80%) | oracle | RouteLLM (published) | target |",
             "|" + "---|" * (len(MAIN) + 8)]
    for proto, r in results.items():
        first = next(iter(r["rows"].values()))
        d = r["rows"].get("default")
        pub = r["published"]
        cpt80 = "-" if d is None else f"{100 * d['cpt80']:.1f} %"
        lines.append(f"| {proto} | {r['n']} | {first['q_weak']:.3f} | {first['q_strong']:.3f} | "
                     + " | ".join(_cell(r["rows"].get(k)) for k in MAIN)
                     + f" | {cpt80}"
                     + f" | {first['oracle_apgr']:.3f} | {_cell(pub) if pub else '-'}"
                     + f" | {r['target_apgr'] or '-'} |")
    tried = []
    for r in results.values():
        tried += [k for k in r["rows"] if k not in MAIN[:2] and k not in tried]
    lines += ["", "## Targets", ""]
    for proto, r in results.items():
        d, t = r["rows"].get("default"), r["target_apgr"]
        if d is None or t is None:
            continue
        best = max(((v["apgr"], k) for k, v in r["rows"].items() if k in tried), default=None)
        extra = (f" (CPT(50%) {100 * d['cpt50']:.1f} %, target at most {100 * MMLU_CPT50_TARGET:.0f} %)"
                 if proto == "mmlu" else "")
        met = d["apgr"] >= t and (proto != "mmlu" or d["cpt50"] <= MMLU_CPT50_TARGET)
        lines.append(f"- {proto}: default APGR {d['apgr']:.3f}{extra}, target {t}: "
                     f"{'met' if met else 'not met'}. Best of the {len(tried)} configurations "
                     f"below: {best[1]} with {best[0]:.3f}.")
    lines += ["", "## What was tried", "",
              "Every configuration trains with training/train.py's recipe (label `gain`, "
              "logistic regression with C from inner cross-validation, arena-hard rows added; "
              "T + LR and E + LR without them), unless named; "
              "see CONFIGS and ENSEMBLES in benchmarks/bench_quality.py.", "",
              "| configuration | " + " | ".join(results) + " | mean |", "|" + "---|" * (len(results) + 2)]
    for k in tried:
        vals = [r["rows"].get(k) for r in results.values()]
        have = [v["apgr"] for v in vals if v is not None]
        mean = f"{np.mean(have):.3f}" if len(have) == len(vals) else "-"
        lines.append(f"| {k} | " + " | ".join(_cell(v) for v in vals) + f" | {mean} |")
    lines += ["", "Difference to the default in APGR, with its paired bootstrap standard error (200 "
              "resamples of the test prompts); a difference within about two standard errors is "
              "noise:", "", "| configuration | " + " | ".join(results) + " |",
              "|" + "---|" * (len(results) + 1)]
    for k in tried:
        vals = [r["rows"].get(k) for r in results.values()]
        if k == "default" or all(v is None or "minus_default" not in v for v in vals):
            continue
        lines.append(f"| {k} | " + " | ".join(
            "-" if v is None or "minus_default" not in v
            else f"{v['minus_default']:+.3f} ± {v['minus_default_se']:.3f}" for v in vals) + " |")
    diag = report["diagnostics"]
    if diag:
        lines += ["", "## Diagnostics", ""]
        for proto in ("mmlu", "mmlu-subjects"):
            if proto in diag:
                v = diag[proto]
                seen = v.get("subject_mean_gain_of_training_rows")
                lines.append(f"- {proto}: scoring each test prompt by its subject's mean gain gives APGR "
                             f"{v['subject_mean_gain_of_test_rows']:.3f} when the mean is taken over the "
                             f"test rows themselves (a ceiling for any signal that only knows the subject)"
                             + (f" and {seen:.3f} over the training rows." if seen is not None else "."))
        for name in ("gsm8k", "mmlu"):
            v = diag.get(f"{name}-in-dcrouter")
            if v:
                lines.append(f"- {v['n']} {name} questions also appear in llmrouter-dcrouter. Ranking them "
                             f"by the {v['dcrouter_models']} dcrouter models' mean error gives APGR "
                             f"{v['minus_mean_accuracy_of_dcrouter_models']:.3f} on this pair "
                             f"(length: {v['length']:.3f}): what weaker models find hard is not "
                             f"where the strong model gains.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
