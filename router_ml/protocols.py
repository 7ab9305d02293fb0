"""The evaluation protocols of DESIGN.md section 4, so anyone recomputes the same splits.

fold(text) = int(sha256(text.strip().encode("utf-8")).hexdigest(), 16) % 5

- ``mmlu``: train on MMLU rows with fold(prompt) != 0, test on fold(prompt) == 0.
- ``mmlu-subjects``: 5 folds by fold(subject); each fold's test subjects are unseen in training.
- ``gsm8k``: 5 folds by fold(prompt) on GSM8K.
- ``mmlu-to-gsm8k``: train on all MMLU, test on all GSM8K.

Extra training sources (``extra=("arena-hard", "dcrouter")``) never leak test questions:
every extra row whose normalised question matches a test row is dropped and counted.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router_ml.data import STRONG_MODEL, WEAK_MODEL, load_source, models_of
from router_ml.labels import PairData, pair_data

logger = logging.getLogger(__name__)

PROTOCOLS = ("mmlu", "mmlu-subjects", "gsm8k", "mmlu-to-gsm8k")
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
    single-split protocol; dropped is the number of extra-source rows removed for overlap."""

    protocol: str
    k: int | None
    train: PairData
    test: PairData
    dropped: int = 0


def _extra_rows(extra: Sequence[str], strong: str, weak: str, data_dir) -> list[PairData]:
    out = []
    for name in extra:
        ds = load_source(name, data_dir)
        if strong in models_of(ds) and weak in models_of(ds):
            out.append(pair_data(ds, strong, weak))
        else:
            logger.warning("extra source %s lacks %s or %s; not used", name, strong, weak)
    return out


def _concat(parts: Sequence[PairData]) -> PairData:
    return PairData(
        prompts=[p for part in parts for p in part.prompts],
        q_strong=np.concatenate([p.q_strong for p in parts]),
        q_weak=np.concatenate([p.q_weak for p in parts]),
        groups=np.concatenate([p.groups for p in parts]),
        sources=np.concatenate([p.sources for p in parts]),
    )


def _with_extra(train: PairData, test: PairData, extras: Sequence[PairData]) -> tuple[PairData, int]:
    if not extras:
        return train, 0
    index = QuestionIndex(test.prompts)
    kept, dropped = [train], 0
    for e in extras:
        mask = np.array([p not in index for p in e.prompts], dtype=bool)
        dropped += int((~mask).sum())
        kept.append(e.subset(mask))
    return _concat(kept), dropped


def protocol_folds(
    name: str,
    data_dir=None,
    *,
    strong: str = STRONG_MODEL,
    weak: str = WEAK_MODEL,
    extra: Sequence[str] = (),
) -> list[Fold]:
    """The train/test folds of a protocol (one for ``mmlu`` and ``mmlu-to-gsm8k``, five else)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    if name == "mmlu":
        rows = pair_data(load_source("mmlu", data_dir), strong, weak)
        f = np.array([fold(p) for p in rows.prompts])
        splits = [(None, rows.subset(f != 0), rows.subset(f == 0))]
    elif name == "mmlu-to-gsm8k":
        splits = [(None, pair_data(load_source("mmlu", data_dir), strong, weak),
                   pair_data(load_source("gsm8k", data_dir), strong, weak))]
    else:
        source = "mmlu" if name == "mmlu-subjects" else "gsm8k"
        rows = pair_data(load_source(source, data_dir), strong, weak)
        keys = rows.groups if name == "mmlu-subjects" else rows.prompts
        f = np.array([fold(str(t)) for t in keys])
        splits = [(k, rows.subset(f != k), rows.subset(f == k)) for k in range(N_FOLDS)]
    folds = [Fold(name, k, train, test) for k, train, test in splits]
    return with_extra(folds, extra, data_dir, strong=strong, weak=weak) if extra else folds


def with_extra(folds: Sequence[Fold], extra: Sequence[str], data_dir=None, *,
               strong: str = STRONG_MODEL, weak: str = WEAK_MODEL) -> list[Fold]:
    """The folds with each extra source's rows of the pair added to the training rows, minus
    those that match a test question of the fold (counted in ``Fold.dropped``)."""
    extras = _extra_rows(extra, strong, weak, data_dir)
    out = []
    for f in folds:
        train, dropped = _with_extra(f.train, f.test, extras)
        if extras:
            logger.info("%s fold %s: dropped %d extra rows that match a test question",
                        f.protocol, f.k, dropped)
        out.append(Fold(f.protocol, f.k, train, f.test, f.dropped + dropped))
    return out


def add_extra_rows(train: PairData, extra: Sequence[str], data_dir=None, *,
                   strong: str = STRONG_MODEL, weak: str = WEAK_MODEL) -> PairData:
    """``train`` plus the pair's rows from each extra source (a source without both models is
    skipped with a warning). No test set here, so nothing is dropped."""
    return _concat([train, *_extra_rows(extra, strong, weak, data_dir)])


def all_training_rows(data_dir=None, *, strong: str = STRONG_MODEL, weak: str = WEAK_MODEL,
                      sources: Sequence[str] = ("mmlu", "gsm8k"),
                      extra: Sequence[str] = ()) -> PairData:
    """Every labelled row of the pair from the given sources, plus the pair's rows of the
    ``extra`` sources (for the default router)."""
    rows = _concat([pair_data(load_source(s, data_dir), strong, weak) for s in sources])
    return add_extra_rows(rows, extra, data_dir, strong=strong, weak=weak) if extra else rows
