"""Task types defined by example: a rules file's ``[tasks.NAME]`` tables (:func:`parse_tasks`),
the package's default task set (:func:`default_tasks`), and the detector that names the task of
a prompt (:class:`TaskDetector`).

A task is a handful of example requests. The detector compares a prompt with each task's
examples in two ways and names the task that scores highest:

- **meaning**: the cosine between the prompt's static embedding and the task's centroid (the
  mean of its examples' embeddings), both taken relative to the mean of all tasks' centroids, so
  that what every request shares does not count. A task whose centroid is close to exactly one
  of the default task set's tasks borrows half of that default task's centroid: six examples
  say little, and the default set's examples say more about the same kind of request;
- **words**: the TF-IDF cosine of the prompt's words and word pairs with the task's examples
  (the instruction's own words, "translate", "summarise", "poem", weigh more than the topic).

The task with the highest sum (meaning + ``lexical_weight`` x words) is named; its
similarity is the plain cosine between the prompt's embedding and the mean of the task's
examples' (in [-1, 1], the scale semantic routers use: 0.68 at the median of labelled prompts),
and below the task's ``min_similarity`` (else the detector's) the task is unknown (None). The
embedding is the package's own static one: all-MiniLM-L6-v2 distilled to 128 dimensions
(model2vec) and packed to 4 bits a value (1.4 MB), twice the router's 64 dimensions in less
room: numpy and tokenizers at run time, no torch, no network, well under a millisecond a
prompt. docs/tasks.md gives the measurements behind each choice (``benchmarks/bench_tasks.py``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from router_ml.errors import RuleConfigError
from router_ml.loop._config_file import read_config

# Below this similarity a prompt's task is unknown, unless the task sets its own: about the
# 1st percentile of labelled prompts' similarity to the default task named (median 0.68;
# docs/tasks.md).
DEFAULT_MIN_SIMILARITY = 0.1
# The share of a matched default task's centroid in a task's centroid, and the weight of the
# word similarity beside the embedding's (chosen on held-out prompts: docs/tasks.md).
PRIOR = 0.5
LEXICAL_WEIGHT = 15.0
# The word similarity reads the first characters of a prompt: the request is mostly there,
# and the cost stays bounded whatever the prompt's length.
_LEXICAL_CHARS = 2000
_WORD = re.compile(r"\w+")

_TASK_KEYS = ("examples", "min_similarity", "description")
_SETTINGS = ("extend_default",)
_TASK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["examples"],
    "properties": {
        "examples": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "min_similarity": {"type": "number", "minimum": -1, "maximum": 1},
        "description": {"type": "string"},
    },
}
TASKS_SCHEMA = {
    "type": "object",
    "description": "Task types defined by example: [tasks.NAME] tables; extend_default = true "
                   "keeps the default task set beside them",
    "properties": {"extend_default": {"type": "boolean"}},
    "additionalProperties": _TASK,
}

_ENCODER_DIR = "task_encoder"
_ENCODER_NAME = "m2v-all-MiniLM-L6-v2-128-4bit"
_ENCODER_DIMS, _ENCODER_BITS = 128, 4
_ENCODER_SHA256 = {
    "vectors.npz": "a15bac6108cb4d0af11954a8224e70db82431dfe628f6468efa60a88e91fdba1",
    "tokenizer.json": "dd33465341c98889c3338356b6200c8b232b89af5f1b7aa8e6ee1d4d7a699631",
}


@dataclass(frozen=True)
class TaskSpec:
    """One task of a rules file's ``[tasks.NAME]`` table: its examples (requests of that type),
    the similarity below which a prompt is not this task (None: the detector's), and an
    optional description (read as one more example)."""

    name: str
    examples: tuple[str, ...]
    min_similarity: float | None = None
    description: str = ""


def parse_tasks(table: Mapping, source: str = "<rules>") -> dict[str, TaskSpec]:
    """{name: TaskSpec} from a rules file's ``tasks`` table (:data:`TASKS_SCHEMA`).

    ``extend_default = true`` in the table keeps :func:`default_tasks` and adds (or, by name,
    replaces) the table's tasks; else the table's tasks are the whole set. RuleConfigError
    names ``source`` and the key of every bad entry."""
    if not isinstance(table, Mapping):
        raise RuleConfigError(f"{source}: tasks: must be a table of [tasks.NAME] tables")
    problems, out = [], {}
    for name, entry in table.items():
        key = f"tasks.{name}"
        if name in _SETTINGS:
            if not isinstance(entry, bool):
                problems.append(f"{key}: must be true or false")
            continue
        if not isinstance(name, str) or not name.strip():
            problems.append(f"tasks.{name!r}: a task name must be a non-empty string")
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"{key}: must be a table with 'examples' (a list of requests)")
            continue
        for k in sorted(set(entry) - set(_TASK_KEYS), key=str):
            problems.append(f"{key}.{k}: unknown key (allowed: {', '.join(_TASK_KEYS)})")
        examples = entry.get("examples")
        if not isinstance(examples, (list, tuple)) or not examples:
            problems.append(f"{key}.examples: needs a non-empty list of example requests")
        else:
            for i, e in enumerate(examples):
                if not isinstance(e, str) or not e.strip():
                    problems.append(f"{key}.examples[{i}]: must be a non-empty string, "
                                    f"not {type(e).__name__} {e!r}"[:200])
        threshold = entry.get("min_similarity")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))
                                      or not -1 <= threshold <= 1):
            problems.append(f"{key}.min_similarity: must be a number in [-1, 1], "
                            f"not {threshold!r}")
        description = entry.get("description", "")
        if not isinstance(description, str):
            problems.append(f"{key}.description: must be a string")
        if not problems:
            out[name] = TaskSpec(name, tuple(examples), None if threshold is None
                                 else float(threshold), description)
    if problems:
        raise RuleConfigError(f"{source}: " + "; ".join(problems))
    if table.get("extend_default"):
        return {**default_tasks(), **out}
    if not out:
        raise RuleConfigError(f"{source}: tasks: defines no task; add [tasks.NAME] tables with "
                              "examples, or extend_default = true")
    return out


@functools.cache
def _default_tasks() -> dict[str, TaskSpec]:
    import tomllib

    text = resources.files("router_ml.loop").joinpath("default_tasks.toml").read_text("utf-8")
    return parse_tasks(tomllib.loads(text)["tasks"], "router_ml/loop/default_tasks.toml")


def default_tasks() -> dict[str, TaskSpec]:
    """The package's default task set (``router_ml/loop/default_tasks.toml``, docs/tasks.md):
    code, math, reasoning, extraction, classification, summarisation, translation, writing,
    role_play, knowledge, chit_chat."""
    return dict(_default_tasks())


def load_tasks(path) -> dict[str, TaskSpec]:
    """The task set of a rules file (.toml, .json, .yaml/.yml): its ``tasks`` table, else the
    default task set. Only the ``tasks`` table is read here; :func:`router_ml.loop.rules.
    load_rules` validates the rest."""
    data = read_config(path, "rules file", RuleConfigError)
    if not isinstance(data, Mapping):
        raise RuleConfigError(f"{path}: the top level must be a table")
    return parse_tasks(data["tasks"], str(path)) if "tasks" in data else default_tasks()


def pack_vectors(V: np.ndarray, bits: int = _ENCODER_BITS) -> dict:
    """``V`` (n, d) floats as ``bits``-bit codes per dimension, two to a byte: {"codes" (n,
    d / 2) uint8, "low" (d,), "step" (d,) float32}; :func:`unpack_vectors` reads them back
    (each entry within half a step of ``V``'s)."""
    V = np.asarray(V, dtype=np.float32)
    if bits > 4 or V.ndim != 2 or V.shape[1] % 2:
        raise ValueError("pack_vectors packs up to 4 bits a value, two values a byte, of a 2-d "
                         "array with an even number of columns")
    low, high = V.min(0), V.max(0)
    step = np.where(high > low, (high - low) / (2 ** bits - 1), 1.0).astype(np.float32)
    q = np.rint((V - low) / step).astype(np.uint8)
    return {"codes": (q[:, 0::2] << 4) | q[:, 1::2], "low": low, "step": step}


def unpack_vectors(codes: np.ndarray, low: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The float32 vectors of :func:`pack_vectors`' parts."""
    q = np.empty((codes.shape[0], 2 * codes.shape[1]), dtype=np.float32)
    q[:, 0::2], q[:, 1::2] = codes >> 4, codes & 15
    return low + q * step


def build_task_encoder(folder, dims: int = _ENCODER_DIMS, bits: int = _ENCODER_BITS) -> dict:
    """Distil all-MiniLM-L6-v2 to a ``dims``-dimension static embedding (model2vec, float16;
    needs torch, about 30 s) and write it to ``folder`` as the package ships it: its vectors
    packed to ``bits`` bits (``vectors.npz``) and its tokenizer (``tokenizer.json``). Returns
    {file name: sha256}, for :data:`_ENCODER_SHA256`."""
    from pathlib import Path

    from router_ml.core.static import StaticEncoder

    enc = StaticEncoder.distill(pca_dims=dims, quantize_to="float16")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **pack_vectors(enc.model.embedding, bits))
    files = {"vectors.npz": buf.getvalue(),
             "tokenizer.json": enc.model.tokenizer.to_str().encode("utf-8")}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


@functools.cache
def _task_encoder():
    from router_ml.core.static import StaticEncoder

    folder = resources.files("router_ml.loop").joinpath(_ENCODER_DIR)
    data = {}
    for name, digest in _ENCODER_SHA256.items():
        data[name] = folder.joinpath(name).read_bytes()
        if hashlib.sha256(data[name]).hexdigest() != digest:
            raise ValueError(f"router_ml/loop/{_ENCODER_DIR}/{name}: sha256 differs from the "
                             "shipped task embedding's; reinstall router_ml")
    with np.load(io.BytesIO(data["vectors.npz"]), allow_pickle=False) as z:
        vectors = unpack_vectors(z["codes"], z["low"], z["step"])
    parts = {"vectors": vectors, "tokenizer": data["tokenizer.json"].decode("utf-8")}
    return StaticEncoder.from_parts({"kind": "static", "name": _ENCODER_NAME, "normalize": True},
                                    parts)


def task_encoder():
    """The embedding :class:`TaskDetector` uses by default: all-MiniLM-L6-v2 distilled to a
    128-dimension static embedding, packed to 4 bits (:func:`build_task_encoder`), shipped in
    the package and checked by sha256 when first loaded (once per process)."""
    return _task_encoder()


def _unit(X: np.ndarray) -> np.ndarray:
    return X / (np.linalg.norm(X, axis=-1, keepdims=True) + 1e-12)


def _terms(text: str) -> Counter:
    """Word and word-pair counts of the start of a text, lower case."""
    words = _WORD.findall(text[:_LEXICAL_CHARS].lower())
    return Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:])])


