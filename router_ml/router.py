"""The router: an encoder and a scikit-learn classifier give a score per prompt; a threshold
decides strong or weak."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router_ml.calibration import CalibrationRecord, calibrate, check_threshold
from router_ml.data import STRONG_MODEL, WEAK_MODEL, canonical_model, fingerprint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutingDecision:
    """model: the chosen model's name; score: P(strong model needed) in [0, 1];
    threshold: the threshold the score was compared with (strong iff score >= threshold)."""

    model: str
    score: float
    threshold: float

    @property
    def strong(self) -> bool:
        return self.score >= self.threshold


def check_prompts(prompts, name: str = "prompts") -> list[str]:
    """A list of str, or TypeError naming the argument and the offending item."""
    if isinstance(prompts, (str, bytes)):
        raise TypeError(f"{name} must be a list of str, got a single {type(prompts).__name__}; "
                        "use route(prompt) for one prompt or wrap it in a list")
    if not isinstance(prompts, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of str, got {type(prompts).__name__}")
    out = list(prompts)
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(p).__name__}")
    return out


def check_prompt(prompt, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be str, got {type(prompt).__name__}")
    return prompt


LOGREG_TYPE = "sklearn.linear_model._logistic.LogisticRegression"


class LogisticHead:
    """A fitted logistic regression (binary or multinomial) reduced to its weights.

    predict_proba(X) is scikit-learn's LogisticRegression.predict_proba (a sigmoid for two
    classes, a softmax otherwise) computed with numpy alone, so a service that loads a router
    does not pay scikit-learn's import (about 1 s and 200 MB here).
    coef: (1, n_features) for two classes or (n_classes, n_features); intercept: matching
    (1,) or (n_classes,); classes: (n_classes,) ints; params: the LogisticRegression
    hyper-parameters (recorded in the manifest).
    """

    def __init__(self, coef, intercept, classes, params=None):
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)
        self.classes_ = np.asarray(classes)
        self.params = dict(params or {})
        self._wt = np.ascontiguousarray(self.coef_.T)

    @classmethod
    def from_sklearn(cls, clf) -> "LogisticHead | None":
        """The head of a fitted LogisticRegression, or None for any other classifier."""
        if f"{type(clf).__module__}.{type(clf).__qualname__}" != LOGREG_TYPE:
            return None
        params = {k: v for k, v in clf.get_params().items()
                  if isinstance(v, (int, float, str, bool, type(None)))}
        return cls(clf.coef_, clf.intercept_, clf.classes_, params)

    def predict_proba(self, X) -> np.ndarray:
        z = np.asarray(X @ self._wt, dtype=np.float64) + self.intercept_
        if z.shape[1] == 1:
            p = np.exp(-np.logaddexp(0.0, -z[:, 0]))  # = 1 / (1 + exp(-z)) without overflow
            return np.column_stack([1.0 - p, p])
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def proba_to_score(proba: np.ndarray, classes) -> np.ndarray:
    """Scores in [0, 1] from class probabilities.

    Classes {0, 1} (label ``strong_better``): P(1), the probability that the strong model is
    needed. Classes {-1, 0, 1} (label ``gain``): (1 + P(1) - P(-1)) / 2, i.e. 0.5 plus half
    the expected quality gain of the strong model; above 0.5 the strong model is expected
    to do better.
    """
    classes = [int(c) for c in np.asarray(classes).ravel()]
    p_up = proba[:, classes.index(1)] if 1 in classes else 0.0
    if -1 in classes:
        return 0.5 + 0.5 * (p_up - proba[:, classes.index(-1)])
    return np.asarray(p_up, dtype=np.float64)


def default_classifier(random_state=0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000, random_state=random_state)


class Router:
    """Encoder + classifier -> score = P(strong model needed); threshold -> model.

    encoder: an encoder from :mod:`router_ml.encoders` (default: TF-IDF word 1-2-grams).
    classifier: any scikit-learn classifier with ``predict_proba`` (default: logistic
    regression). threshold: a prompt goes to the strong model when score >= threshold.
    """

    def __init__(self, encoder=None, classifier=None, *, strong_model: str = STRONG_MODEL,
                 weak_model: str = WEAK_MODEL, threshold: float = 0.5, random_state: int = 0):
        from router_ml.encoders import TfidfEncoder

        self.encoder = encoder if encoder is not None else TfidfEncoder()
        self.classifier = classifier if classifier is not None else default_classifier(random_state)
        self.strong_model = canonical_model(strong_model)
        self.weak_model = canonical_model(weak_model)
        if self.strong_model == self.weak_model:
            raise ValueError(f"strong and weak model must differ, both are {self.strong_model!r}")
        self._threshold = check_threshold(threshold)
        self.calibration = CalibrationRecord("manual", {"threshold": self._threshold})
        self.training: dict = {}
        self.evaluation: dict = {}
        self.fitted_ = False

    # ------------------------------------------------------------------ classifier
    @property
    def classifier(self):
        return self._classifier

    @classifier.setter
    def classifier(self, value):
        # a fitted logistic regression scores through its numpy head (set by fit or load)
        self._classifier = value
        self._head = value if isinstance(value, LogisticHead) else None

    # ------------------------------------------------------------------ threshold
    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value):
        self._threshold = check_threshold(value)
        self.calibration = CalibrationRecord("manual", {"threshold": self._threshold})

    # ------------------------------------------------------------------ fitting
    def fit(self, prompts, y, sample_weight=None, *, features=None):
        """Fit encoder (if it learns from prompts) and classifier. y: (n,) 0/1, 1 = strong
        model needed (or -1/0/1 for a gain target); sample_weight: (n,) non-negative or None.
        features: the already fitted encoder's output for ``prompts``, when the caller has it
        (skips fitting and running the encoder again). Returns self."""
        prompts = check_prompts(prompts)
        y = np.asarray(y)
        if len(prompts) == 0:
            raise ValueError("cannot fit a router on zero prompts")
        if y.shape != (len(prompts),):
            raise ValueError(f"y must have shape ({len(prompts)},), got {y.shape}")
        if not np.isin(y, (-1, 0, 1)).all():
            raise ValueError("y must hold 1 (strong model needed) and 0 (weak model is enough), "
                             "or for a gain target also -1 (weak model better)")
        values = set(np.unique(y).tolist())
        if 1 not in values or values == {1}:
            raise ValueError(f"y holds one class only in {len(y)} rows: the strong model is "
                             f"{'always' if values == {1} else 'never'} better, so there is "
                             "nothing to learn; use more or other data")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != y.shape or not np.isfinite(sample_weight).all() \
                    or (sample_weight < 0).any():
                raise ValueError("sample_weight must be finite, non-negative, one per prompt")
        if features is None:
            X = self.encoder.fit_encode(prompts)
        else:
            X = features
            if X.shape[0] != len(prompts):
                raise ValueError(f"features must have one row per prompt, got {X.shape[0]} "
                                 f"for {len(prompts)} prompts")
        kw = {"sample_weight": sample_weight} if sample_weight is not None else {}
        try:
            self.classifier.fit(X, y.astype(np.int64), **kw)
        except ValueError as e:  # e.g. too few rows per class for the classifier's own CV
            raise ValueError(f"{type(self.classifier).__name__} cannot be fitted on "
                             f"{len(prompts)} prompts ({int((y == 1).sum())} needing the "
                             f"strong model): "
                             f"{e}") from e
        self._head = LogisticHead.from_sklearn(self.classifier)
        self.training = {"n": len(prompts), "positives": int((y == 1).sum()),
                         "fingerprint": fingerprint(prompts, y)}
        self.fitted_ = True
        return self

    # ------------------------------------------------------------------ scoring
    def score(self, prompts) -> np.ndarray:
        """(n,) float64 scores in [0, 1]; higher means the strong model is more needed.

        For a router trained on 0/1 labels the score is P(strong model needed); for the
        default ``gain`` label it is (1 + expected quality gain of the strong model) / 2
        (see :func:`proba_to_score`)."""
        if not self.fitted_:
            raise RuntimeError("the router is not fitted; call fit() or load_router()")
        prompts = check_prompts(prompts)
        if not prompts:
            return np.zeros(0, dtype=np.float64)
        X = self.encoder.encode(prompts)
        clf = self._head if self._head is not None else self.classifier
        p = np.array(proba_to_score(np.asarray(clf.predict_proba(X), dtype=np.float64),
                                    clf.classes_), dtype=np.float64)
        bad = ~np.isfinite(p)
        if bad.any():  # never hand back a meaningless score: fall back to the safe model
            logger.warning("%d prompts got a non-finite score; routed to the strong model",
                           int(bad.sum()))
            p[bad] = 1.0
        return np.clip(p, 0.0, 1.0)

    def route(self, prompt: str) -> RoutingDecision:
        """The decision for one prompt."""
        return self.route_batch([check_prompt(prompt)])[0]

    def route_batch(self, prompts) -> list[RoutingDecision]:
        """Decisions for a list of prompts."""
        s = self.score(prompts)
        t = self._threshold
        return [RoutingDecision(self.strong_model if v >= t else self.weak_model, float(v), t)
                for v in s]

    # ------------------------------------------------------------------ calibration
    def calibrate(self, prompts, *, share: float | None = None, q_strong=None, q_weak=None,
                  min_pgr: float | None = None, max_drop: float | None = None) -> CalibrationRecord:
        """Set the threshold from reference prompts.

        share: the target strong-call share on ``prompts`` (RouteLLM's quantile method), or
        min_pgr / max_drop with the prompts' qualities q_strong, q_weak (see
        :func:`router_ml.calibration.threshold_for_quality`). Returns the record it saves.
        """
        prompts = check_prompts(prompts)
        scores = self.score(prompts)
        t, rec = calibrate(scores, share=share, q_strong=q_strong, q_weak=q_weak,
                           min_pgr=min_pgr, max_drop=max_drop, n=len(prompts),
                           fingerprint=fingerprint(prompts))
        self.set_threshold(t, rec)
        return rec

    def set_threshold(self, threshold: float, record: CalibrationRecord):
        """Set a threshold chosen elsewhere (e.g. for a budget) with its record."""
        self._threshold = check_threshold(threshold)
        self.calibration = record

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the router as a directory (see :mod:`router_ml.persistence`)."""
        from router_ml.persistence import save_router

        save_router(self, path)

    def __repr__(self):
        return (f"Router(encoder={self.encoder.spec()['kind']}, "
                f"classifier={type(self.classifier).__name__}, strong={self.strong_model!r}, "
                f"weak={self.weak_model!r}, threshold={self._threshold:.4f})")
