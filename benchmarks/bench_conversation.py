"""Conversations: what a router's score does with a chat's earlier turns, for each way of
reading them, on real Chatbot Arena prompts (arena-battles-2023).

    python benchmarks/bench_conversation.py [--model models/default] [--out docs/reports/conversation]

Candidates (u_1 .. u_k: the user turns, u_k the last; s(x): the router's score of text x):

- ``last``: s(u_k), the last user turn alone (router_ml 0.1's rule);
- ``newest first``: s(u_k + u_{k-1} + ... + u_1), the turns joined by a blank line, the
  earlier ones cut to ``CONTEXT_CHARS`` characters: ``router.score(messages)`` now, checked
  against this benchmark's own concatenation;
- ``oldest first``: s(u_1 + ... + u_k), whole;
- ``max``: max(s(u_k), s(earlier)), earlier = the earlier turns newest first, cut; and
  ``max 0.8``: max(s(u_k), 0.8 s(earlier));
- ``blend``: w s(u_k) + (1 - w) s(earlier), w = len(u_k) / (len(u_k) + len(earlier)): a short
  follow-up leans on what came before;
- ``newest first, prior on longest``: the newest-first text's learned score with the length
  prior read on the longest user turn instead of the whole text.

Measurements (docs/protocols.md, "Conversations"):

1. arena-rated conversations: each of the 236 prompts of the ``arena-rated`` protocol in
   three two-turn conversations, an assistant turn between: ``follow-up`` (the prompt, then a
   generic follow-up from FOLLOW_UPS), ``opener`` (a greeting from OPENERS, then the prompt)
   and ``switch`` (another rated prompt, then the prompt). Truth: the prompt's difficulty.
   Spearman's rho of the conversation's score with it, with a bootstrap error (1,000
   resamples), and the share sent to the strong model at the router's threshold. Which
   follow-up or opener a prompt gets, and which prompt comes before it in ``switch``, is fixed
   by fold order (sha256 of the prompt).
2. The real multi-turn battles (every battle with 2-7 user turns): rho of the second turn's
   score with the first turn's rated difficulty where it is in the arena-rated test set;
   the share of later turns (2nd and after, each scored with the turns before it) sent to the
   strong model, and the share of them sent to the weak model although the first turn went
   to the strong one ("bounce"); APGR of the last turn's score on the battles whose models'
   Bradley-Terry ratings differ by at least 100 Elo points (the ``arena-battles`` rule).

Two routers: the default recipe trained on the ``arena-rated`` protocol's rows (every
training row minus the rows that match a test prompt; ``recipe``), and the committed
``models/default`` (trained on every row, the rated grades of these prompts included: its
arena-rated numbers are optimistic, shown for the speed and the multi-turn shares). Speed:
``route()`` p50 on the real conversations' second turns, the conversation against its last
turn alone. Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from router_ml import load_router
from router_ml.core.prompts import CONTEXT_CHARS, TURN_SEPARATOR
from router_ml.core.router import pair_score
from router_ml.learn import arena
from router_ml.learn.evaluation import apgr
from router_ml.learn.sources import resolve_data_dir

ROOT = Path(__file__).resolve().parent.parent

# generic follow-ups, none about the first turn's subject
FOLLOW_UPS = [
    "Rewrite your answer so that it is half as long.",
    "Can you explain that in more detail?",
    "Translate your answer into French.",
    "Continue.",
    "Are you sure? Please double-check it.",
    "Summarize that in three bullet points.",
    "Make it more formal.",
    "Give me another example.",
    "Why?",
    "Now explain it to a ten-year-old.",
    "Put that in a table.",
    "That's wrong, try again.",
    "ok, commit it",
    "Thanks! Can you shorten it?",
]
OPENERS = ["Hi!", "Hello, can you help me with something?", "hey", "Good morning.",
           "Are you there?", "I have a question."]
# the assistant turn between two user turns (the data holds no answers)
ANSWER = "Sure, here is my answer."


def _key(text: str) -> int:
    return int(hashlib.sha256(text.strip().encode("utf-8")).hexdigest(), 16)


def messages(turns: list[str]) -> list[dict]:
    """A chat of these user turns, each but the last answered by ANSWER."""
    out = []
    for i, t in enumerate(turns):
        out.append({"role": "user", "content": t})
        if i < len(turns) - 1:
            out.append({"role": "assistant", "content": ANSWER})
    return out


def _earlier(turns: list[str]) -> str:
    return TURN_SEPARATOR.join(reversed(turns[:-1]))[:CONTEXT_CHARS]


def _newest_first(turns: list[str]) -> str:
    e = _earlier(turns)
    return turns[-1] + TURN_SEPARATOR + e if e else turns[-1]


def _score_with_length(router, texts, length_texts) -> np.ndarray:
    """The pair score of ``texts`` with the length prior read on ``length_texts``."""
    s = pair_score(router.decision_function(texts), router.score_rule)
    if router.length_prior is not None:
        s = router.length_prior.apply(s, [len(t) for t in length_texts])
    return s


def candidates(router, convs: list[list[str]]) -> dict[str, np.ndarray]:
    """{candidate: (n,) scores} for conversations given as their user turns (2 or more)."""
    last = router.score([c[-1] for c in convs])
    early = router.score([_earlier(c) for c in convs])
    n_last = np.array([len(c[-1]) for c in convs], dtype=np.float64)
    n_early = np.array([len(_earlier(c)) for c in convs], dtype=np.float64)
    w = n_last / np.maximum(n_last + n_early, 1.0)
    library = router.score([messages(c) for c in convs])
    own = router.score([_newest_first(c) for c in convs])
    if not np.array_equal(library, own):
        raise AssertionError("router.score(messages) differs from the newest-first text")
    return {
        "last": last,
        "newest first": library,
        "oldest first": router.score([TURN_SEPARATOR.join(c) for c in convs]),
        "max": np.maximum(last, early),
        "max 0.8": np.maximum(last, 0.8 * early),
        "blend": w * last + (1 - w) * early,
        "newest first, prior on longest": _score_with_length(
            router, [_newest_first(c) for c in convs], [max(c, key=len) for c in convs]),
    }


def rated_conversations(prompts: list[str]) -> dict[str, list[list[str]]]:
    """The three constructions of measurement 1, each (n,) conversations of user turns whose
    truth is prompts[i]'s difficulty."""
    order = sorted(range(len(prompts)), key=lambda i: _key(prompts[i]))
    before = {order[j]: order[j - 1] for j in range(len(order))}
    return {
        "follow-up": [[p, FOLLOW_UPS[_key(p) % len(FOLLOW_UPS)]] for p in prompts],
        "opener": [[OPENERS[_key(p) % len(OPENERS)], p] for p in prompts],
        "switch": [[prompts[before[i]], p] for i, p in enumerate(prompts)],
    }