class TaskDetector:
    """Names the task of a prompt among ``tasks`` (see the module docstring for the method).

    tasks: {name: TaskSpec}, as :func:`parse_tasks` or :func:`default_tasks` give them.
    encoder: anything with ``transform(list[str]) -> (n, d)`` floats; None: the package's task
    embedding (:func:`task_encoder`). min_similarity: the threshold of tasks that set none
    (default :data:`DEFAULT_MIN_SIMILARITY`). prior: the share of a matched default task's
    centroid in a task's centroid (0: none). lexical_weight: the weight of the word similarity
    beside the embedding's (0: the embedding alone).

    The examples are encoded once, here; detection encodes the prompts and compares.
    """

    def __init__(self, tasks: Mapping[str, TaskSpec], encoder=None, *,
                 min_similarity: float = DEFAULT_MIN_SIMILARITY, prior: float = PRIOR,
                 lexical_weight: float = LEXICAL_WEIGHT):
        if not tasks:
            raise ValueError("TaskDetector needs at least one task")
        if not -1 <= min_similarity <= 1:
            raise ValueError(f"min_similarity must be in [-1, 1], not {min_similarity}")
        if not 0 <= prior <= 1 or lexical_weight < 0:
            raise ValueError("prior must be in [0, 1] and lexical_weight >= 0")
        self.tasks = dict(tasks)
        self.encoder = encoder
        self.min_similarity = min_similarity
        self.prior = prior
        self.lexical_weight = lexical_weight
        self._fit()

    def _fit(self):
        encoder = task_encoder() if self.encoder is None else self.encoder
        names = list(self.tasks)
        texts, owner = [], []
        for k, name in enumerate(names):
            spec = self.tasks[name]
            own = list(spec.examples) + ([spec.description] if spec.description else [])
            texts += own
            owner += [k] * len(own)
        owner = np.array(owner)
        E = _unit(np.asarray(encoder.transform(texts), dtype=np.float32))
        means = np.stack([E[owner == k].mean(0) for k in range(len(names))])
        # relative to the mean of the tasks' centroids: what every request shares drops out
        # (one task alone has nothing to be told apart from)
        self.center_ = means.mean(0) if len(names) > 1 else np.zeros(E.shape[1], np.float32)
        cent = np.stack([_unit(E[owner == k] - self.center_).mean(0) for k in range(len(names))])
        if self.prior > 0:
            cent = self._borrow(cent, encoder)
        self.names_ = names
        self.centroids_ = _unit(cent).astype(np.float32)
        # the similarity a threshold reads: the plain cosine with the examples' mean
        self.similarity_centroids_ = _unit(means).astype(np.float32)
        self.thresholds_ = np.array([self.min_similarity if self.tasks[n].min_similarity is None
                                     else self.tasks[n].min_similarity for n in names])
        self._fit_words(texts, owner, len(names))
        return self

    def _borrow(self, cent: np.ndarray, encoder) -> np.ndarray:
        """Each task's centroid mixed with the default task nearest to it, when no other task
        is nearest to that default task too (two tasks one default task would pull together)."""
        defaults = _default_tasks()
        d_texts, d_owner = [], []
        for k, spec in enumerate(defaults.values()):
            own = list(spec.examples) + ([spec.description] if spec.description else [])
            d_texts += own
            d_owner += [k] * len(own)
        d_owner = np.array(d_owner)
        D = _unit(np.asarray(encoder.transform(d_texts), dtype=np.float32))
        D = _unit(D - self.center_)
        d_cent = np.stack([D[d_owner == k].mean(0) for k in range(len(defaults))])
        nearest = (_unit(cent) @ _unit(d_cent).T).argmax(1)
        out = cent.copy()
        for k, j in enumerate(nearest):
            if (nearest == j).sum() == 1:
                out[k] = (1 - self.prior) * cent[k] + self.prior * d_cent[j]
        return out

    def _fit_words(self, texts, owner, n_tasks):
        """TF-IDF of the examples' words and word pairs (idf over the examples); each task
        keeps the mean of its examples' unit vectors."""
        counts = [_terms(t) for t in texts]
        vocab = {}
        for c in counts:
            for term in c:
                vocab.setdefault(term, len(vocab))
        df = np.zeros(len(vocab))
        for c in counts:
            df[[vocab[t] for t in c]] += 1
        n = len(texts)
        self.vocab_ = vocab
        self.idf_ = np.log((1 + n) / (1 + df)) + 1
        # a term no example has: its weight counts in a prompt's norm (a long prompt about
        # something else is far from every task), never in a match
        self.idf_unseen_ = math.log(1 + n) + 1
        M = np.zeros((n, len(vocab)), dtype=np.float32)
        for i, c in enumerate(counts):
            ids = [vocab[t] for t in c]
            w = (1 + np.log(np.fromiter(c.values(), float, len(c)))) * self.idf_[ids]
            M[i, ids] = w / (np.linalg.norm(w) + 1e-12)
        self.word_centroids_ = np.stack([M[owner == k].mean(0) for k in range(n_tasks)])

    def _word_scores(self, texts) -> np.ndarray:
        out = np.zeros((len(texts), len(self.names_)), dtype=np.float32)
        for i, text in enumerate(texts):
            c = _terms(text)
            if not c:
                continue
            tf = 1 + np.log(np.fromiter(c.values(), float, len(c)))
            ids = np.fromiter((self.vocab_.get(t, -1) for t in c), np.int64, len(c))
            seen = ids >= 0
            w = tf * np.where(seen, self.idf_[np.maximum(ids, 0)], self.idf_unseen_)
            if seen.any():
                out[i] = self.word_centroids_[:, ids[seen]] @ w[seen] / np.linalg.norm(w)
        return out

    def _scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, n_tasks) scores that rank the tasks (the centred embedding's cosine plus the
        weighted word similarity), the centred cosines and the plain cosines with the examples'
        mean (the similarity a threshold reads), columns in ``names_`` order."""
        encoder = task_encoder() if self.encoder is None else self.encoder
        X = _unit(np.asarray(encoder.transform(list(texts)), dtype=np.float32))
        cos = _unit(X - self.center_) @ self.centroids_.T
        sim = X @ self.similarity_centroids_.T
        if not self.lexical_weight:
            return cos, cos, sim
        return cos + self.lexical_weight * self._word_scores(texts), cos, sim

    def detect_batch(self, texts: Sequence[str]) -> list[tuple[str | None, float]]:
        """(task, similarity) per text: the best-scoring task and the cosine of the text with
        its examples' mean (in [-1, 1]), or None for the task when that is below the task's
        min_similarity."""
        texts = list(texts)
        if not texts:
            return []
        rank, _, sim = self._scores(texts)
        best = rank.argmax(1)
        sims = sim[np.arange(len(texts)), best]
        return [(self.names_[b] if s >= self.thresholds_[b] else None, float(s))
                for b, s in zip(best, sims)]

    def detect(self, text: str) -> tuple[str | None, float]:
        """(task or None, similarity) of one text."""
        return self.detect_batch([text])[0]

    def __repr__(self) -> str:
        return f"TaskDetector(tasks={list(self.tasks)}, min_similarity={self.min_similarity})"


__all__ = ["DEFAULT_MIN_SIMILARITY", "LEXICAL_WEIGHT", "PRIOR", "TASKS_SCHEMA", "TaskDetector",
           "TaskSpec", "default_tasks", "load_tasks", "parse_tasks", "task_encoder"]
