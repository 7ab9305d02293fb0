"""The router: an encoder and an estimator predict each candidate model's quality on a prompt;
a knob trades that quality against the model's cost.

Two knobs, one decision rule underneath:

- ``lam`` (any number of models): the candidate maximising ``predicted quality - lam * cost``
  (cost in USD for the prompt, from the router's prices), ties to the cheaper model.
  ``lam`` is the USD one would pay for one unit of quality (1.0 = always right).
- ``threshold`` (two models, the first being the strong one): the strong model when
  ``score >= threshold``, with ``score = 0.5 + (q_strong - q_weak) / 2`` from the predicted
  qualities. At a fixed cost per request this is the ``lam`` rule with
  ``threshold = 0.5 + lam * (cost_strong - cost_weak) / 2``. A router trained with a length
  prior (:mod:`router_ml.core.prior`) blends that score with the prompt's length; the ``lam``
  rule then still compares the predicted qualities alone.

Loading and routing need numpy only: the logistic heads predict through
:class:`QualityHeads`; scikit-learn is imported only to train.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from router_ml.core.calibration import CalibrationRecord, calibrate, check_threshold
from router_ml.core.heads import QualityHeads, check_lam, choose
from router_ml.core.prompts import check_prompt, check_prompts, fingerprint, prompt_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutingDecision:
    """One routing decision.

    model: the chosen model, named exactly as in the training data or by the user.
    score: for a two-model router, 0.5 + (q_strong - q_weak) / 2 in [0, 1] (higher = strong
    model more needed); for more models, the chosen model's predicted quality.
    threshold: the threshold the score was compared with (None when ``lam`` decides).
    lam: the knob value when ``lam`` decides (None for a threshold decision).
    qualities: predicted quality in [0, 1] per candidate. cost: estimated USD of the chosen
    model for this prompt (None without prices). reason: why, in words.
    covered: whether the prompt is close to the training prompts (None if not measured);
    an uncovered prompt goes to the router's fallback model when it has one.
    """

    model: str
    score: float
    threshold: float | None
    lam: float | None = None
    qualities: dict = field(default_factory=dict)
    cost: float | None = None
    reason: str = ""
    covered: bool | None = None

    @property
    def strong(self) -> bool:
        """Two-model routers: whether the strong model was chosen."""
        return self.threshold is not None and self.score >= self.threshold


@dataclass(frozen=True, eq=False)
class Routes:
    """The routing decisions of n prompts as arrays (:meth:`Router.route_arrays`).

    model: (n,) object array of the chosen models' names; index: (n,) their column in
    ``router.models``; score: (n,) float64 in [0, 1], as :attr:`RoutingDecision.score` (a
    pair's score, else the chosen model's predicted quality); qualities: (n, m) float64
    predicted quality in [0, 1] per candidate, columns in ``router.models`` order; cost: (n,)
    estimated USD of the chosen model per prompt (None without prices); covered: (n,) bool
    (None without a coverage signal); similarity: (n,) the coverage similarity or None.
    """

    router: "Router"
    model: np.ndarray
    index: np.ndarray
    score: np.ndarray
    qualities: np.ndarray
    cost: np.ndarray | None
    covered: np.ndarray | None
    similarity: np.ndarray | None

    def __len__(self) -> int:
        return len(self.index)

    def reason(self, i: int) -> str:
        """Why prompt ``i`` went where it did, in words."""
        r, j = self.router, int(self.index[i])
        if self.covered is not None and not self.covered[i] and r.fallback is not None:
            return (f"not covered (similarity {self.similarity[i]:.3f} < "
                    f"{r.coverage.tau:.3f}): fallback {r.fallback}")
        if r.threshold is not None:
            prior = ("" if r.length_prior is None
                     else f" (length prior, weight {r.length_prior.weight:g})")
            return (f"score {self.score[i]:.4f}{prior} {'>=' if j == 0 else '<'} threshold "
                    f"{r.threshold:.4f}")
        return (f"highest predicted quality - {r.lam:g} x cost: {r.models[j]} "
                f"({self.qualities[i, j]:.3f})")


SCORE_RULES = ("gain", "weak")


def pair_score(V, rule: str = "gain") -> np.ndarray:
    """(n,) a pair's score in [0, 1] from its predicted qualities V (n, 2), strong first:
    ``gain``, 0.5 + (q_strong - q_weak) / 2 (the strong model's expected gain); ``weak``,
    1 - q_weak (the chance that the weak model's answer falls short: what a difficulty
    estimator ranks, :mod:`router_ml.learn.difficulty`)."""
    V = np.asarray(V, dtype=np.float64)
    if rule == "gain":
        return np.clip(0.5 + 0.5 * (V[:, 0] - V[:, 1]), 0.0, 1.0)
    if rule == "weak":
        return np.clip(1.0 - V[:, 1], 0.0, 1.0)
    raise ValueError(f"score rule must be one of {SCORE_RULES}, got {rule!r}")


class Router:
    """Encoder + estimator -> predicted quality per model; a knob -> the model to call.

    encoder: an encoder from :mod:`router_ml.core.features` (default: the prompt statistics).
    estimator: a :class:`router_ml.learn.estimator.QualityEstimator` (default one) or, after
    loading, its :class:`QualityHeads`. models: the candidate names, exactly as given (the
    columns of the training qualities, in order); for two models the first is the strong one.
    prices: {model: {"input": USD/M tokens, "output": USD/M tokens}} for costs and ``lam``.
    threshold (two models) or lam: the knob; two-model routers start at threshold 0.5,
    others at lam 0 (the best predicted quality, whatever it costs).
    """

    def __init__(self, encoder=None, estimator=None, *, models, prices=None,
                 threshold: float | None = None, lam: float | None = None):
        models = [str(m) for m in models]
        if len(models) < 2:
            raise ValueError(f"a router needs at least two candidate models, got {models}")
        dup = sorted({m for m in models if models.count(m) > 1})
        if dup:
            raise ValueError(f"candidate models must be distinct; repeated: {', '.join(dup)}")
        if threshold is not None and lam is not None:
            raise ValueError("give threshold or lam, not both")
        if encoder is None:
            from router_ml.core.encoders import StatsEncoder

            encoder = StatsEncoder()
        if estimator is None:
            from router_ml.learn.estimator import QualityEstimator

            estimator = QualityEstimator()
        self.encoder = encoder
        self.estimator = estimator
        self.models = models
        self.prices = {m: dict(p) for m, p in (prices or {}).items()}
        self.training: dict = {}
        self.evaluation: dict = {}
        self.coverage = None  # a router_ml.core.coverage.Coverage, set by training
        # two models: a router_ml.core.prior.LengthPrior blended into the score, set by training
        self.length_prior = None
        # two models: how the score comes from the predicted qualities (see pair_score)
        self.score_rule = "gain"
        # counts a prompt's input tokens for its cost (see router_ml.core.prices.prompt_costs;
        # None: ceil(len / 4)); not saved: set it again after load_router
        self.tokenizer = None
        self._fallback = None
        self.fitted_ = isinstance(estimator, QualityHeads)
        if lam is None and (threshold is not None or len(models) == 2):
            self.threshold = 0.5 if threshold is None else threshold
        else:
            self.lam = 0.0 if lam is None else lam

    # ------------------------------------------------------------------ the knob
    @property
    def threshold(self) -> float | None:
        """Two-model routers: the strong model when score >= threshold; None when lam decides."""
        return self._threshold

    @threshold.setter
    def threshold(self, value):
        self.set_threshold(value, None)

    @property
    def lam(self) -> float | None:
        """The knob of the lam rule (USD per unit of quality); None when a threshold decides."""
        return self._lam

    @lam.setter
    def lam(self, value):
        self.set_lam(value, None)

    def set_threshold(self, threshold: float, record: CalibrationRecord | None = None):
        """Decide by a threshold on the score (two models), with how it was chosen (default:
        a ``manual`` record of the value)."""
        if len(self.models) != 2:
            raise ValueError(f"a threshold needs exactly two models, this router has "
                             f"{len(self.models)}; set lam instead")
        self._threshold, self._lam = check_threshold(threshold), None
        self.calibration = record or CalibrationRecord("manual", {"threshold": self._threshold})

    def set_lam(self, lam: float, record: CalibrationRecord | None = None):
        """Decide by ``quality - lam * cost``, with how lam was chosen (default: a ``manual``
        record of the value)."""
        self._lam, self._threshold = check_lam(lam), None
        self.calibration = record or CalibrationRecord("manual", {"lam": self._lam})

    @property
    def strong_model(self) -> str:
        return self._pair()[0]

    @property
    def weak_model(self) -> str:
        return self._pair()[1]

    def _pair(self):
        if len(self.models) != 2:
            raise AttributeError(f"strong_model/weak_model exist for two-model routers; this "
                                 f"one has {len(self.models)} models: {', '.join(self.models)}")
        return self.models

    # ------------------------------------------------------------------ fitting
    def fit(self, prompts, qualities, sample_weight=None, *, features=None):
        """Fit the encoder (if it learns from prompts) and the estimator.

        qualities: (n, len(models)) in [0, 1], NaN where a model has no outcome.
        features: the fitted encoder's output for ``prompts``, when the caller has it.
        Returns self."""
        prompts = check_prompts(prompts)
        Y = np.asarray(qualities, dtype=np.float64)
        if len(prompts) == 0:
            raise ValueError("cannot fit a router on zero prompts")
        if Y.shape != (len(prompts), len(self.models)):
            raise ValueError(f"qualities must have shape ({len(prompts)}, {len(self.models)}) "
                             f"(one column per model: {', '.join(self.models)}), got {Y.shape}")
        X = self.encoder.fit_transform(prompts) if features is None else features
        if X.shape[0] != len(prompts):
            raise ValueError(f"features must have one row per prompt, got {X.shape[0]} "
                             f"for {len(prompts)} prompts")
        self.estimator.fit(X, Y, sample_weight=sample_weight)
        self.length_prior = None  # fitted to the previous estimator's scores
        self.training = {"n": len(prompts), "fingerprint": fingerprint(prompts, np.nan_to_num(Y, nan=-1))}
        self.fitted_ = True
        return self

    @property
    def heads(self) -> QualityHeads | None:
        est = self.estimator
        return est if isinstance(est, QualityHeads) else getattr(est, "heads_", None)

    # ------------------------------------------------------------------ predicting
    def _texts(self, prompts) -> list[str]:
        if isinstance(prompts, (str, bytes)):
            return check_prompts(prompts)  # the error that names a single prompt
        if not isinstance(prompts, (Sequence, np.ndarray)) and callable(
                getattr(prompts, "tolist", None)) and getattr(prompts, "ndim", 1) == 1:
            prompts = prompts.tolist()  # a pandas Series or Index (what mlflow may pass)
        if not isinstance(prompts, (Sequence, np.ndarray)):
            raise TypeError(f"prompts must be a list of str (or a 1-D array or pandas "
                            f"Series), got {type(prompts).__name__}")
        return [prompt_text(p, f"prompts[{i}]") for i, p in enumerate(prompts)]

    def decision_function(self, prompts) -> np.ndarray:
        """(n, len(models)) unclipped expected qualities, the values the knob compares
        (clipping would tie models whose estimates pass 0 or 1). Non-finite values (a
        broken estimator) become 1.0 for the first model and 0.0 for the others, so such a
        prompt goes to the first (for a pair: the strong) model."""
        return self._predict(self._texts(prompts))[0]

    def _predict(self, texts: list[str]):
        """(decision values (n, m), features (n, d) or None for no prompts)."""
        if not self.fitted_:
            raise RuntimeError("the router is not fitted; call fit() or load_router()")
        if not texts:
            return np.zeros((0, len(self.models))), None
        X = self.encoder.transform(texts)
        heads = self.heads
        V = heads.decision_function(X) if heads is not None else self.estimator.decision_function(X)
        V = np.asarray(V, dtype=np.float64)
        bad = ~np.isfinite(V).all(axis=1)
        if bad.any():
            logger.warning("%d prompts got a non-finite prediction; routed to %s",
                           int(bad.sum()), self.models[0])
            V[bad] = 0.0
            V[bad, 0] = 1.0
        return V, X

    def covered(self, prompts) -> np.ndarray | None:
        """(n,) bool: whether each prompt is close to the training prompts (see
        :mod:`router_ml.core.coverage`), or None for a router without a coverage signal."""
        if self.coverage is None:
            return None
        texts = self._texts(prompts)
        return self.coverage.covered(self.encoder.transform(texts)) if texts else np.zeros(0, bool)

    def predict_quality(self, prompts) -> np.ndarray:
        """(n, len(models)) float64 predicted quality of each candidate in [0, 1]."""
        return np.clip(self.decision_function(prompts), 0.0, 1.0)

    def score(self, prompts) -> np.ndarray:
        """Two-model routers: (n,) float64 in [0, 1], higher meaning the strong model is more
        needed: :func:`pair_score` of the predicted qualities by the router's ``score_rule``
        (the gain 0.5 + (q_strong - q_weak) / 2, or 1 - q_weak for a difficulty estimator),
        with a ``length_prior`` (set by training) as its share of the training rows, blended
        with the prompt's length (see :mod:`router_ml.core.prior`)."""
        self._pair()
        texts = self._texts(prompts)
        return self._pair_score(self._predict(texts)[0], texts)

    def _pair_score(self, V, texts) -> np.ndarray:
        s = pair_score(V, self.score_rule)
        if self.length_prior is not None:
            s = self.length_prior.apply(s, [len(t) for t in texts])
        return s

    @staticmethod
    def _score(V) -> np.ndarray:
        return pair_score(V, "gain")

    def costs(self, prompts) -> np.ndarray:
        """(n, len(models)) estimated USD per prompt and model from the router's prices
        (docs/training.md: input tokens ceil(chars / 4), 256 output tokens)."""
        from router_ml.core.prices import prompt_costs

        return prompt_costs(self._texts(prompts), self.models, self.prices,
                            tokenizer=self.tokenizer)

    # ------------------------------------------------------------------ routing
    def route(self, prompt) -> RoutingDecision:
        """The decision for one prompt: a str, or a list of chat messages, scored on its user
        turns, newest first (:func:`router_ml.core.prompts.prompt_text`)."""
        if not isinstance(prompt, (list, tuple)):
            check_prompt(prompt)
        else:
            prompt_text(prompt)  # a bad message list: the error names ``prompt``
        return self.route_batch([prompt])[0]

    def route_batch(self, prompts, *, threshold: float | None = None) -> list[RoutingDecision]:
        """Decisions for a list of prompts (str or chat messages, each conversation scored on
        its user turns, newest first: :func:`router_ml.core.prompts.prompt_text`). With a
        coverage signal and a ``fallback`` model, an uncovered prompt goes to the fallback.
        threshold: a pair router's knob in [0, 1] for these prompts only (None: the router's
        own)."""
        texts = self._texts(prompts)
        if threshold is not None:
            if self._threshold is None:
                raise ValueError("this router routes by lam; a threshold is for a pair")
            threshold = check_threshold(threshold)
        r = self._route(texts, threshold)
        th = self._threshold if threshold is None else threshold
        return [RoutingDecision(self.models[j], float(r.score[i]), th, self._lam,
                                dict(zip(self.models, r.qualities[i].tolist())),
                                None if r.cost is None else float(r.cost[i]), r.reason(i),
                                None if r.covered is None else bool(r.covered[i]))
                for i, j in enumerate(r.index)]

    def route_arrays(self, prompts) -> "Routes":
        """The decisions of :meth:`route_batch` as arrays (for batch scoring: no object per
        prompt): see :class:`Routes`."""
        return self._route(self._texts(prompts))

    def _route(self, texts: list[str], threshold: float | None = None) -> "Routes":
        V, X = self._predict(texts)
        Q = np.clip(V, 0.0, 1.0)
        C = self.costs(texts) if self.prices else None
        if self._threshold is not None:
            s = self._pair_score(V, texts)
            pick = np.where(s >= (self._threshold if threshold is None else threshold), 0, 1)
        else:
            if C is None and self._lam > 0:
                raise ValueError("routing by lam > 0 needs the models' prices; pass prices= "
                                 "to the router (USD per million input/output tokens)")
            pick = choose(V, np.zeros_like(V) if C is None else C, self._lam)
            s = Q[np.arange(len(pick)), pick]
        cov = sim = None
        if self.coverage is not None and X is not None:
            sim = self.coverage.similarity(X)
            cov = sim >= self.coverage.tau
            if self.fallback is not None:
                pick = np.where(cov, pick, self.models.index(self.fallback))
        pick = np.asarray(pick, dtype=np.intp)
        return Routes(self, np.asarray(self.models, dtype=object)[pick], pick,
                      np.asarray(s, dtype=np.float64), Q,
                      None if C is None else C[np.arange(len(pick)), pick], cov, sim)

    @property
    def fallback(self) -> str | None:
        """The model an uncovered prompt goes to (None: the knob decides as for any prompt)."""
        return self._fallback

    @fallback.setter
    def fallback(self, model):
        if model is not None and model not in self.models:
            raise ValueError(f"fallback {model!r} is not a candidate model; choose from "
                             f"{', '.join(self.models)}")
        self._fallback = model

    # ------------------------------------------------------------------ calibration
    def calibrate(self, prompts, *, share: float | None = None, q_strong=None, q_weak=None,
                  min_pgr: float | None = None, max_drop: float | None = None) -> CalibrationRecord:
        """Two-model routers: set the threshold from reference prompts.

        share: the target strong-call share on ``prompts`` (RouteLLM's quantile method), or
        min_pgr / max_drop with the prompts' qualities q_strong, q_weak (see
        :func:`router_ml.core.calibration.threshold_for_quality`). Returns the record it saves.
        """
        prompts = check_prompts(prompts)
        scores = self.score(prompts)
        t, rec = calibrate(scores, share=share, q_strong=q_strong, q_weak=q_weak,
                           min_pgr=min_pgr, max_drop=max_drop, n=len(prompts),
                           fingerprint=fingerprint(prompts))
        self.set_threshold(t, rec)
        return rec

    def calibrate_lam(self, prompts, qualities, **target) -> CalibrationRecord:
        """Set lam from reference prompts and their true qualities (n, len(models)); target:
        one of ``max_drop``, ``budget`` or ``dearest_share`` (see
        :func:`router_ml.core.calibration.lam_for_target`). Returns the record it saves."""
        from router_ml.core.calibration import lam_for_target

        prompts = check_prompts(prompts)
        lam, rec = lam_for_target(self.decision_function(prompts), qualities, self.costs(prompts),
                                  fingerprint=fingerprint(prompts), **target)
        self.set_lam(lam, rec)
        return rec

    def round_fitted(self, digits: int) -> "Router":
        """Round the fitted numbers (the heads' weights, the knob, the length prior's
        quantiles, the calibration and training records) to ``digits`` significant digits,
        in place; returns self. Fits whose inputs differ in the last bits (the BLAS kernels
        of another CPU) then save the same bytes, as long as that noise stays below the
        rounding step."""
        from dataclasses import replace

        from router_ml.core.heads import round_significant

        heads = self.heads
        if heads is not None:
            if self.estimator is heads:
                self.estimator = heads.rounded(digits)
            else:
                self.estimator.heads_ = heads.rounded(digits)
        if self.length_prior is not None:
            self.length_prior = self.length_prior.rounded(digits)
        if self._threshold is not None:
            self._threshold = round_significant(self._threshold, digits)
        if self._lam is not None:
            self._lam = round_significant(self._lam, digits)
        self.calibration = replace(self.calibration,
                                   achieved=round_significant(self.calibration.achieved, digits))
        self.training = round_significant(self.training, digits)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the router as a directory (see :mod:`router_ml.core.artifact`)."""
        from router_ml.core.artifact import save_router

        save_router(self, path)

    def __repr__(self):
        from router_ml.core.features import encoder_spec

        knob = (f"threshold={self._threshold:.4f}" if self._threshold is not None
                else f"lam={self._lam:g}")
        if self.length_prior is not None:
            knob += f", length_prior={self.length_prior.weight:g}"
        return (f"Router(encoder={encoder_spec(self.encoder)['kind']}, "
                f"estimator={type(self.estimator).__name__}, models={self.models}, {knob})")
