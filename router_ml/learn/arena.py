"""arena-battles-2023: real Chatbot Arena prompts, the user's vote, and for 478 battles the mean
GPT-4 grade of 11 models' answers; and the two real-chat protocols built on them (the
protocols' definitions: docs/protocols.md).

- :func:`load_arena_battles`: every battle (prompt, model_a, model_b, winner) and the rated
  prompts (difficulty = 10 - mean grade; a prompt rated in several battles gets the mean).
- :func:`load_arena_rated`: the rated prompts as a source of outcomes for training (one
  pseudo-model, ``arena-grade-11``, of quality grade / 10 (the grades, truncated to integers,
  run from 0 to 10): what is hard for a pool of 11 models, with no pair in it).
- ``arena-rated``: the distinct rated prompts that are not in arena-hard-v1 (236); Spearman's
  rho between a router's score and the difficulty, with a bootstrap standard error
  (:func:`rated_metric`).
- ``arena-battles``: Bradley-Terry ratings fitted on all battles (a tie is half a win each);
  the battles whose two models differ by at least 100 Elo points; the stronger model's quality
  is 1 if it won, 0.5 on a tie, 0 if it lost, the weaker's 1 minus that; APGR of a router's
  pair score with a bootstrap standard error (:func:`battle_rows`, :func:`battles_metric`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from router_ml.core.metrics import apgr
from router_ml.learn.evaluation import rated_metric, spearman
from router_ml.learn.rows import Rows, to_dataset
from router_ml.learn.sources import RecordsBuilder, read_jsonl, resolve_data_dir, source_dir

logger = logging.getLogger(__name__)

SOURCE_DIR = "arena-battles-2023"
GRADE_MODEL = "arena-grade-11"
ELO_SCALE = 400.0 / np.log(10.0)
MIN_ELO_GAP = 100.0
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")


@dataclass(frozen=True)
class ArenaBattles:
    """battles: dicts {prompt, model_a, model_b, winner, in_arena_hard_v1}; rated: {prompt:
    difficulty = 10 - mean grade}; rated_in_arena_hard: {prompt: bool}."""

    battles: list
    rated: dict
    rated_in_arena_hard: dict

    def rated_prompts(self) -> tuple[list[str], np.ndarray]:
        """The ``arena-rated`` test set: the distinct rated prompts that some rated battle
        does not flag as in arena-hard-v1 (236), sorted, and their difficulties."""
        ps = sorted(p for p in self.rated if not self.rated_in_arena_hard[p])
        return ps, np.array([self.rated[p] for p in ps], dtype=np.float64)


def load_arena_battles(data_dir=None) -> ArenaBattles:
    """Read arena-battles-2023/battles.jsonl, once per process and data folder (the result is
    shared: read it, do not change it). Bad rows (no prompt, no models, an unknown winner, a
    grade that is not a number) are skipped and counted in the log."""
    return _battles(resolve_data_dir(data_dir).resolve())


@functools.lru_cache(maxsize=None)
def _battles(root) -> ArenaBattles:
    path = source_dir(root, SOURCE_DIR) / "battles.jsonl"
    battles, grades, in_ah, skipped = [], {}, {}, 0
    for o in read_jsonl(path):
        p, w = o.get("prompt"), o.get("winner")
        if not isinstance(p, str) or not p.strip() or w not in WINNERS \
                or not o.get("model_a") or not o.get("model_b"):
            skipped += 1
            continue
        ah = bool(o.get("in_arena_hard_v1"))
        battles.append({"prompt": p, "model_a": o["model_a"], "model_b": o["model_b"],
                        "winner": w, "in_arena_hard_v1": ah})
        g = o.get("mean_gpt4_grade_11models")
        if g is None:
            continue
        try:
            g = float(g)
        except (TypeError, ValueError):
            skipped += 1
            continue
        if np.isfinite(g):
            grades.setdefault(p, []).append(g)
            # a prompt is in the test set when some rated battle of it is not flagged (the
            # protocol's 236; 25 of them are arena-hard-v1 prompts by another battle's flag,
            # and decontamination drops those from training)
            in_ah[p] = in_ah.get(p, True) and ah
    if skipped:
        logger.warning("%s: skipped %d bad rows", path, skipped)
    return ArenaBattles(battles, {p: 10.0 - float(np.mean(v)) for p, v in grades.items()}, in_ah)


def load_arena_rated(data_dir=None):
    """The rated prompts as a Dataset of the records of :mod:`router_ml.learn.sources`, with
    one pseudo-model :data:`GRADE_MODEL` of quality mean grade / 10 (source ``arena-rated``)."""
    return to_dataset(rated_rows(load_arena_battles(data_dir)))


def rated_rows(arena: ArenaBattles) -> Rows:
    """:func:`load_arena_rated`'s records as rows, from the battles already read."""
    bld = RecordsBuilder(f"{SOURCE_DIR} (rated)")
    for p in sorted(arena.rated):
        bld.add(p, "arena-rated", "arena", {GRADE_MODEL: (10.0 - arena.rated[p]) / 10.0})
    return bld.rows([GRADE_MODEL])


def bradley_terry(battles, iters: int = 2000, tol: float = 1e-10) -> dict:
    """Elo-scale ratings (mean 0) of a Bradley-Terry fit on the battles, a tie counting as
    half a win for each side (Hunter's minorise-maximise updates)."""
    models = sorted({b["model_a"] for b in battles} | {b["model_b"] for b in battles})
    ix = {m: i for i, m in enumerate(models)}
    wins = np.zeros((len(models), len(models)))  # wins[i, j]: (half-)wins of i over j
    for b in battles:
        i, j = ix[b["model_a"]], ix[b["model_b"]]
        if b["winner"] == "model_a":
            wins[i, j] += 1
        elif b["winner"] == "model_b":
            wins[j, i] += 1
        else:
            wins[i, j] += 0.5
            wins[j, i] += 0.5
    n, won = wins + wins.T, wins.sum(axis=1)
    p = np.ones(len(models))
    for _ in range(iters):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.maximum(np.where(denom > 0, won / np.maximum(denom, 1e-300), p), 1e-12)
        new /= np.exp(np.mean(np.log(new)))
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    r = ELO_SCALE * np.log(p)
    return {m: float(r[ix[m]] - r.mean()) for m in models}


def battle_rows(arena: ArenaBattles, min_gap: float = MIN_ELO_GAP):
    """The ``arena-battles`` test rows: (prompts, q_strong, q_weak) of the battles whose
    models' ratings (fitted on all battles) differ by at least ``min_gap`` Elo points."""
    ratings = bradley_terry(arena.battles)
    prompts, qs = [], []
    for b in arena.battles:
        ra, rb = ratings[b["model_a"]], ratings[b["model_b"]]
        if abs(ra - rb) < min_gap:
            continue
        strong = "model_a" if ra > rb else "model_b"
        prompts.append(b["prompt"])
        qs.append(1.0 if b["winner"] == strong else 0.5 if b["winner"].startswith("tie") else 0.0)
    qs = np.array(qs)
    return prompts, qs, 1.0 - qs


def battles_metric(scores, q_strong, q_weak, n_boot: int = 1000, seed: int = 0) -> dict:
    """{"n", "apgr", "se"}: APGR of the scores on the battle rows, and its bootstrap
    standard error."""
    s = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(s), len(s))
        try:
            boots.append(apgr(s[i], q_strong[i], q_weak[i]))
        except ValueError:  # a resample where both models are equally good
            pass
    return {"n": len(s), "apgr": apgr(s, q_strong, q_weak), "se": float(np.std(boots))}
