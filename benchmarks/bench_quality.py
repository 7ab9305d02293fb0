"""Routing quality on the whole protocol suite: baselines, the default, and every
configuration tried, scored for the two products: the shipped default (zero-shot) and
training on a team's own logs.

    python benchmarks/bench_quality.py [--configs default,stats,...] [--protocols ...]

Each configuration is trained per fold with the recipe of training/train.py (fit_router),
saved, reloaded with load_router, and scored on the test rows from the reloaded router; k-fold
protocols pool their out-of-fold predictions into one curve. Pair protocols report APGR with
random, length and oracle references and each configuration's paired bootstrap standard error
against the default; multi-model protocols report AIQ, the highest quality and the cost share
at which the best single model's quality is reached; the real-chat protocols report
arena-rated's rho and arena-battles' APGR with bootstrap errors; ``textbook`` trains each
configuration on every row, as models/default is trained, and scores the prompts of
benchmarks/bench_textbook.py. The shipped default is chosen by the zero-shot score (real
chat half, the left-out sources and the textbook prompts a quarter each: ZERO_SHOT), never by
in-domain rows; the own-logs score (OWN_LOGS) is reported beside it. The pair protocols' rule
(none below the length baseline, nor below random by more than its bootstrap error) is
reported too. Writes reports/quality.json and reports/quality.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from dataclasses import replace

import numpy as np

from router_ml import load_router
from router_ml.learn import arena, evaluation
from router_ml.learn.evaluation import PUBLISHED, baseline_scores, pooled_scores
from router_ml.core.features import encoders_of
from router_ml.core.transformer import EMBEDDING_CACHE_ENV, SentenceTransformerEncoder
from router_ml.learn.protocols import (
    CHAT_PROTOCOLS,
    MULTI_PROTOCOLS,
    PAIR_PROTOCOLS,
    protocol_folds,
    protocol_prices,
    with_outcomes,
)
from router_ml.learn.training import DEFAULT_ROUTER, TrainConfig, fit_router

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"mmlu": 0.72, "mmlu-subjects": 0.65, "gsm8k": 0.70, "arena-hard": 0.65,
           "alpaca-eval": 0.60, "mmlu-to-gsm8k": 0.65, "loso-mmlu": 0.58, "loso-gsm8k": 0.58,
           "loso-arena-hard": 0.58}
# The two products, each chosen by its own group of protocols (docs/protocols.md).
# Zero-shot (the shipped default, for a team without labels, on traffic it never saw): real
# chat weighs half (arena-rated's rho counted as 0.5 + rho / 2, random 0.5 like an APGR), the
# sources left out a quarter (their mean APGR), the textbook prompts a quarter (the AUC of
# hard over cheap). arena-battles is reported but left out: every configuration lands within
# its own error of every other (0.483-0.500 ± 0.015), one human vote a battle.
ZERO_SHOT = {"real chat": (("arena-rated",), 0.5),
             "left-out sources": (("loso-mmlu", "loso-gsm8k", "loso-arena-hard"), 0.25),
             "textbook": (("textbook",), 0.25)}
# Own logs (a team's own labelled traffic): the k-fold in-domain protocols (APGR) and the
# multi-model ones (AIQ), each protocol alike
OWN_LOGS = ("mmlu", "mmlu-subjects", "gsm8k", "arena-hard", "alpaca-eval", "dcrouter",
            "alpaca-tiers")
TEXTBOOK = "textbook"
ORDER = PAIR_PROTOCOLS + MULTI_PROTOCOLS + CHAT_PROTOCOLS + (TEXTBOOK,)
# the previous default (every model's outcomes, the prior's weight chosen on the training
# rows: 0.5), chosen by a suite score that weighed in-domain rows; the candidates below are
# this recipe with one or two changes
PREVIOUS = TrainConfig(estimator="difficulty", encoder="static", length_prior=True,
                       outcomes=("mmlu", "gsm8k", "arena-hard", "dcrouter", "arena-rated"))
_NO_DCROUTER = tuple(s for s in PREVIOUS.outcomes if s != "dcrouter")
_NO_DC_ALPACA = _NO_DCROUTER + ("alpaca-tiers",)
_NO_RATED = tuple(s for s in PREVIOUS.outcomes if s != "arena-rated")
HEADS = TrainConfig()  # gain heads on static + surface + length prior (the 0.1 default)
CONFIGS = {
    "default": ("default: difficulty from the outcomes of MMLU, GSM8K and arena-hard-v1, "
                "static + length prior at 0.25", DEFAULT_ROUTER),
    "default-static256": ("the default's recipe on the static 256-d float16 embedding",
                          replace(DEFAULT_ROUTER, encoder="static256")),
    "default-rank2": ("the default's recipe + a rank-2 model x prompt term",
                      replace(DEFAULT_ROUTER, rank=2)),
    "default-minilm": ("the default's recipe on MiniLM itself (about 20 ms a prompt)",
                       replace(DEFAULT_ROUTER, encoder="minilm")),
    "previous-default": ("previous default: difficulty from every model's outcomes (+ dcrouter, "
                         "the rated grades), static + length prior chosen (0.5)", PREVIOUS),
    "difficulty": ("difficulty, static, no length prior",
                   replace(PREVIOUS, length_prior=False)),
    "difficulty-length": ("difficulty, static + log length feature, no prior",
                          replace(PREVIOUS, encoder="static+length", length_prior=False)),
    "prior-0.25": ("difficulty, static + length prior at a fixed weight 0.25",
                   replace(PREVIOUS, prior_weight=0.25)),
    "no-dcrouter": ("difficulty without dcrouter's outcomes, static + length prior",
                    replace(PREVIOUS, outcomes=_NO_DCROUTER)),
    "no-dcrouter-0.25": ("difficulty without dcrouter's outcomes, length prior at 0.25",
                         replace(PREVIOUS, prior_weight=0.25, outcomes=_NO_DCROUTER)),
    "difficulty-static256": ("difficulty, static 256-d float16 + length prior",
                             replace(PREVIOUS, encoder="static256")),
    "difficulty-surface": ("difficulty, static + surface + length prior",
                           replace(PREVIOUS, encoder="static+surface")),
    "difficulty-pair": ("difficulty + length prior, the pair's rows only (no other outcomes)",
                        replace(PREVIOUS, outcomes=())),
    "difficulty-alpaca": ("difficulty + length prior, + alpaca-eval outcomes",
                          replace(PREVIOUS, outcomes=PREVIOUS.outcomes
                                  + ("alpaca-tiers",))),
    "prior-0.1": ("difficulty, static + length prior at a fixed weight 0.1",
                  replace(PREVIOUS, prior_weight=0.1)),
    "no-dcrouter-0.1": ("difficulty without dcrouter's outcomes, length prior at 0.1",
                        replace(PREVIOUS, prior_weight=0.1, outcomes=_NO_DCROUTER)),
    "no-dcrouter-no-prior": ("difficulty without dcrouter's outcomes, no length prior",
                             replace(PREVIOUS, length_prior=False, outcomes=_NO_DCROUTER)),
    "no-rated": ("difficulty without the rated grades' outcomes, static + length prior",
                 replace(PREVIOUS, outcomes=_NO_RATED)),
    "no-dcrouter-alpaca-0.25": ("difficulty without dcrouter's outcomes, + alpaca-eval "
                                "outcomes, length prior at 0.25",
                                replace(PREVIOUS, prior_weight=0.25,
                                        outcomes=_NO_DC_ALPACA)),
    "prior-sources": ("difficulty, static + length prior, its weight chosen on left-out "
                      "sources", replace(PREVIOUS, prior_select_by="sources")),
    "no-dcrouter-sources": ("difficulty without dcrouter's outcomes, length prior's weight "
                            "chosen on left-out sources",
                            replace(PREVIOUS, prior_select_by="sources",
                                    outcomes=_NO_DCROUTER)),
    "no-dcrouter-alpaca": ("difficulty without dcrouter's outcomes, + alpaca-eval outcomes, "
                           "length prior", replace(PREVIOUS, outcomes=_NO_DC_ALPACA)),
    "no-dcrouter-alpaca-0.1": ("difficulty without dcrouter's outcomes, + alpaca-eval "
                               "outcomes, length prior at 0.1",
                               replace(PREVIOUS, prior_weight=0.1,
                                       outcomes=_NO_DC_ALPACA)),
    "no-dcrouter-alpaca-sources": ("difficulty without dcrouter's outcomes, + alpaca-eval "
                                   "outcomes, length prior's weight chosen on left-out sources",
                                   replace(PREVIOUS, prior_select_by="sources",
                                           outcomes=_NO_DC_ALPACA)),
    "heads": ("gain heads + 100 nearest rows (a pair), static + surface + length prior", HEADS),
    "heads-logistic": ("gain heads alone (router_ml 0.1's default), static + surface + length "
                       "prior", replace(HEADS, neighbours=0)),
    "heads-static": ("gain heads, static + length prior", TrainConfig(encoder="static")),
    "no-prior": ("gain heads without the length prior", TrainConfig(length_prior=False)),
    "minilm-no-prior": ("gain heads, MiniLM + surface, no length prior",
                        TrainConfig(encoder="minilm+surface", length_prior=False)),
    "static256": ("gain heads, static 256-d float16 + surface", TrainConfig(encoder="static256+surface")),
    "static-surface-all": ("gain heads, static + surface, arena-hard + alpaca-eval rows",
                           TrainConfig(encoder="static+surface", extra=("arena-hard", "alpaca-eval"))),
    "static-surface": ("gain heads, static + surface, no extra rows",
                       TrainConfig(encoder="static+surface", extra=())),
    "stats": ("gain heads, 28 stats", TrainConfig(encoder="stats", extra=("arena-hard",))),
    "surface": ("gain heads, 12 surface stats", TrainConfig(encoder="surface")),
    "tfidf": ("gain heads, TF-IDF", TrainConfig(encoder="tfidf")),
    "quality": ("quality heads", TrainConfig(target="quality")),
    "minilm": ("gain heads, MiniLM + surface + length prior", TrainConfig(encoder="minilm+surface")),
    "sources": ("gain heads, C by leave-one-source-out", TrainConfig(select_by="sources")),
    "folds": ("gain heads, C by shuffled folds only", TrainConfig(select_by="folds")),
    "prior-both": ("gain heads, the prior's weight by folds and left-out sources",
                   TrainConfig(prior_select_by="both")),
    "knn": ("kNN heads (k = 100, cosine)", TrainConfig(classifier="knn")),
    "hgb": ("gradient-boosted heads", TrainConfig(classifier="hgb")),
    # not a router: the mean of two configurations' test scores, listed after them in
    # --configs; pair protocols only
    "blend": ("mean of the default's and the gain heads' scores", ("default", "heads")),
}


def run_config(config: TrainConfig, folds, prices, workdir: Path) -> dict:
    """Fold key -> the router reloaded from disk, trained on that fold's training rows."""
    routers = {}
    for f in folds:
        path = workdir / f"fold-{f.k}"
        fit_router(f.train, config, prices, outcomes=f.outcomes).save(path)
        routers[f.k] = load_router(path)
        # A loaded router never caches embeddings; here the benchmark's cache serves the
        # reloaded MiniLM encoder too (the same vectors), or a MiniLM run would re-encode every
        # test prompt at about 27 prompts/s.
        for e in encoders_of(routers[f.k].encoder):
            if isinstance(e, SentenceTransformerEncoder):
                e.cache_dir = os.environ.get(EMBEDDING_CACHE_ENV) or False
    return routers


