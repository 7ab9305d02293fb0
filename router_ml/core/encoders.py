"""The encoders' common ground and the small ones: text cleaning (:func:`clean`), the transformer
protocol, TF-IDF and the prompt statistics. See :mod:`router_ml.core.features` for the whole
set and how a saved encoder is rebuilt.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
from math import log1p, sqrt

import numpy as np

logger = logging.getLogger(__name__)


# Longer prompts are cut before encoding: the first 8,000 characters carry the question, and a
# bound keeps the per-request cost bounded whatever the caller sends.
MAX_CHARS = 8000


PROGRESS_MIN = 500


def clean(prompt: str) -> str:
    """The text an encoder sees: at most MAX_CHARS characters, lone surrogates replaced."""
    text = prompt[:MAX_CHARS]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def finite_features(X: np.ndarray) -> np.ndarray:
    """X with NaN and infinities made numbers (in place), checked first: cheaper when none."""
    return X if np.isfinite(X).all() else np.nan_to_num(X, copy=False)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class EncoderBase:
    """scikit-learn's transformer protocol for the encoders (see the module docstring):
    parameters are the ``__init__`` arguments, stored unchanged; fitted state ends in ``_``."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self._param_names():
                raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}; "
                                 f"valid: {', '.join(self._param_names())}")
            setattr(self, k, v)
        return self

    def fit_transform(self, X, y=None):
        return self.fit(X, y).transform(X)

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=["float32"]),
                    input_tags=InputTags(one_d_array=True, two_d_array=False, string=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


class TfidfEncoder(EncoderBase):
    """TF-IDF of word n-grams; sparse float32 rows, L2-normalised.

    ngram_range, min_df, max_features, sublinear_tf: as scikit-learn's TfidfVectorizer.
    """

    kind = "tfidf"

    def __init__(self, ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True):
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf

    def _vectorizer(self, vocabulary=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(ngram_range=tuple(self.ngram_range), min_df=self.min_df,
                               max_features=self.max_features, sublinear_tf=self.sublinear_tf,
                               vocabulary=vocabulary, dtype=np.float32)

    def fit(self, prompts, y=None):
        self._fit_transform(prompts, transform=False)
        return self

    def fit_transform(self, prompts, y=None):
        """fit(prompts).transform(prompts), tokenising the prompts once."""
        return self._fit_transform(prompts, transform=True)

    def _fit_transform(self, prompts, transform: bool):
        texts = [clean(p) for p in prompts]
        vec = self._vectorizer()
        try:
            X = vec.fit_transform(texts) if transform else vec.fit(texts)
        except ValueError as e:  # sklearn: "empty vocabulary" / "no terms remain"
            raise ValueError(f"prompts: TF-IDF found no usable terms in {len(prompts)} training "
                             f"prompts (min_df={self.min_df}; words need 2+ letters): {e}. "
                             "Use more prompts or a lower min_df") from None
        self.vectorizer_ = vec
        return X.astype(np.float32, copy=False) if transform else None

    def transform(self, prompts):
        """(n, vocabulary size) scipy.sparse CSR float32 matrix."""
        if getattr(self, "vectorizer_", None) is None:
            raise RuntimeError("TfidfEncoder is not fitted; call fit(prompts) first")
        return self.vectorizer_.transform([clean(p) for p in prompts]).astype(np.float32, copy=False)

    @property
    def dim(self) -> int:
        return len(self.vectorizer_.vocabulary_)

    def spec(self) -> dict:
        return {"kind": self.kind, "ngram_range": list(self.ngram_range), "min_df": self.min_df,
                "max_features": self.max_features, "sublinear_tf": self.sublinear_tf}

    def parts(self) -> dict:
        vocab = self.vectorizer_.vocabulary_
        terms = [None] * len(vocab)
        for t, i in vocab.items():
            terms[i] = t
        return {"terms": terms, "idf": np.asarray(self.vectorizer_.idf_, dtype=np.float64)}

    @classmethod
    def from_parts(cls, spec: dict, parts: dict) -> "TfidfEncoder":
        enc = cls(ngram_range=tuple(spec["ngram_range"]), min_df=spec["min_df"],
                  max_features=spec["max_features"], sublinear_tf=spec["sublinear_tf"])
        terms = parts["terms"]
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise ValueError("tfidf terms must be a list of strings")
        idf = parts["idf"]
        if not isinstance(idf, np.ndarray) or idf.ndim != 1 or idf.dtype.kind != "f" \
                or not np.isfinite(idf).all() or (idf <= 0).any():
            raise ValueError("tfidf idf must be a 1-d array of finite positive floats")
        if len(idf) != len(terms):
            raise ValueError("tfidf idf and terms differ in length")
        vec = enc._vectorizer(vocabulary={t: i for i, t in enumerate(terms)})
        vec.idf_ = parts["idf"]
        enc.vectorizer_ = vec
        return enc


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


_DIGITS = "0123456789"


_OPERATORS = "+-*/=^$%"


# answer choices: lines starting "A." / "(B)" / "C)" (letters A-J)
_CHOICE = re.compile(r"^[ \t]*\(?([A-J])[.)][ \t]*(.*)$", re.M)


_NEGATIONS = frozenset({"not", "except", "false", "incorrect", "least", "never"})


_ROMAN = re.compile(r"\b(?:I|II|III|IV)\b")


_MATH_CHARS = "\\$^_{}"


_MATH_WORDS = re.compile(r"\b(?:sqrt|log|sin|cos)\b")


_ALL_OF = re.compile(r"(?:all|none|both) of the (?:above|following)|both [a-d] and [a-d]")


_WORDS = re.compile(r"\w+")


_NUMERIC = re.compile(r"[-\d.,/\s%$]+")


STATS = (
    # surface
    "log_chars", "log_words", "log_lines", "log_numbers", "digit_share", "log_number_chars",
    "log_longest_number", "log_operators", "question_marks", "mean_word_length",
    "log_distinct_words", "upper_share",
    # question type
    "choices", "log_mean_choice_chars", "log_longest_choice_chars", "choice_length_spread",
    "numeric_choice_share", "log_stem_chars", "stem_negations", "roman_numerals",
    "log_math_marks", "all_none_both_of",
    # how alike the answer choices are, to each other and to the question (word overlap)
    "stem_choice_overlap_max", "stem_choice_overlap_mean", "stem_choice_overlap_gap",
    "choice_jaccard_mean", "choice_jaccard_max", "choice_jaccard_min",
)


def _choice_stats(t: str) -> list[float]:
    """The question-type and answer-choice statistics of one prompt (zeros without choices).
    Plain Python arithmetic: numpy's per-call overhead would dominate on a few numbers."""
    found = []  # a run of choice lines lettered A, B, C, ... ("I." statements are not choices)
    for m in _CHOICE.finditer(t):
        if len(found) < 10 and m.group(1) == "ABCDEFGHIJ"[len(found)]:
            found.append(m)
        elif m.group(1) == "A":
            found = [m]
    stem = t[: found[0].start()].rstrip() if found else t
    choices = [m.group(2).strip() for m in found]
    k = len(choices)
    low = t.lower()
    stem_words = _WORDS.findall(low[: len(stem)])
    # (substring tests first: they skip most regex scans and change no result)
    math_words = (len(_MATH_WORDS.findall(low)) if any(w in low for w in ("sqrt", "log", "sin", "cos"))
                  else 0)
    out = [float(k), 0.0, 0.0, 0.0, 0.0, log1p(len(stem)),
           sum(1 for w in stem_words if w in _NEGATIONS),
           len(_ROMAN.findall(t)) if ("I" in t or "V" in t) else 0,
           log1p(sum(map(t.count, _MATH_CHARS)) + math_words),
           len(_ALL_OF.findall(low)) if ("of the" in low or "both" in low) else 0]
    if k:
        lengths = [len(c) for c in choices]
        mean = sum(lengths) / k
        sd = sqrt(sum((x - mean) ** 2 for x in lengths) / k)
        numeric = sum(1 for c in choices if c and _NUMERIC.fullmatch(c))
        out[1:5] = [log1p(mean), log1p(max(lengths)), sd / (mean + 1), numeric / k]
    if k < 2:
        return out + [0.0] * 6
    words = [set(_WORDS.findall(c.lower())) for c in choices]
    stem_words = set(stem_words)
    overlap = sorted((len(w & stem_words) / max(len(w), 1) for w in words), reverse=True)
    jaccard = [len(a & b) / max(len(a | b), 1) for i, a in enumerate(words) for b in words[i + 1:]]
    return out + [overlap[0], sum(overlap) / k, overlap[0] - overlap[1],
                  sum(jaccard) / len(jaccard), max(jaccard), min(jaccard)]


_ASCII_DIGITS, _ASCII_OPERATORS = _DIGITS.encode(), _OPERATORS.encode()


_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))


