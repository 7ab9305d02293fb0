"""Where a router sends textbook prompts: everyday tasks any model does (extraction,
classification, translation, formatting, greetings, short facts) and hard ones (proofs,
competition maths, tricky code). Prints each prompt's model and score, and the share of cheap
prompts sent to the strong model, the AUC of hard over cheap prompts, and the scores of
"Prove that there are infinitely many primes." and "hi".

    python benchmarks/bench_textbook.py [--model models/default]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHEAP = [
    "What is 2+2?", "hi", "", "Thanks!", "What is the capital of France?",
    "Extract the date from: meeting on 3 May", "Classify this ticket: my invoice is wrong",
    "Translate 'good morning' into Spanish.", "Fix the typo: 'I recieved your email.'",
    "Summarise in one sentence: The meeting moved to Tuesday because the room was booked.",
    "Format this as a bulleted list: apples, pears, plums",
    "Is this review positive or negative? 'The food was great and the staff friendly.'",
    "Convert 5 kilometres to miles.", "Give me a synonym for 'happy'.",
    "Write a subject line for an email about tomorrow's team lunch.",
    "Extract the email address from: contact jane.doe@example.com for details",
    "Sort these words alphabetically: pear, apple, fig",
    "What day comes after Monday?", "Rewrite in the passive voice: The cat chased the mouse.",
    "Tag the language of this sentence: 'Wo ist der Bahnhof?'",
]
HARD = [
    "Find all positive integer solutions of x^2 - 61 y^2 = 1 and prove that your smallest "
    "solution is minimal.",
    "Prove that there are infinitely many primes of the form 4k + 3.",
    "Write a lock-free multi-producer multi-consumer queue in C++ and argue why it is "
    "linearizable.",
    "Derive the closed form of the sum of k^3 for k = 1..n and prove it by induction.",
    "A bag has 5 red and 7 blue balls; three are drawn without replacement. What is the "
    "probability that at least two are red? Show the working.",
    "Explain why the halting problem is undecidable, with a proof by diagonalisation.",
    "Design a database schema for a multi-tenant SaaS billing system with usage-based "
    "pricing, and write the SQL to compute each tenant's monthly invoice.",
    "Solve the recurrence T(n) = 2T(n/2) + n log n and justify each step.",
]


# the sanity pair of a new user's first try: a proof should score above a greeting
PROBES = ("Prove that there are infinitely many primes.", "hi")


def auc(hard, cheap) -> float:
    """The chance that a hard prompt scores above a cheap one (ties count half)."""
    h, c = np.asarray(hard, dtype=np.float64)[:, None], np.asarray(cheap, dtype=np.float64)[None]
    return float(((h > c) + 0.5 * (h == c)).mean())


def textbook_metrics(router, n_boot: int = 1000, seed: int = 0) -> dict:
    """A two-model router on the textbook prompts: the AUC of hard over cheap (with a
    bootstrap error, cheap and hard prompts resampled apart), the shares of each kind its
    threshold sends to the strong model, and the probes' scores."""
    cheap, hard = router.score(CHEAP), router.score(HARD)
    rng = np.random.default_rng(seed)
    boots = [auc(hard[rng.integers(0, len(hard), len(hard))],
                 cheap[rng.integers(0, len(cheap), len(cheap))]) for _ in range(n_boot)]
    return {"n": len(CHEAP) + len(HARD), "auc": auc(hard, cheap), "se": float(np.std(boots)),
            "cheap_strong_share": float((cheap >= router.threshold).mean()),
            "hard_strong_share": float((hard >= router.threshold).mean()),
            "probes": dict(zip(PROBES, map(float, router.score(list(PROBES))))),
            "scores": {"cheap": cheap.tolist(), "hard": hard.tolist()}}


def main(argv=None) -> int:
    from router_ml import load_router

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    args = p.parse_args(argv)
    router = load_router(args.model)
    if router.threshold is None:
        p.error("a two-model router is needed (a threshold)")
    for kind, prompts in (("cheap", CHEAP), ("hard", HARD)):
        routes = router.route_batch(prompts)
        strong = sum(d.model == router.strong_model for d in routes)
        print(f"\n{kind} prompts: {strong} of {len(prompts)} to {router.strong_model} "
              f"({100 * strong / len(prompts):.0f} %)")
        for text, d in zip(prompts, routes):
            print(f"  {d.model:<28} {d.score:.3f}  {text[:70]!r}")
    m = textbook_metrics(router)
    print(f"\nAUC (hard above cheap): {m['auc']:.3f} ± {m['se']:.3f}")
    for text, v in m["probes"].items():
        print(f"  {v:.3f}  {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