def knob_and_coverage(routers, folds) -> dict:
    """Pair protocols: the PGR each fold's calibrated threshold achieves on its test rows
    (pooled) next to its target, and the APGR and share of covered and uncovered prompts."""
    routed, cov, sc = [], [], []
    for f in folds:
        r = routers[f.k]
        s = r.score(f.test.prompts)
        strong = s >= r.threshold
        routed.append(np.where(strong, f.test.q_strong, f.test.q_weak))
        sc.append(s)
        c = r.covered(f.test.prompts)
        cov.append(np.ones(len(s), bool) if c is None else c)
    qs = np.concatenate([f.test.q_strong for f in folds])
    qw = np.concatenate([f.test.q_weak for f in folds])
    routed, cov, sc = np.concatenate(routed), np.concatenate(cov), np.concatenate(sc)
    gap = qs.mean() - qw.mean()
    out = {"threshold_target": routers[folds[0].k].calibration.target,
           "threshold_pgr": float((routed.mean() - qw.mean()) / gap) if gap else None,
           "covered_share": float(cov.mean())}
    for name, m in (("covered", cov), ("uncovered", ~cov)):
        try:
            out[f"{name}_apgr"] = evaluation.apgr(sc[m], qs[m], qw[m]) if m.sum() >= 20 else None
        except ValueError:
            out[f"{name}_apgr"] = None
    return out


