"""The evaluation protocols of docs/protocols.md, so anyone recomputes the same splits.

fold(text) = int(sha256(text.strip().encode("utf-8")).hexdigest(), 16) % 5

Pair protocols (strong gpt-4-1106-preview, weak Mixtral-8x7B-Instruct-v0.1):

- ``mmlu``: train on MMLU rows with fold(prompt) != 0, test on fold(prompt) == 0.
- ``mmlu-subjects``: 5 folds by fold(subject); each fold's test subjects are unseen in training.
- ``gsm8k``: 5 folds by fold(prompt) on GSM8K.
- ``mmlu-to-gsm8k``: train on all MMLU, test on all GSM8K.
- ``arena-hard``: 5 folds by fold(prompt) on the arena-hard-v1 rows that score both models.
- ``alpaca-eval``: 5 folds by fold(instruction) on alpaca-eval-pairs (q_strong = 1 - p,
  q_weak = p, p = P(Mixtral better)).
- ``loso-mmlu``, ``loso-gsm8k``, ``loso-arena-hard``: train on every row of the other two of
  {mmlu, gsm8k, arena-hard}, test on every row of the named one.
- ``mixed``: 5 folds by fold(prompt) on the rows of GSM8K, arena-hard-v1 and alpaca-eval
  together: one team's mixed traffic (maths word problems, hard chat, everyday instructions).

Multi-model protocols (:data:`MULTI_PROTOCOLS`; prices from :func:`protocol_prices`):

- ``dcrouter``: train on llmrouter-dcrouter's train.json, test on test.json, its 9 models.
- ``alpaca-tiers``: 5 folds by fold(instruction) on alpaca-eval-pairs, the candidates and
  prices of its tiers.json.

Real-chat protocols (:data:`CHAT_PROTOCOLS`, :mod:`router_ml.learn.arena`): a configuration is
trained on every row it trains on, minus the test prompts, and tested on real Chatbot Arena
prompts:

- ``arena-rated``: the 236 rated prompts not in arena-hard-v1; Spearman's rho between the
  router's score and the prompts' difficulty (``Fold.difficulty``, 10 - the mean GPT-4 grade
  of 11 models' answers).
- ``arena-battles``: the battles between models at least 100 Elo points apart; APGR with the
  stronger model's vote as its quality.

Test questions never reach training through another source: every training row from a
source other than the test rows' whose normalised question matches a test row is dropped
and counted (``Fold.dropped``); so are extra sources' rows (``extra=("arena-hard",)``) and the
rows of every model's outcomes (``outcomes=``, for the difficulty estimator).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from router_ml.learn.rows import Rows, concat, union
from router_ml.learn.sources import read_source, resolve_data_dir

logger = logging.getLogger(__name__)

# The pair of the pair protocols (docs/protocols.md), strong first.
STRONG_MODEL = "gpt-4-1106-preview"
WEAK_MODEL = "Mixtral-8x7B-Instruct-v0.1"
PAIR_PROTOCOLS = ("mmlu", "mmlu-subjects", "gsm8k", "mmlu-to-gsm8k", "arena-hard", "alpaca-eval",
                  "loso-mmlu", "loso-gsm8k", "loso-arena-hard", "mixed")
MULTI_PROTOCOLS = ("dcrouter", "alpaca-tiers")
CHAT_PROTOCOLS = ("arena-rated", "arena-battles")
PROTOCOLS = PAIR_PROTOCOLS + MULTI_PROTOCOLS + CHAT_PROTOCOLS
# the sources of every model's outcomes that the difficulty estimator learns from (alpaca-eval
# is left out: its judge is the strong model, and as difficulty it ranks chat prompts worse)
OUTCOME_SOURCES = ("mmlu", "gsm8k", "arena-hard", "dcrouter", "arena-rated")
_LOSO = ("mmlu", "gsm8k", "arena-hard")
_MIXED = ("gsm8k", "arena-hard", "alpaca-eval")
N_FOLDS = 5


def fold(text: str) -> int:
    """The protocol fold (0-4) of a prompt or subject."""
    return int(hashlib.sha256(text.strip().encode("utf-8")).hexdigest(), 16) % N_FOLDS


_CHOICES = re.compile(r"(?:^|\n)\s*[\(\[]?A[\)\.\]:]\s")
_WORD = re.compile(r"[a-z0-9]+")
_KEY_WORDS = 24
_MIN_PREFIX_WORDS = 8


def question_words(text: str) -> list[str]:
    """The question stem as normalised words: the answer choices (from a line starting
    ``A.``, ``(A)``, ``A)`` on), ``Answer:``, case, white space and punctuation removed;
    at most the first 24 words."""
    m = _CHOICES.search(text)
    stem = text[: m.start()] if m else text
    return _WORD.findall(stem.lower().replace("answer:", " "))[:_KEY_WORDS]


def question_key(text: str) -> str:
    """A normalised key of a question (see :func:`question_words`)."""
    return " ".join(question_words(text))


class QuestionIndex:
    """Finds texts that hold one of the indexed questions, whatever their formatting.

    A text matches when its first words equal an indexed question's key: the whole key when
    the key is long (a formatting that appends an instruction or drops the choices still
    matches), the exact key when the question is shorter than 8 words. A false match only
    drops an extra training row, never a test row.
    """

    def __init__(self, texts):
        self._keys: dict[int, set[str]] = {}
        self._short: set[str] = set()
        for t in texts:
            w = question_words(t)
            if len(w) >= _MIN_PREFIX_WORDS:
                self._keys.setdefault(len(w), set()).add(" ".join(w))
            else:
                self._short.add(" ".join(w))

    def __contains__(self, text: str) -> bool:
        w = question_words(text)
        if " ".join(w) in self._short:
            return True
        return any(" ".join(w[:n]) in keys for n, keys in self._keys.items() if len(w) >= n)


@dataclass(frozen=True)
class Fold:
    """One train/test split of a protocol. k is the fold number (0-4), or None for a
    single-split protocol; dropped is the number of training rows from other sources removed
    because they match a test question."""

    protocol: str
    k: int | None
    train: Rows
    test: Rows
    dropped: int = 0
    # every model's outcomes on other prompts, for the difficulty estimator (with_outcomes)
    outcomes: Rows | None = None
    # arena-rated: the test prompts' difficulty (10 - mean grade), the truth of its metric
    difficulty: np.ndarray | None = None


def _pair_rows(source: str, data_dir, strong: str, weak: str) -> Rows:
    return read_source(source, data_dir).select([strong, weak], complete=True)


def _kfold(rows: Rows, keys) -> list[tuple[int, Rows, Rows]]:
    f = np.array([fold(str(t)) for t in keys])
    return [(k, rows.subset(f != k), rows.subset(f == k)) for k in range(N_FOLDS)]


def _filtered(train: Rows, test: Rows) -> tuple[Rows, int]:
    """train without the rows of other sources whose question matches a test question."""
    test_sources = set(test.sources)
    other = np.array([s not in test_sources for s in train.sources], dtype=bool)
    if not other.any():
        return train, 0
    index = QuestionIndex(test.prompts)
    drop = other & np.array([o and p in index for o, p in zip(other, train.prompts)], dtype=bool)
    return train.subset(~drop), int(drop.sum())


def protocol_folds(
    name: str,
    data_dir=None,
    *,
    strong: str = STRONG_MODEL,
    weak: str = WEAK_MODEL,
    extra: Sequence[str] = (),
) -> list[Fold]:
    """The train/test folds of a protocol (one for the single-split ones, five else).

    strong, weak: the pair of a pair protocol (ignored by multi-model protocols)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    data_dir = resolve_data_dir(data_dir).resolve()  # once: what follows takes it as it is
    if name in MULTI_PROTOCOLS:
        folds = _multi_folds(name, data_dir)
        return _with_extra(folds, extra, data_dir) if extra else folds
    if name in CHAT_PROTOCOLS:
        folds = [_chat_fold(name, data_dir, strong, weak)]
        return _with_extra(folds, extra, data_dir) if extra else folds
    if name == "mmlu":
        rows = _pair_rows("mmlu", data_dir, strong, weak)
        f = np.array([fold(p) for p in rows.prompts])
        splits = [(None, rows.subset(f != 0), rows.subset(f == 0))]
    elif name == "mmlu-to-gsm8k":
        splits = [(None, _pair_rows("mmlu", data_dir, strong, weak),
                   _pair_rows("gsm8k", data_dir, strong, weak))]
    elif name.startswith("loso-"):
        test_source = name[len("loso-"):]
        train = concat([_pair_rows(s, data_dir, strong, weak) for s in _LOSO if s != test_source])
        splits = [(None, train, _pair_rows(test_source, data_dir, strong, weak))]
    elif name == "mmlu-subjects":
        rows = _pair_rows("mmlu", data_dir, strong, weak)
        splits = _kfold(rows, rows.groups)
    elif name == "mixed":
        rows = concat([_pair_rows(s, data_dir, strong, weak) for s in _MIXED])
        splits = _kfold(rows, rows.prompts)
    else:  # gsm8k, arena-hard, alpaca-eval: 5 folds by prompt
        rows = _pair_rows(name, data_dir, strong, weak)
        splits = _kfold(rows, rows.prompts)
    folds = []
    for k, train, test in splits:
        train, dropped = _filtered(train, test)
        if dropped:
            logger.info("%s fold %s: dropped %d training rows that match a test question",
                        name, k, dropped)
        folds.append(Fold(name, k, train, test, dropped))
    return _with_extra(folds, extra, data_dir) if extra else folds