def read_multi_turn(data_dir=None) -> list[dict]:
    """The battles with two or more user turns: {turns, model_a, model_b, winner}."""
    path = resolve_data_dir(data_dir) / arena.SOURCE_DIR / "battles.jsonl"
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            t = o.get("turns")
            if isinstance(t, list) and len(t) >= 2 and all(isinstance(x, str) for x in t):
                out.append({k: o.get(k) for k in ("turns", "model_a", "model_b", "winner")})
    return out


def measure(router, prompts, difficulty, multi, ratings) -> dict:
    out = {"single turn": {"rho": arena.rated_metric(router.score(prompts), difficulty)}}
    results: dict = {}
    for name, convs in rated_conversations(prompts).items():
        for c, s in candidates(router, convs).items():
            r = arena.rated_metric(s, difficulty)
            results.setdefault(c, {})[name] = {"rho": r["rho"], "se": r["se"],
                                               "strong": float(np.mean(s >= router.threshold))}
    # the real multi-turn battles
    rated = dict(zip(prompts, difficulty))
    second = [b["turns"][:2] for b in multi]
    first_strong = router.score([b["turns"][0] for b in multi]) >= router.threshold
    later, later_first = [], []
    for b, fs in zip(multi, first_strong):
        for k in range(2, len(b["turns"]) + 1):
            later.append(b["turns"][:k])
            later_first.append(fs)
    later_first = np.array(later_first)
    with_rating = [i for i, b in enumerate(multi) if b["turns"][0] in rated]
    gap = [i for i, b in enumerate(multi)
           if abs(ratings[b["model_a"]] - ratings[b["model_b"]]) >= arena.MIN_ELO_GAP]
    qs = np.array([_stronger_quality(multi[i], ratings) for i in gap])
    c2, cl = candidates(router, second), candidates(router, later)
    c_end = candidates(router, [multi[i]["turns"] for i in gap])
    for c in results:
        strong = cl[c] >= router.threshold
        r = arena.rated_metric(c2[c][with_rating], [rated[multi[i]["turns"][0]]
                                                   for i in with_rating])
        results[c]["multi-turn"] = {
            "rho_second": r["rho"], "se_second": r["se"], "n_rated": len(with_rating),
            "strong_later": float(strong.mean()), "n_later": len(later),
            "bounce": float(np.mean(later_first & ~strong)),
            "apgr_vote": apgr(c_end[c], qs, 1.0 - qs), "n_vote": len(gap)}
    out["first turns strong"] = float(first_strong.mean())
    out["candidates"] = results
    return out


def _stronger_quality(b, ratings) -> float:
    strong = "model_a" if ratings[b["model_a"]] > ratings[b["model_b"]] else "model_b"
    return 1.0 if b["winner"] == strong else 0.5 if b["winner"].startswith("tie") else 0.0