def paired_se(a, b, *truth, metric=evaluation.apgr, n_boot: int = 200, seed: int = 0) -> float:
    """Bootstrap standard error of metric(a, *truth) - metric(b, *truth) on the same resampled
    rows: APGR by default (truth: q_strong, q_weak), or e.g. Spearman's rho against a
    difficulty. Resamples where the metric is undefined are left out."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(a), len(a))
        rows = [t[i] for t in truth]
        try:
            diffs.append(metric(a[i], *rows) - metric(b[i], *rows))
        except ValueError:
            continue
    return float(np.std(diffs))


def _folds(protocol: str, config: TrainConfig, pair: bool = True):
    folds = protocol_folds(protocol, extra=config.extra if pair else ())
    if config.estimator == "difficulty":
        folds = with_outcomes(folds, config.outcomes)
    return folds


def run_chat(protocol: str, configs) -> dict:
    """A real-chat protocol: each configuration trained on its rows minus the test prompts;
    arena-rated: Spearman's rho of the score with the prompts' difficulty (bootstrap error,
    and the paired error of the difference to the default); arena-battles: APGR."""
    rows, scores = {}, {}
    truth = None
    for c in configs:
        label, config = CONFIGS[c]
        if isinstance(config, tuple):
            continue
        (f,) = _folds(protocol, config)
        if truth is None:
            truth = f
            for b in ("random", "length"):
                s = baseline_scores(b, f.test.prompts)
                rows[b] = (arena.rated_metric(s, f.difficulty) if protocol == "arena-rated"
                           else arena.battles_metric(s, f.test.q_strong, f.test.q_weak))
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            router = run_config(config, [f], None, Path(tmp))[None]
            scores[c] = router.score(f.test.prompts)
        rows[c] = (arena.rated_metric(scores[c], f.difficulty) if protocol == "arena-rated"
                   else arena.battles_metric(scores[c], f.test.q_strong, f.test.q_weak))
        rows[c]["train_seconds"] = round(time.perf_counter() - t, 1)
        rows[c]["rows_dropped"] = f.dropped
        key = "rho" if protocol == "arena-rated" else "apgr"
        print(f"[{protocol}] {label}: {key} {rows[c][key]:.3f} ± {rows[c]['se']:.3f}", flush=True)
    for c in scores:
        if c == "default" or "default" not in scores:
            continue
        rows[c]["minus_default_se"] = (
            paired_se(scores[c], scores["default"], truth.test.q_strong, truth.test.q_weak)
            if protocol == "arena-battles" else
            paired_se(scores[c], scores["default"], truth.difficulty, metric=evaluation.spearman,
                      n_boot=300))
    return {"pair": False, "chat": True, "rows": rows, "published": None, "target": None}


def _value(protocol: str, row: dict) -> float:
    """A protocol's one number on a 0.5-is-random scale where it has one: arena-rated's
    0.5 + rho / 2, the textbook AUC, APGR, or AIQ for the multi-model protocols."""
    if protocol == "arena-rated":
        return 0.5 + row["rho"] / 2
    return row["auc"] if protocol == TEXTBOOK else row["apgr"] if "apgr" in row else row["aiq"]


def product_scores(results, c) -> dict:
    """Configuration c's zero-shot score (the weighted mean of ZERO_SHOT's parts, each the
    mean of its protocols) and own-logs score (the mean over OWN_LOGS); each part and score
    only when every protocol of it was run for c (NaN else)."""
    def mean_of(protocols):
        vals = [_value(p, results[p]["rows"][c]) for p in protocols
                if p in results and c in results[p]["rows"]]
        return float(np.mean(vals)) if len(vals) == len(protocols) else float("nan")

    out = {part: mean_of(protocols) for part, (protocols, _) in ZERO_SHOT.items()}
    out["zero-shot"] = float(sum(w * out[part] for part, (_, w) in ZERO_SHOT.items()))
    out["own logs"] = mean_of(OWN_LOGS)
    return out


# what a new user sees first: at most this share of the everyday textbook prompts goes to
# the strong model at the shipped threshold
MAX_EVERYDAY_STRONG = 0.25


def choose_zero_shot(results, configs):
    """The configuration with the highest zero-shot score among those whose threshold sends
    at most MAX_EVERYDAY_STRONG of the everyday textbook prompts to the strong model (None
    if no configuration has a complete zero-shot score and meets it)."""
    tb = results.get(TEXTBOOK, {}).get("rows", {})
    ok = [(product_scores(results, c)["zero-shot"], c) for c in configs
          if c in tb and tb[c]["cheap_strong_share"] <= MAX_EVERYDAY_STRONG + 1e-9]
    ok = [(v, c) for v, c in ok if v == v]
    return max(ok)[1] if ok else None


def _router_on_all_rows(config: TrainConfig, workdir: Path):
    """The configuration trained as training/train.py trains models/default (every row of
    the pair, its extra sources, every model's outcomes), saved and reloaded."""
    from router_ml.learn.protocols import all_training_rows, outcome_rows

    train = all_training_rows(extra=config.extra)
    outcomes = (outcome_rows(config.outcomes) if config.estimator == "difficulty"
                and config.outcomes else None)
    fit_router(train, config, None, outcomes=outcomes).save(workdir)
    return load_router(workdir)


def _load_textbook():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_textbook", Path(__file__).resolve().parent / "bench_textbook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_textbook(configs, save=None) -> dict:
    """The textbook prompts of benchmarks/bench_textbook.py, scored by each configuration
    trained on every row: AUC of hard over cheap (bootstrap error; paired error of the
    difference to the default), the shares its threshold sends to the strong model, the
    probes' scores, and the share of real chat prompts (arena-battles') it sends there."""
    from router_ml.learn import arena

    tb = _load_textbook()
    chat = sorted(set(arena.battle_rows(arena.load_arena_battles())[0]))
    rows, scores = {}, {}
    for c in configs:
        label, config = CONFIGS[c]
        if isinstance(config, tuple):
            continue
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            router = _router_on_all_rows(config, Path(tmp))
        rows[c] = tb.textbook_metrics(router)
        sc = router.score(chat)
        rows[c]["chat_strong_share"] = float((sc >= router.threshold).mean())
        rows[c]["n_chat"] = len(chat)
        rows[c]["prior_weight"] = router.training.get("length_prior_weight")
        # the threshold calibrated on real chat prompts instead: the strong-call share that
        # the shipped calibration reaches on the training rows, on arena-battles' prompts
        share = router.calibration.achieved["share"]
        t_chat = float(np.quantile(sc, 1.0 - share))
        sch = {k: np.asarray(v) for k, v in rows[c]["scores"].items()}
        rows[c]["chat_calibrated"] = {"share": share, "threshold": t_chat,
                                      "cheap_strong_share": float((sch["cheap"] >= t_chat).mean()),
                                      "hard_strong_share": float((sch["hard"] >= t_chat).mean())}
        rows[c]["train_seconds"] = round(time.perf_counter() - t, 1)
        scores[c] = rows[c].pop("scores")
        m = rows[c]
        print(f"[{TEXTBOOK}] {label}: auc {m['auc']:.3f} ± {m['se']:.3f}, cheap to strong "
              f"{100 * m['cheap_strong_share']:.0f} %, hard {100 * m['hard_strong_share']:.0f} %, "
              f"real chat {100 * m['chat_strong_share']:.0f} % (threshold for the training "
              f"share {100 * m['chat_calibrated']['share']:.0f} % on real chat: cheap "
              f"{100 * m['chat_calibrated']['cheap_strong_share']:.0f} %, hard "
              f"{100 * m['chat_calibrated']['hard_strong_share']:.0f} %), probes "
              + ", ".join(f"{v:.3f}" for v in m["probes"].values()), flush=True)
        if save is not None:  # each configuration's row as it comes (a run takes a while)
            save({"pair": False, "textbook": True, "rows": rows, "published": None,
                  "target": None})
    if "default" in scores:
        rng = np.random.default_rng(0)
        nh, nc = len(tb.HARD), len(tb.CHEAP)
        draws = [(rng.integers(0, nh, nh), rng.integers(0, nc, nc)) for _ in range(300)]
        d = {k: np.asarray(v) for k, v in scores["default"].items()}
        for c in scores:
            if c == "default":
                continue
            x = {k: np.asarray(v) for k, v in scores[c].items()}
            rows[c]["minus_default_se"] = float(np.std(
                [tb.auc(x["hard"][h], x["cheap"][k]) - tb.auc(d["hard"][h], d["cheap"][k])
                 for h, k in draws]))
    return {"pair": False, "textbook": True, "rows": rows, "published": None, "target": None}


def main(argv=None) -> int:
    from router_ml.core.transformer import default_cache_dir

    # the benchmark encodes the same prompts in every run: it opts in to the embedding cache
    os.environ.setdefault(EMBEDDING_CACHE_ENV, str(default_cache_dir()))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="default,difficulty,difficulty-length,heads",
                   help=f"comma-separated, from: {', '.join(CONFIGS)}")
    p.add_argument("--protocols", default=",".join(ORDER),
                   help=f"comma-separated, from: {', '.join(ORDER)}")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    p.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                   help="only join the quality.json files of runs (e.g. run in parallel over "
                        "other protocols or configurations) into --out")
    p.add_argument("--rename", default="", metavar="OLD=NEW,...",
                   help="with --merge: rename configurations in the merged files (e.g. the "
                        "runs' default once another recipe became the default); paired "
                        "differences against a renamed default name it as their reference")
    args = p.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    for i, c in enumerate(configs):
        if c not in CONFIGS:
            p.error(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
        parts = CONFIGS[c][1]
        if isinstance(parts, tuple) and not set(parts) <= set(configs[:i]):
            p.error(f"config {c!r} blends {', '.join(parts)}: list them before it")
    results = {}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        try:
            rename = dict(x.split("=", 1) for x in args.rename.split(",") if x)
        except ValueError:
            p.error(f"--rename takes OLD=NEW pairs joined by ',', got {args.rename!r}")
        for path in args.merge:  # a protocol in several files: the union of its rows
            for protocol, res in json.loads(path.read_text()).items():
                rows = {}
                for c, row in res["rows"].items():
                    if "default" in rename and "minus_default_se" in row:
                        row.setdefault("reference", rename["default"])
                    rows[rename.get(c, c)] = row
                res["rows"] = rows
                if protocol in results:
                    results[protocol]["rows"].update(res["rows"])
                else:
                    results[protocol] = res
        results = {k: results[k] for k in sorted(results, key=ORDER.index)}
        (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
        md = to_markdown(results, configs)
        (args.out / "quality.md").write_text(md)
        print(md)
        return 0
    protocols = [x for x in args.protocols.split(",") if x]
    for protocol in protocols:
        if protocol not in ORDER:
            p.error(f"unknown protocol {protocol!r}; choose from {', '.join(ORDER)}")
    for protocol in protocols:
        if protocol == TEXTBOOK:
            def save(res):
                results[protocol] = res
                (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")

            results[protocol] = run_textbook(configs, save)
            (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
            continue
        if protocol in CHAT_PROTOCOLS:
            results[protocol] = run_chat(protocol, configs)
            (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
            continue
        pair = protocol in PAIR_PROTOCOLS
        prices = None if pair else protocol_prices(protocol)
        rows, scores = {}, {}
        for c in configs:
            label, config = CONFIGS[c]
            if isinstance(config, tuple):  # a blend of configurations run before it
                if pair:
                    scores[c] = np.mean([scores[x] for x in config], axis=0)
                    rows[c] = evaluation.evaluate(scores[c], qs, qw).to_dict()
                    rows[c].update(against_length(scores[c], rows[c]["apgr"]))
                    print(f"[{protocol}] {label}: apgr {rows[c]['apgr']:.3f}", flush=True)
                continue
            folds = _folds(protocol, config, pair)
            if pair and "random" not in rows:
                _, qs, qw, prompts = pooled_scores(folds, lambda f: np.zeros(len(f.test)))
                base = {b: baseline_scores(b, prompts) for b in ("random", "length")}
                for b, v in base.items():
                    rows[b] = evaluation.evaluate(v, qs, qw).to_dict()

                def against_length(s, a):
                    """APGR a of scores s minus the length baseline's, and its paired error."""
                    return {"minus_length": a - rows["length"]["apgr"],
                            "minus_length_se": paired_se(s, base["length"], qs, qw)}
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                routers = run_config(config, folds, prices, Path(tmp))
            from router_ml.learn.evaluation import evaluate_rows

            rep, data = evaluate_rows(routers, folds, prices)
            if pair:
                scores[c] = data[0]
                rep.update(against_length(data[0], rep["apgr"]))
                rep.update(knob_and_coverage(routers, folds))
            else:
                rep = {k: v for k, v in rep.items() if not isinstance(v, (list, dict))}
            rep["train_seconds"] = round(time.perf_counter() - t, 1)
            rep["rows_dropped"] = sum(f.dropped for f in folds)
            rows[c] = rep
            key = "apgr" if pair else "aiq"
            print(f"[{protocol}] {label}: {key} {rep[key]:.3f}", flush=True)
        if pair and "default" in scores:
            for c in scores:
                if c != "default":
                    rows[c]["minus_default"] = rows[c]["apgr"] - rows["default"]["apgr"]
                    rows[c]["minus_default_se"] = paired_se(scores[c], scores["default"], qs, qw)
        results[protocol] = {"pair": pair, "rows": rows, "published": PUBLISHED.get(protocol),
                             "target": TARGETS.get(protocol)}
        (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    md = to_markdown(results, configs)
    (args.out / "quality.md").write_text(md)
    print(md)
    return 0


def _suite(results, configs):
    """Mean APGR over the pair protocols per configuration, and whether it meets the rule."""
    out = {}
    pairs = [p for p, r in results.items() if r["pair"]]
    for c in configs:
        vals = [results[p]["rows"][c]["apgr"] for p in pairs if c in results[p]["rows"]]
        bad = []
        for p in pairs:
            r = results[p]["rows"]
            if c not in r:
                continue
            se = r[c].get("minus_default_se") or 0.0
            if r[c]["apgr"] < r["length"]["apgr"] or r[c]["apgr"] < r["random"]["apgr"] - se:
                bad.append(p)
        out[c] = (float(np.mean(vals)) if vals else float("nan"), bad)
    return out


def _ref(row: dict) -> str:
    """The configuration a row's paired difference is against: the run's default, or the
    configuration that default was renamed to when runs were merged (--rename)."""
    return row.get("reference", "default")


def _vs(row: dict) -> str:
    return "" if _ref(row) == "default" else f" vs {_ref(row)}"


def _products_markdown(results: dict, scored) -> list[str]:
    """The two products' tables: zero-shot (every part and its protocols) and own logs."""
    fmt = lambda v: "-" if v is None or v != v else f"{v:.3f}"  # noqa: E731

    def cell(p, c, key=None):
        r = results.get(p, {}).get("rows", {}).get(c)
        if r is None:
            return "-"
        v = r[key] if key else _value(p, r) if p != "arena-rated" else r["rho"]
        return fmt(v)

    lines = []
    zs = [c for c in scored if any(c in results.get(p, {}).get("rows", {})
                                   for part in ZERO_SHOT.values() for p in part[0])]
    loso = ("loso-mmlu", "loso-gsm8k", "loso-arena-hard")
    if zs:
        tb = results.get(TEXTBOOK, {}).get("rows", {})
        lines += ["", "## Zero-shot score: the shipped default, on traffic it never saw", "",
                  "Real chat (arena-rated, as 0.5 + rho / 2) weighs 1/2, the mean APGR of the "
                  "left-out sources 1/4, the textbook prompts' AUC (hard above cheap) 1/4; "
                  "arena-battles is left out (docs/protocols.md). The own-logs score beside it "
                  "(next table). In brackets: the difference to the default ± paired error.",
                  "", "| configuration | arena-rated rho | " + " | ".join(loso)
                  + " | textbook AUC | zero-shot | own logs |", "|---" * 8 + "|"]
        for c in zs:
            d = product_scores(results, c)
            t = tb.get(c)
            auc = "-" if t is None else f"{t['auc']:.3f} ± {t['se']:.3f}" + (
                f" [{t['auc'] - tb[_ref(t)]['auc']:+.3f}±{t['minus_default_se']:.3f}"
                f"{_vs(t)}]" if "minus_default_se" in t and _ref(t) in tb else "")
            lines.append(f"| {CONFIGS[c][0]} | {cell('arena-rated', c)} | "
                         + " | ".join(cell(p, c) for p in loso)
                         + f" | {auc} | **{fmt(d['zero-shot'])}** | {fmt(d['own logs'])} |")
        base = {p: results[p]["rows"] for p in ("arena-rated",) + loso if p in results}
        if base:
            t = _load_textbook()  # the textbook's hard prompts are longer than most everyday ones
            by_length = t.auc([len(x) for x in t.HARD], [len(x) for x in t.CHEAP])
            lines.append("| length (reference) | " + " | ".join(
                fmt(base[p]["length"]["rho" if p == "arena-rated" else "apgr"])
                if p in base else "-" for p in ("arena-rated",) + loso)
                + f" | {by_length:.3f} | | |")
        best = choose_zero_shot(results, zs)
        if best is not None:
            lines += ["", "The highest zero-shot score among the configurations that send at "
                      f"most {100 * MAX_EVERYDAY_STRONG:.0f} % of the everyday textbook prompts "
                      f"to the strong model: **{CONFIGS[best][0]}** "
                      f"({product_scores(results, best)['zero-shot']:.3f})."]
        if tb:
            lines += ["", "### The textbook prompts at the threshold", "",
                      "Each configuration trained on every row (as models/default): the length "
                      "prior's weight, the shares of the everyday (at most 25 % aimed for) and "
                      "hard prompts and of real chat prompts (arena-battles', distinct) that its "
                      "threshold sends to the strong model; the same for a threshold calibrated "
                      "on the real chat prompts instead (the strong-call share the shipped "
                      "calibration reaches on its training rows); and the scores of \"Prove "
                      "that there are infinitely many primes.\" and \"hi\".", "",
                      "| configuration | prior weight | everyday / hard / real chat to strong | "
                      "calibrated on real chat: share, everyday / hard | primes / hi |",
                      "|---" * 5 + "|"]
            for c in zs:
                t = tb.get(c)
                if t is None:
                    continue
                k = t["chat_calibrated"]
                lines.append(
                    f"| {CONFIGS[c][0]} | {fmt(t.get('prior_weight'))} | "
                    f"{100 * t['cheap_strong_share']:.0f} / {100 * t['hard_strong_share']:.0f} "
                    f"/ {100 * t['chat_strong_share']:.0f} % | {100 * k['share']:.0f} %: "
                    f"{100 * k['cheap_strong_share']:.0f} / {100 * k['hard_strong_share']:.0f} % "
                    "| " + " / ".join(f"{v:.3f}" for v in t["probes"].values()) + " |")
    own = [c for c in scored if any(c in results.get(p, {}).get("rows", {}) for p in OWN_LOGS)]
    if own:
        lines += ["", "## Own-logs score: training on a team's own labelled traffic", "",
                  "The mean of the k-fold in-domain protocols' APGR and the multi-model "
                  "protocols' AIQ.", "",
                  "| configuration | " + " | ".join(OWN_LOGS) + " | own logs |",
                  "|---" * (len(OWN_LOGS) + 2) + "|"]
        for c in own:
            d = product_scores(results, c)
            lines.append(f"| {CONFIGS[c][0]} | " + " | ".join(cell(p, c) for p in OWN_LOGS)
                         + f" | **{fmt(d['own logs'])}** |")
    return lines


def to_markdown(results: dict, configs) -> str:
    pairs = [p for p, r in results.items() if r["pair"]]
    multis = [p for p, r in results.items()
              if not r["pair"] and not r.get("chat") and not r.get("textbook")]
    lines = ["# Routing quality", "", "Generated by `make bench-quality` "
             "(benchmarks/bench_quality.py).", ""]
    if pairs:
        lines += ["## Pair protocols (APGR; CPT(50%) in brackets; difference to the default "
                  "± paired bootstrap error)", "",
                  "| protocol | n | random | length | oracle | "
                  + " | ".join(CONFIGS[c][0] for c in configs) + " | target | RouteLLM |",
                  "|---" * (6 + len(configs)) + "|"]
        for p in pairs:
            r = results[p]["rows"]
            first = next((r[c] for c in configs if c in r), None)
            if first is None:  # none of these configurations ran this protocol
                continue
            cells = []
            for c in configs:
                if c not in r:
                    cells.append("-")
                    continue
                cell = f"{r[c]['apgr']:.3f} ({100 * r[c]['cpt50']:.1f} %)" \
                    if r[c]["cpt50"] is not None else f"{r[c]['apgr']:.3f}"
                if "minus_default" in r[c]:
                    cell += (f" {r[c]['minus_default']:+.3f}±{r[c]['minus_default_se']:.3f}"
                             + _vs(r[c]))
                cells.append(cell)
            pub = results[p]["published"]
            lines.append(f"| {p} | {first['n']} | {r['random']['apgr']:.3f} | "
                         f"{r['length']['apgr']:.3f} | {first['oracle_apgr']:.3f} | "
                         + " | ".join(cells)
                         + f" | {results[p]['target'] or '-'} | {pub['apgr'] if pub else '-'} |")
        suite = _suite(results, configs)
        lines.append("| **mean** | | | | | " + " | ".join(
            f"**{suite[c][0]:.3f}**" for c in configs) + " | | |")
        lines += ["", "Rule (no protocol below the length baseline, nor below random by more "
                  "than its bootstrap error):", ""]
        for c in configs:
            m, bad = suite[c]
            why = []
            for b in bad:
                r = results[b]["rows"][c]
                why.append(b + (f" ({r['minus_length']:+.3f}±{r['minus_length_se']:.3f} "
                                "against length)" if "minus_length" in r else ""))
            lines.append(f"- {CONFIGS[c][0]}: mean {m:.3f}; "
                         + ("meets the rule" if not bad else "fails on " + ", ".join(why)))
    if pairs:
        lines += ["", "## The threshold on the test rows, and coverage", "",
                  "PGR reached on the test rows by each fold's threshold (calibrated on "
                  "out-of-fold training scores to keep 80 % of the gain), and the APGR of the "
                  "prompts the coverage signal calls covered / uncovered, with the covered "
                  "share (95 % of held-out training prompts are covered by construction).", "",
                  "| protocol | configuration | threshold PGR (target 0.80) | covered share | "
                  "APGR covered | APGR uncovered |", "|---" * 6 + "|"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        for p in pairs:
            for c in configs:
                r = results[p]["rows"].get(c)
                if r is None or "threshold_pgr" not in r:
                    continue
                lines.append(f"| {p} | {CONFIGS[c][0]} | {fmt(r['threshold_pgr'])} | "
                             f"{100 * r['covered_share']:.1f} % | {fmt(r['covered_apgr'])} | "
                             f"{fmt(r['uncovered_apgr'])} |")
    chats = [p for p, r in results.items() if r.get("chat")]
    if chats:
        lines += ["", "## Real-chat protocols (arena-rated: Spearman's rho with the prompts' "
                  "difficulty; arena-battles: APGR on the users' votes; ± bootstrap error; "
                  "in brackets the difference to the default ± its paired error)", "",
                  "| protocol | n | random | length | " + " | ".join(
                      CONFIGS[c][0] for c in configs if not isinstance(CONFIGS[c][1], tuple))
                  + " |", "|---" * (4 + sum(not isinstance(CONFIGS[c][1], tuple)
                                            for c in configs)) + "|"]
        for p in chats:
            r = results[p]["rows"]
            key = "rho" if p == "arena-rated" else "apgr"
            cells = []
            for c in configs:
                if isinstance(CONFIGS[c][1], tuple):
                    continue
                if c not in r:
                    cells.append("-")
                    continue
                cell = f"{r[c][key]:.3f} ± {r[c]['se']:.3f}"
                if "minus_default_se" in r[c] and _ref(r[c]) in r:
                    cell += (f" [{r[c][key] - r[_ref(r[c])][key]:+.3f}"
                             f"±{r[c]['minus_default_se']:.3f}{_vs(r[c])}]")
                cells.append(cell)
            n = next(r[c]["n"] for c in r)
            lines.append(f"| {p} | {n} | {r['random'][key]:.3f} | {r['length'][key]:.3f} | "
                         + " | ".join(cells) + " |")
    scored = [c for c in configs if not isinstance(CONFIGS[c][1], tuple)]
    lines += _products_markdown(results, scored)
    if multis:
        lines += ["", "## Multi-model protocols", "",
                  "| protocol | configuration | n | AIQ | highest quality | cost share at the "
                  "best single model's quality | best single model (quality, $/request) | "
                  "oracle AIQ | oracle cost share |", "|---" * 9 + "|"]
        for p in multis:
            for c in configs:
                r = results[p]["rows"].get(c)
                if r is None:
                    continue
                share = "-" if r["cost_share_at_best"] is None else f"{100 * r['cost_share_at_best']:.1f} %"
                osh = "-" if r["oracle_cost_share_at_best"] is None \
                    else f"{100 * r['oracle_cost_share_at_best']:.1f} %"
                lines.append(f"| {p} | {CONFIGS[c][0]} | {r['n']} | {r['aiq']:.3f} | "
                             f"{r['max_quality']:.3f} | {share} | {r['best_model']} "
                             f"({r['best_quality']:.3f}, ${r['best_cost']:.2e}) | "
                             f"{r['oracle_aiq']:.3f} | {osh} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
