"""The static embedding: a token embedding (model2vec) distilled from a sentence transformer;
a prompt's vector is the mean of its tokens' vectors. Numpy and the tokenizers package at run
time, no torch, thousands of prompts/s.
"""

from __future__ import annotations

import re
import threading
from itertools import chain
from pathlib import Path

import numpy as np

from router_ml.core.encoders import finite_features, EncoderBase, clean
from router_ml.core.transformer import DEFAULT_ST_MODEL, resolve_st_model

# Characters that str.split() splits at and a BERT normaliser deletes (control characters)
_UNSPLIT = re.compile("[\x0b\x0c\x1c-\x1f\x85]")


# the static encoder remembers the token ids of at most this many chunks of text (whitespace
# apart), each at most this long
_CHUNK_CACHE, _CHUNK_CHARS = 200_000, 100
_PART = 4096  # prompts encoded at a time
# chunks met for the first time are tokenised in texts of about this many characters, joined
# by this separator (see StaticEncoder._tokenize)
_GROUP_CHARS, _SEPARATOR = 200, "|"



class StaticEncoder(EncoderBase):
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
                return finite_features(self._encode(texts))
            # in parts, so that the chunks remembered stay within their bound
            starts = range(0, len(texts), _PART)
            if len(texts) > 20_000:
                from tqdm import tqdm

                # a bar on a terminal only (disable=None): a notebook's kernel or a log file
                # gets none, and no TqdmWarning about missing Jupyter widgets
                starts = tqdm(starts, desc="encoding prompts", unit="part", disable=None)
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for i in starts:
                out[i:i + _PART] = self._encode_part(texts[i:i + _PART], chunks)
        return finite_features(out)

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
        model2vec's path. The vectors are model2vec's bit for bit (``tests/core/test_encoders.py``)
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