def speed(router, multi, repeats: int = 5) -> dict:
    """route() p50 (ms) on the second turns of the real conversations: the conversation's
    messages, and its last turn alone (the same request scored the old way), interleaved;
    and a single prompt as str and as one user message."""
    convs = [messages(b["turns"][:2]) for b in multi]
    lasts = [b["turns"][1] for b in multi]
    firsts = [b["turns"][0] for b in multi]
    one = [[{"role": "user", "content": p}] for p in firsts]
    for x in convs + lasts + firsts:  # warm the encoder's chunk cache on every text
        router.route(x)
    t = {"conversation": [], "last turn": [], "str": [], "one user message": []}
    for _ in range(repeats):
        for cv, la, fi, on in zip(convs, lasts, firsts, one):
            for name, x in (("conversation", cv), ("last turn", la), ("str", fi),
                            ("one user message", on)):
                t0 = time.perf_counter()
                router.route(x)
                t[name].append(time.perf_counter() - t0)
    p50 = {k: float(np.percentile(v, 50) * 1000) for k, v in t.items()}
    return {"p50_ms": p50, "n": len(convs) * repeats,
            "ratio_conversation_to_last_turn": p50["conversation"] / p50["last turn"],
            "ratio_one_message_to_str": p50["one user message"] / p50["str"]}


def recipe_router(workdir: Path):
    """The default recipe trained on the arena-rated protocol's training rows (the test
    prompts and every row that matches one dropped), saved and reloaded."""
    from router_ml.learn.protocols import protocol_folds, with_outcomes
    from router_ml.learn.training import DEFAULT_ROUTER, fit_router

    (fold,) = protocol_folds("arena-rated", extra=DEFAULT_ROUTER.extra)
    if DEFAULT_ROUTER.estimator == "difficulty":
        (fold,) = with_outcomes([fold], DEFAULT_ROUTER.outcomes)
    fit_router(fold.train, DEFAULT_ROUTER, None, outcomes=fold.outcomes).save(workdir)
    return load_router(workdir), fold.dropped


def to_markdown(res: dict) -> str:
    lines = ["# Conversations", "",
             f"`{res['command']}` ({res['machine']}). Candidates and measurements: "
             "docs/protocols.md, \"Conversations\". rho: Spearman's rho of the score with "
             "the rated prompt's difficulty (± bootstrap error); strong: the share routed to "
             "the strong model at the router's threshold.", ""]
    for key, title in (("recipe", "Default recipe trained without the arena-rated test "
                        "prompts"), ("committed", "models/default (committed; trained on the "
                                     "rated grades of these prompts: optimistic rho)")):
        r = res[key]
        st = r["single turn"]["rho"]
        lines += [f"## {title}", "",
                  f"The rated prompts alone: rho {st['rho']:.3f} ± {st['se']:.3f} "
                  f"(n {st['n']}); first turns of the real multi-turn battles sent to the "
                  f"strong model: {r['first turns strong']:.0%}.", "",
                  "| candidate | follow-up rho | strong | opener rho | strong | switch rho | "
                  "strong | real 2nd turn rho | later turns strong | bounce | vote APGR |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c, v in r["candidates"].items():
            m = v["multi-turn"]
            cells = [f"{v[k]['rho']:.3f} ± {v[k]['se']:.3f} | {v[k]['strong']:.0%}"
                     for k in ("follow-up", "opener", "switch")]
            name = f"**{c}** (chosen)" if c == "newest first" else c
            lines.append(f"| {name} | {' | '.join(cells)} | {m['rho_second']:.3f} ± "
                         f"{m['se_second']:.3f} | {m['strong_later']:.0%} | {m['bounce']:.0%} "
                         f"| {m['apgr_vote']:.3f} |")
        m = r["candidates"]["last"]["multi-turn"]
        lines += ["", f"Real multi-turn battles: rho on the {m['n_rated']} whose first turn is "
                  f"an arena-rated test prompt; shares over {m['n_later']} later turns; vote "
                  f"APGR on the {m['n_vote']} battles between models >= 100 Elo apart.", ""]
    sp = res["speed"]
    lines += ["## Speed (models/default, route() p50)", "",
              "| request | p50 ms |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in sp["p50_ms"].items()]
    lines += ["", f"A two-turn conversation against its last turn alone: "
              f"{sp['ratio_conversation_to_last_turn']:.2f}x; one user message against the "
              f"same str: {sp['ratio_one_message_to_str']:.2f}x ({sp['n']} calls each).",
              "", "The assistant's answers (candidate d) are not measured: the data holds "
              "none (the battles keep the user turns only).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "reports" / "conversation")
    args = p.parse_args(argv)
    battles = arena.load_arena_battles(args.data_dir)
    prompts, difficulty = battles.rated_prompts()
    multi = read_multi_turn(args.data_dir)
    ratings = arena.bradley_terry(battles.battles)
    res = {"command": "python benchmarks/bench_conversation.py",
           "machine": f"{platform.machine()}, {platform.python_version()}",
           "context_chars": CONTEXT_CHARS, "follow_ups": FOLLOW_UPS, "openers": OPENERS}
    committed = load_router(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        recipe, dropped = recipe_router(Path(tmp) / "router")
        print(f"trained the recipe on the arena-rated rows in {time.perf_counter() - t:.0f} s "
              f"({dropped} rows matching a test prompt dropped)", flush=True)
        res["recipe"] = measure(recipe, prompts, difficulty, multi, ratings)
        res["recipe"]["rows_dropped"] = dropped
    res["committed"] = measure(committed, prompts, difficulty, multi, ratings)
    res["speed"] = speed(committed, multi)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    md = to_markdown(res)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