def _surface_stats(t: str) -> list[float]:
    n = len(t)
    words = t.split()
    nums = _NUMBER.findall(t)
    num_len = [len(x) for x in nums]
    if t.isascii():  # one pass per character class over the bytes, the same counts
        b = t.encode("ascii")
        digits, operators, upper = (n - len(b.translate(None, chars)) for chars in
                                    (_ASCII_DIGITS, _ASCII_OPERATORS, _ASCII_UPPER))
    else:
        digits, operators = sum(map(t.count, _DIGITS)), sum(map(t.count, _OPERATORS))
        upper = sum(map(str.isupper, t))
    return [
        log1p(n), log1p(len(words)), log1p(t.count("\n")), log1p(len(nums)),
        digits / max(n, 1), log1p(sum(num_len)),
        log1p(max(num_len, default=0)), log1p(operators),
        min(t.count("?"), 20), (sum(map(len, words)) / len(words)) if words else 0.0,
        log1p(len(set(t.lower().split()))), upper / max(n, 1),
    ]


def prompt_stats(prompts, surface_only: bool = False) -> np.ndarray:
    """(n, 28) float64 statistics of each prompt (names in :data:`STATS`), or with
    ``surface_only`` the first 12 (:data:`SURFACE_STATS`).

    Surface: length in characters, words and lines, how many numbers and digits, operators,
    question marks, word length, vocabulary size and share of capitals. Question type: how
    many answer choices (lines starting ``A.``, ``(B)``, ``C)``), their length and how many are
    numbers, the question's own length, negations (not, except, false, ...), Roman numerals,
    maths notation, "all/none of the above". Answer choices: how much each shares its words
    with the question and with the other choices (similar choices make harder questions).
    Counts are log1p-scaled.
    """
    if surface_only:
        rows = [_surface_stats(t) for t in prompts]
    else:
        rows = [_surface_stats(t) + _choice_stats(t) for t in prompts]
    width = 12 if surface_only else len(STATS)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