def _chat_fold(name: str, data_dir, strong: str, weak: str) -> Fold:
    """A real-chat protocol's one split: train on the pair's rows of MMLU and GSM8K (plus the
    extra and outcome sources of the configuration, added later) minus the test prompts."""
    from router_ml.learn import arena

    battles = arena.load_arena_battles(data_dir)
    difficulty = None
    if name == "arena-rated":
        prompts, difficulty = battles.rated_prompts()
        q = np.full((len(prompts), 2), np.nan)
    else:
        prompts, qs, qw = arena.battle_rows(battles)
        q = np.column_stack([qs, qw])
    src = np.array([name] * len(prompts), dtype=object)
    test = Rows(list(prompts), q, ("stronger", "weaker"), src, src)
    train, dropped = _filtered(_training_rows(data_dir, strong, weak), test)
    return Fold(name, None, train, test, dropped, difficulty=difficulty)


def outcome_rows(sources: Sequence[str] = OUTCOME_SOURCES, data_dir=None) -> Rows:
    """Every model's outcomes on the prompts of the sources (``arena-rated``: the rated
    prompts' grade as one pseudo-model), joined with one column per model met."""
    return _outcome_rows(sources, resolve_data_dir(data_dir).resolve())


def _outcome_rows(sources: Sequence[str], root) -> Rows:
    from router_ml.learn import arena

    parts = []
    for name in sources:
        if name == "arena-rated":
            try:
                rows = arena.rated_rows(arena.load_arena_battles(root))
            except FileNotFoundError as e:
                # router-ml data fetch does not fetch this source (it is a processed copy)
                logger.warning("arena-rated left out of the outcomes: %s; the router learns its "
                               "difficulty without the rated chat prompts and differs from "
                               "models/default", e)
                continue
        else:
            rows = read_source(name, root)
        parts.append(rows)
    return union(parts)


