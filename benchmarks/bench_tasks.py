"""Task detection: quality on a labelled set of public and hand-written prompts, and speed.

    python benchmarks/bench_tasks.py [--data DIR] [--draws 40] [--n 2000] [--out docs/reports]

The labelled set is built at run time (nothing of the shared data is copied):
- arena-hard-v2-prompts: real Chatbot Arena prompts labelled coding -> code, math -> math,
  creative_writing -> writing (all 750);
- routellm-evals: 250 MMLU questions -> knowledge (the maths subjects left out: abstract
  algebra, college/elementary/high-school mathematics, high-school statistics) and 250 GSM8K
  word problems -> math, drawn with seed 0, contaminated prompts dropped;
- benchmarks/data/task_prompts.jsonl: 16 hand-written prompts for each of reasoning,
  extraction, classification, summarisation, translation, role_play and chit_chat (written
  for this benchmark, apart from the default task set's examples).

It runs the detector with
(a) the default task set (router_ml/loop/default_tasks.toml) on every labelled prompt;
(b) a rules file of 8 tasks of 6 examples each: per draw (seeds 0-39 unless ``--first-draw``
    and ``--draws`` say otherwise), 8 of the 11 task types at random,
    6 prompts of each as the definitions, up to 20 others of each as the test prompts (so the
    definitions are never tested); the mean accuracy over ``--draws`` draws, and the accuracy
    on the test prompts of the public sources alone (the hand-written ones left out).
For each method of the table (the chosen one on the package's task embedding, the detector
without each of its parts, the same on the router's 64-dimension static embedding, the nearest
centroid, the most similar example and a 3-NN vote), it prints accuracy, per-task precision and recall and the confusion matrix of the
chosen method, and the time: p50 per single text (``detect``) and per text in batches of 64
(``detect_batch``), on the labelled prompts, after one pass that warms the tokenizer cache.
``--minilm`` adds all-MiniLM-L6-v2 (needs router_ml[embeddings]) as a reference.
Writes docs/reports/tasks.json and tasks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from router_ml.learn.sources import resolve_data_dir
from router_ml.loop.tasks import TaskDetector, TaskSpec, default_tasks, task_encoder

ROOT = Path(__file__).resolve().parent.parent
HAND = ROOT / "benchmarks" / "data" / "task_prompts.jsonl"
MATH_SUBJECTS = {"abstract_algebra", "college_mathematics", "elementary_mathematics",
                 "high_school_mathematics", "high_school_statistics"}
ARENA = {"coding": "code", "math": "math", "creative_writing": "writing"}


def labelled_set(data: Path, n_mmlu: int = 250, n_gsm8k: int = 250, seed: int = 0):
    """[(task, prompt, source)] of the sources above."""
    rows = []
    with open(data / "arena-hard-v2-prompts" / "prompts.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.append((ARENA[r["subcategory"]], r["prompt"], "arena-hard-v2"))
    csv.field_size_limit(2**31 - 1)
    evals = data / "routellm-evals"

    def contaminated(name):
        with open(evals / name / "contaminated_prompts.jsonl", encoding="utf-8") as f:
            return {json.loads(line)["eval_prompt"] for line in f}

    bad, mmlu = contaminated("mmlu"), []
    for path in sorted((evals / "mmlu" / "responses").glob("mmlu_*.csv")):
        if path.stem.removeprefix("mmlu_") in MATH_SUBJECTS:
            continue
        with open(path, encoding="utf-8") as f:
            mmlu += [r["prompt"] for r in csv.DictReader(f) if r["prompt"] not in bad]
    bad = contaminated("gsm8k")
    with open(evals / "gsm8k" / "gsm8k_responses.csv", encoding="utf-8") as f:
        gsm8k = [r["prompt"] for r in csv.DictReader(f) if r["prompt"] not in bad]
    rng = random.Random(seed)
    rows += [("knowledge", p, "mmlu") for p in rng.sample(mmlu, n_mmlu)]
    rows += [("math", p, "gsm8k") for p in rng.sample(gsm8k, n_gsm8k)]
    with open(HAND, encoding="utf-8") as f:
        rows += [(r["task"], r["prompt"], "hand-written") for r in map(json.loads, f)]
    return rows


def _unit(X):
    return X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-12)


class Baseline:
    """The plain methods the detector is compared with, on an encoder's embedding: the nearest
    centroid, the most similar example ("max") or a vote of the 3 most similar examples."""

    def __init__(self, tasks, encoder, how):
        self.names = list(tasks)
        texts = [e for s in tasks.values() for e in s.examples]
        self.owner = np.array([k for k, s in enumerate(tasks.values()) for _ in s.examples])
        self.E = _unit(encoder.transform(texts))
        self.C = _unit(np.stack([self.E[self.owner == k].mean(0) for k in range(len(tasks))]))
        self.encoder, self.how = encoder, how

    def detect_batch(self, texts):
        X = _unit(self.encoder.transform(list(texts)))
        if self.how == "centroid":
            S = X @ self.C.T
        else:
            sim = X @ self.E.T
            if self.how == "max":
                S = np.stack([sim[:, self.owner == k].max(1) for k in range(len(self.names))], 1)
            else:  # 3-NN vote, ties to the most similar example
                top = np.argsort(-sim, 1)[:, :3]
                S = np.stack([(self.owner[top] == k).sum(1) + 1e-3 * sim[:, self.owner == k]
                              .max(1) for k in range(len(self.names))], 1)
        return [(self.names[b], float(S[i, b])) for i, b in enumerate(S.argmax(1))]


class Cached:
    """An encoder that encodes each text once (MiniLM is slow: the draws reuse prompts)."""

    def __init__(self, encoder):
        self.encoder, self.seen = encoder, {}

    def transform(self, texts):
        missing = [t for t in dict.fromkeys(texts) if t not in self.seen]
        if missing:
            self.seen.update(zip(missing, np.asarray(self.encoder.transform(missing))))
        return np.stack([self.seen[t] for t in texts])


def methods(static64, minilm=None, weights=()) -> dict:
    """{name: build(tasks) -> detector}; ``weights``: more weights of the words to compare."""
    # the package's task embedding (128-d, 4-bit) is the detector's default; static64 is the
    # router's 64-d embedding (models/static-minilm-64), which it used before
    task = task_encoder()
    out = {
        "chosen: task embedding, centred centroid + default prior + words": lambda t: TaskDetector(t),
        "without the default prior": lambda t: TaskDetector(t, prior=0),
        "without the words": lambda t: TaskDetector(t, lexical_weight=0),
        "words weighed 3 (before)": lambda t: TaskDetector(t, lexical_weight=3),
        "task embedding, centred centroid only": lambda t: TaskDetector(t, prior=0,
                                                                        lexical_weight=0),
        "task embedding, nearest centroid": lambda t: Baseline(t, task, "centroid"),
        "static-64 (the router's), the chosen method": lambda t: TaskDetector(t, static64),
        "static-64, words weighed 3 (before)": lambda t: TaskDetector(t, static64,
                                                                       lexical_weight=3),
        "static-64, nearest centroid": lambda t: Baseline(t, static64, "centroid"),
        "static-64, most similar example": lambda t: Baseline(t, static64, "max"),
        "static-64, 3-NN vote": lambda t: Baseline(t, static64, "knn"),
    }
    for w in weights:
        out[f"words weighed {w:g}"] = lambda t, w=w: TaskDetector(t, lexical_weight=w)
    if minilm is not None:
        out["MiniLM (reference), nearest centroid"] = lambda t: Baseline(t, minilm, "centroid")
    return out


def predict(detector, texts):
    return [t for t, _ in detector.detect_batch(texts)]


def draws_8x6(rows, n_draws: int, n_tasks: int = 8, n_examples: int = 6, n_test: int = 20,
              first: int = 0):
    """Per draw (seeds first, first + 1, ...): ({task: TaskSpec} of n_examples prompts each,
    [(task, prompt)] tests)."""
    by_task = {}
    for task, prompt, _ in rows:
        by_task.setdefault(task, []).append(prompt)
    names = sorted(by_task)
    for seed in range(first, first + n_draws):
        rng = random.Random(seed)
        specs, tests = {}, []
        for t in rng.sample(names, n_tasks):
            ps = rng.sample(by_task[t], len(by_task[t]))
            specs[t] = TaskSpec(t, tuple(ps[:n_examples]))
            tests += [(t, p) for p in ps[n_examples:n_examples + n_test]]
        yield specs, tests


def scores(truth, pred, labels):
    """accuracy, per-task precision/recall/n and the confusion matrix (rows: truth)."""
    truth, pred = np.array(truth, dtype=object), np.array(pred, dtype=object)
    cols = list(labels) + ["(none)"]
    pred = np.where(pred == None, "(none)", pred)  # noqa: E711 (element-wise)
    per = {}
    for t in labels:
        tp = int(((pred == t) & (truth == t)).sum())
        per[t] = {"precision": tp / max(int((pred == t).sum()), 1),
                  "recall": tp / max(int((truth == t).sum()), 1), "n": int((truth == t).sum())}
    conf = [[int(((truth == a) & (pred == b)).sum()) for b in cols] for a in labels]
    return {"accuracy": float((truth == pred).mean()),
            "balanced_accuracy": float(np.mean([per[t]["recall"] for t in labels])),
            "per_task": per, "confusion": {"rows": list(labels), "columns": cols,
                                           "counts": conf}}


def timing(detector, texts, n: int) -> dict:
    texts = (texts * (n // len(texts) + 1))[:n]
    detector.detect_batch(texts)  # the static encoder's token cache, as in a running server
    single = []
    for t in texts:
        t0 = time.perf_counter()
        detector.detect(t)
        single.append(time.perf_counter() - t0)
    batch = []
    for i in range(0, n, 64):
        t0 = time.perf_counter()
        detector.detect_batch(texts[i:i + 64])
        batch.append((time.perf_counter() - t0) / len(texts[i:i + 64]))
    ms = lambda a, q: float(np.percentile(a, q) * 1e3)  # noqa: E731
    return {"single_p50_ms": ms(single, 50), "single_p99_ms": ms(single, 99),
            "batch64_per_text_p50_ms": ms(batch, 50), "n": n}


def markdown(res: dict) -> str:
    lines = [f"Measured with `{res['command']}`.", "",
             f"Labelled set: {res['n_prompts']} prompts ({res['sources']}).", "",
             "| method | (a) default set: accuracy | (a) balanced accuracy | "
             "(b) 8 tasks x 6 examples: accuracy (mean ± s.e.) | (b) on its public prompts |",
             "|---|---|---|---|---|"]
    for name, m in res["methods"].items():
        lines.append(f"| {name} | {m['default']['accuracy']:.1%} | "
                     f"{m['default']['balanced_accuracy']:.1%} | "
                     f"{m['8x6']['mean']:.1%} ± {m['8x6']['se']:.1%} | "
                     f"{m['8x6']['real_prompts']:.1%} |")
    s3 = res["min_similarity_0.3"]
    lines += ["", f"(b) with `min_similarity = 0.3` on every task (the example of docs/tasks.md), "
              f"the chosen method: {s3['mean']:.1%} ± {s3['se']:.1%}, {s3['unknown']:.1%} of "
              "the test prompts unknown."]
    t = res["timing"]
    lines += ["", f"Speed of the chosen method ({t['n']} labelled prompts, tokenizer cache "
              f"warm): detect p50 {t['single_p50_ms']:.3f} ms (p99 {t['single_p99_ms']:.3f} ms); "
              f"detect_batch of 64, per text p50 {t['batch64_per_text_p50_ms']:.3f} ms.", "",
              "Similarity of the labelled prompts to the default task named (percentiles 1, 5, "
              "50, 95): " + ", ".join(f"{v:.2f}" for v in res["similarity_percentiles"].values())
              + ".", "",
              "#### The chosen method with the default task set, per task", "",
              "| task | precision | recall | n |", "|---|---|---|---|"]
    chosen = res["chosen_default"]
    for task, s in chosen["per_task"].items():
        lines.append(f"| {task} | {s['precision']:.1%} | {s['recall']:.1%} | {s['n']} |")
    c = chosen["confusion"]
    lines += ["", "Confusion matrix (rows: the label, columns: the task detected):", "",
              "| label | " + " | ".join(c["columns"]) + " |",
              "|---|" + "---|" * len(c["columns"])]
    for name, row in zip(c["rows"], c["counts"]):
        lines.append(f"| {name} | " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="the data folder (default: as "
                   "router-ml finds it)")
    p.add_argument("--draws", type=int, default=40)
    p.add_argument("--first-draw", type=int, default=0, help="the first draw's seed (the "
                   "method was chosen on draws 0-39; others check it)")
    p.add_argument("--weights", default="", help="more weights of the words to compare, "
                   "comma-separated (e.g. 3,5,10,20)")
    p.add_argument("--n", type=int, default=2000, help="texts timed")
    p.add_argument("--minilm", action="store_true", help="add MiniLM as a reference")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "reports")
    args = p.parse_args(argv)
    rows = labelled_set(resolve_data_dir(args.data))
    truth, texts = [t for t, _, _ in rows], [p for _, p, _ in rows]
    source = {p: s for _, p, s in rows}
    print(f"{len(rows)} labelled prompts: "
          f"{dict(Counter(t for t, _, _ in rows))}")
    from router_ml.learn.config import committed_static_encoder

    minilm = None
    if args.minilm:
        from router_ml.core.transformer import SentenceTransformerEncoder

        minilm = Cached(SentenceTransformerEncoder())
        minilm.transform(texts)
    defaults = default_tasks()
    labels = list(defaults)
    res = {"command": "python benchmarks/bench_tasks.py"
           + (f" --draws {args.draws}" if args.draws != 40 else "")
           + (f" --first-draw {args.first_draw}" if args.first_draw else "")
           + (f" --weights {args.weights}" if args.weights else "")
           + (" --minilm" if args.minilm else ""),
           "n_prompts": len(rows),
           "sources": ", ".join(f"{s} {n}" for s, n in Counter(s for *_, s in rows).items()),
           "methods": {}}
    draws = list(draws_8x6(rows, args.draws, first=args.first_draw))
    weights = [float(w) for w in args.weights.split(",") if w]
    for name, build in methods(committed_static_encoder(), minilm, weights).items():
        t0 = time.perf_counter()
        a = scores(truth, predict(build(defaults), texts), labels)
        accs, real = [], []
        for specs, tests in draws:
            ok = [p == t for p, (t, _) in zip(predict(build(specs), [x for _, x in tests]), tests)]
            accs.append(float(np.mean(ok)))
            real += [o for o, (_, x) in zip(ok, tests) if source[x] != "hand-written"]
        res["methods"][name] = {"default": {k: a[k] for k in ("accuracy", "balanced_accuracy")},
                                "8x6": {"mean": float(np.mean(accs)),
                                        "se": float(np.std(accs) / np.sqrt(len(accs))),
                                        "draws": len(accs), "real_prompts": float(np.mean(real))}}
        if name.startswith("chosen"):
            res["chosen_default"] = a
            sims = [x for _, x in build(defaults).detect_batch(texts)]
            res["similarity_percentiles"] = {str(q): float(np.percentile(sims, q))
                                             for q in (1, 5, 50, 95)}
        print(f"{name:<62} (a) {a['accuracy']:.3f} balanced {a['balanced_accuracy']:.3f}  "
              f"(b) {np.mean(accs):.3f} ± {np.std(accs) / np.sqrt(len(accs)):.3f} "
              f"real {np.mean(real):.3f}  "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    # every task of (b) with min_similarity = 0.3, as docs/tasks.md's example writes it
    accs, unknown = [], []
    for specs, tests in draws:
        strict = {k: replace(v, min_similarity=0.3) for k, v in specs.items()}
        got = predict(TaskDetector(strict), [x for _, x in tests])
        accs.append(float(np.mean([g == t for g, (t, _) in zip(got, tests)])))
        unknown.append(float(np.mean([g is None for g in got])))
    res["min_similarity_0.3"] = {"mean": float(np.mean(accs)), "unknown": float(np.mean(unknown)),
                                 "se": float(np.std(accs) / np.sqrt(len(accs)))}
    res["timing"] = timing(TaskDetector(defaults), texts, args.n)
    print(json.dumps(res["timing"]))
    md = markdown(res)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tasks.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "tasks.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