# The statistics that describe any prompt (length, numbers, symbols, vocabulary), as opposed
# to those that read a multiple-choice layout.
SURFACE_STATS = STATS[:12]


class StatsEncoder(EncoderBase):
    """Prompt statistics (:func:`prompt_stats`), standardised (scikit-learn's
    ``StandardScaler``, fitted on the training prompts) so that they sit on the scale of an
    embedding; transforming needs numpy only.

    stats: the names to keep, a subset of :data:`STATS` in its order (default all 28;
    :data:`SURFACE_STATS` are the 12 that describe any prompt, not one benchmark's format)."""

    kind = "stats"

    def __init__(self, stats=STATS):
        self.stats = stats

    def _columns(self) -> list[int]:
        names = tuple(self.stats)
        unknown = [n for n in names if n not in STATS]
        if unknown or not names:
            raise ValueError(f"unknown prompt statistics {unknown}; choose from {', '.join(STATS)}")
        return [STATS.index(n) for n in names]

    def _raw(self, prompts) -> np.ndarray:
        cols = self._columns()
        surface = all(c < len(SURFACE_STATS) for c in cols)
        X = prompt_stats([clean(p) for p in prompts], surface_only=surface)
        return X if cols == list(range(X.shape[1])) else X[:, cols]

    def fit(self, prompts, y=None):
        self.fit_transform(prompts)
        return self

    def fit_transform(self, prompts, y=None) -> np.ndarray:
        """fit(prompts).transform(prompts), computing the statistics once."""
        from sklearn.preprocessing import StandardScaler

        X = self._raw(prompts)
        scaler = StandardScaler().fit(X)
        self.mean_, self.scale_ = scaler.mean_, scaler.scale_
        return self._standardise(X)

    def transform(self, prompts) -> np.ndarray:
        if getattr(self, "mean_", None) is None:
            raise RuntimeError("StatsEncoder is not fitted; call fit(prompts) first")
        return self._standardise(self._raw(prompts))

    def _standardise(self, X) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    @property
    def dim(self) -> int:
        return len(self.stats)

    def spec(self) -> dict:
        return {"kind": self.kind, "stats": list(self.stats)}

    def parts(self) -> dict:
        return {"mean": self.mean_, "scale": self.scale_}

    @classmethod
    def from_parts(cls, spec: dict, parts: dict) -> "StatsEncoder":
        names = list(spec.get("stats", []))
        if not names or any(n not in STATS for n in names) \
                or names != [n for n in STATS if n in names]:
            raise ValueError("the saved prompt statistics are not statistics of this router_ml")
        k = len(names)
        mean, scale = np.asarray(parts["mean"], dtype=np.float64), np.asarray(parts["scale"], dtype=np.float64)
        if mean.shape != (k,) or scale.shape != (k,) \
                or not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("prompt statistics mean/scale must be finite, positive, one per statistic")
        enc = cls(tuple(names))
        enc.mean_, enc.scale_ = mean, scale
        return enc