def with_outcomes(folds: Sequence[Fold], sources: Sequence[str] = OUTCOME_SOURCES,
                  data_dir=None) -> list[Fold]:
    """The folds with every model's outcomes of the sources, minus the rows that match a test
    question of the fold (counted in ``Fold.dropped``)."""
    if not folds or not sources:
        return list(folds)
    rows = _outcome_rows(sources, resolve_data_dir(data_dir).resolve())
    out = []
    for f in folds:
        index = QuestionIndex(f.test.prompts)
        keep = np.array([p not in index for p in rows.prompts], dtype=bool)
        logger.info("%s fold %s: dropped %d outcome rows that match a test question",
                    f.protocol, f.k, int((~keep).sum()))
        out.append(replace(f, outcomes=rows.subset(keep), dropped=f.dropped + int((~keep).sum())))
    return out


def _multi_folds(name: str, data_dir) -> list[Fold]:
    if name == "dcrouter":
        train, test = read_source("dcrouter/train", data_dir), read_source("dcrouter/test", data_dir)
        models = [m for m in train.models if m in test.models]
        train, test = train.select(models), test.select(models)
        train, dropped = _filtered(train, test)
        return [Fold(name, None, train, test, dropped)]
    models = list(protocol_prices(name, data_dir))
    rows = read_source("alpaca-tiers", data_dir).select(models, complete=True)
    return [Fold(name, k, train, test) for k, train, test in _kfold(rows, rows.prompts)]


def protocol_prices(name: str, data_dir=None) -> dict[str, dict[str, float]]:
    """{model: {"input": USD/M tokens, "output": USD/M tokens}} of a multi-model protocol,
    in the order of its candidates."""
    import json

    from router_ml.learn.sources import load_dcrouter_prices, resolve_data_dir

    if name == "dcrouter":
        return load_dcrouter_prices(data_dir)
    if name == "alpaca-tiers":
        path = resolve_data_dir(data_dir) / "alpaca-eval-pairs" / "tiers.json"
        return {m: {"input": float(p["input"]), "output": float(p["output"])}
                for m, p in json.loads(path.read_text(encoding="utf-8"))["models"].items()}
    raise ValueError(f"{name!r} is not a multi-model protocol; choose from "
                     f"{', '.join(MULTI_PROTOCOLS)}")


def _extra_rows(extra: Sequence[str], models: Sequence[str], data_dir) -> list[Rows]:
    out = []
    for name in extra:
        rows = read_source(name, data_dir)
        if all(m in rows.models for m in models):
            out.append(rows.select(models, complete=len(models) == 2))
        else:
            logger.warning("extra source %s lacks some of %s; not used", name, ", ".join(models))
    return out


def with_extra(folds: Sequence[Fold], extra: Sequence[str], data_dir=None) -> list[Fold]:
    """The folds with each extra source's rows of the folds' models added to the training
    rows, minus those that match a test question of the fold (counted in ``Fold.dropped``)."""
    return _with_extra(folds, extra, resolve_data_dir(data_dir).resolve())


def _with_extra(folds: Sequence[Fold], extra: Sequence[str], root) -> list[Fold]:
    if not folds:
        return []
    models = folds[0].train.models
    # a source the protocol already trains (or tests) on is not added a second time
    own = set(folds[0].train.sources) | set(folds[0].test.sources)
    extras = _extra_rows([x for x in extra if x not in own], models, root)
    out = []
    for f in folds:
        if not extras:
            out.append(f)
            continue
        index = QuestionIndex(f.test.prompts)
        kept, dropped = [f.train], 0
        for e in extras:
            mask = np.array([p not in index for p in e.prompts], dtype=bool)
            dropped += int((~mask).sum())
            kept.append(e.subset(mask))
        logger.info("%s fold %s: dropped %d extra rows that match a test question",
                    f.protocol, f.k, dropped)
        out.append(replace(f, train=concat(kept), dropped=f.dropped + dropped))
    return out


def add_extra_rows(train: Rows, extra: Sequence[str], data_dir=None) -> Rows:
    """``train`` plus the rows of its models from each extra source (a source without them
    is skipped with a warning). No test set here, so nothing is dropped."""
    return concat([train, *_extra_rows(extra, train.models, resolve_data_dir(data_dir).resolve())])


def all_training_rows(data_dir=None, *, strong: str = STRONG_MODEL, weak: str = WEAK_MODEL,
                      sources: Sequence[str] = ("mmlu", "gsm8k"),
                      extra: Sequence[str] = ()) -> Rows:
    """Every labelled row of the pair from the given sources, plus the pair's rows of the
    ``extra`` sources (for the default router)."""
    return _training_rows(resolve_data_dir(data_dir).resolve(), strong, weak, sources, extra)


def _training_rows(root, strong: str, weak: str, sources: Sequence[str] = ("mmlu", "gsm8k"),
                   extra: Sequence[str] = ()) -> Rows:
    rows = concat([_pair_rows(s, root, strong, weak) for s in sources])
    return concat([rows, *_extra_rows(extra, rows.models, root)]) if extra else rows
