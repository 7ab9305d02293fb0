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

from router_ml.core.artifact import read_state, save_router
from router_ml.core.calibration import CalibrationRecord, calibrate, check_threshold
from router_ml.core.heads import QualityHeads, check_lam, choose
from router_ml.core.prompts import check_prompt, check_prompts, fingerprint, prompt_text
from router_ml.core.state import SCORE_RULES, RouterState

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
    """A fitted router: encoder + estimator -> predicted quality per model; a knob -> the
    model to call.

    Built from a :class:`~router_ml.core.state.RouterState` and from nothing else: training
    (:func:`router_ml.learn.training.fit_router`, or
    :class:`router_ml.learn.spec.RouterSpec` for an encoder and estimator of one's own)
    produces one, :func:`router_ml.load_router` reads one. The knob (``threshold`` or
    ``lam``), the ``fallback`` and the ``tokenizer`` may be set on a router; its other parts
    are read-only (``router.state.replace(...)`` makes a changed copy to build a router from).

    tokenizer: counts a prompt's input tokens for its cost (see
    :func:`router_ml.core.prices.prompt_costs`; None: ceil(len / 4)); not saved.
    """

    def __init__(self, state: RouterState = None, *args, tokenizer=None, **kwargs):
        if not isinstance(state, RouterState) or args or kwargs:  # the 0.1 signature
            raise TypeError(
                f"Router(state) takes a RouterState, got {type(state).__name__}; an unfitted "
                "router is router_ml.learn.spec.RouterSpec(encoder, estimator, models=...), "
                "whose fit() returns a Router")
        self._state = state
        self._models = list(state.models)
        self._heads = state.heads  # the knob and fallback change; the estimator never does
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ the parts
    @property
    def state(self) -> RouterState:
        """The router as one frozen value (what saving writes)."""
        return self._state

    encoder = property(lambda self: self._state.encoder, doc="The fitted encoder.")
    estimator = property(lambda self: self._state.estimator,
                         doc="The fitted estimator (QualityHeads after loading).")
    prices = property(lambda self: self._state.prices,
                      doc="{model: {'input': USD/M tokens, 'output': USD/M tokens}}.")
    score_rule = property(lambda self: self._state.score_rule,
                          doc="How a pair's score comes from its qualities (pair_score).")
    length_prior = property(lambda self: self._state.prior,
                            doc="A pair's LengthPrior blended into its score, or None.")
    coverage = property(lambda self: self._state.coverage,
                        doc="The Coverage signal of the training prompts, or None.")
    calibration = property(lambda self: self._state.calibration,
                           doc="How the knob was chosen (a CalibrationRecord).")
    training = property(lambda self: self._state.training, doc="The training record.")
    evaluation = property(lambda self: self._state.evaluation, doc="The evaluation record.")
    manifest = property(lambda self: self._state.manifest,
                        doc="The saved manifest of a loaded router (None otherwise).")

    @property
    def models(self) -> list[str]:
        """The candidate models, in the estimator's column order (a pair: strong first)."""
        return self._models

    # ------------------------------------------------------------------ the knob
    @property
    def threshold(self) -> float | None:
        """Two-model routers: the strong model when score >= threshold; None when lam decides."""
        return self._state.threshold

    @threshold.setter
    def threshold(self, value):
        self.set_threshold(value, None)

    @property
    def lam(self) -> float | None:
        """The knob of the lam rule (USD per unit of quality); None when a threshold decides."""
        return self._state.lam

    @lam.setter
    def lam(self, value):
        self.set_lam(value, None)

    def set_threshold(self, threshold: float, record: CalibrationRecord | None = None):
        """Decide by a threshold on the score (two models), with how it was chosen (default:
        a ``manual`` record of the value)."""
        self._state = self._state.replace(threshold=check_threshold(threshold), lam=None,
                                          calibration=record)

    def set_lam(self, lam: float, record: CalibrationRecord | None = None):
        """Decide by ``quality - lam * cost``, with how lam was chosen (default: a ``manual``
        record of the value)."""
        self._state = self._state.replace(lam=check_lam(lam), threshold=None,
                                          calibration=record)

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

    @property
    def heads(self) -> QualityHeads | None:
        """The logistic heads that predict with numpy alone (None for other estimators)."""
        return self._heads

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
        return self._costs(self._texts(prompts))

    def _costs(self, texts: list[str]) -> np.ndarray:
        from router_ml.core.prices import prompt_costs

        return prompt_costs(texts, self.models, self.prices, tokenizer=self.tokenizer)

    # ------------------------------------------------------------------ routing
    def route(self, prompt) -> RoutingDecision:
        """The decision for one prompt: a str, or a list of chat messages, scored on its user
        turns, newest first (:func:`router_ml.core.prompts.prompt_text`)."""
        # a bad prompt or message list: the error names ``prompt``
        text = prompt_text(prompt) if isinstance(prompt, (list, tuple)) else check_prompt(prompt)
        return self._decisions([text])[0]

    def route_batch(self, prompts, *, threshold: float | None = None) -> list[RoutingDecision]:
        """Decisions for a list of prompts (str or chat messages, each conversation scored on
        its user turns, newest first: :func:`router_ml.core.prompts.prompt_text`). With a
        coverage signal and a ``fallback`` model, an uncovered prompt goes to the fallback.
        threshold: a pair router's knob in [0, 1] for these prompts only (None: the router's
        own)."""
        texts = self._texts(prompts)
        if threshold is not None:
            if self.threshold is None:
                raise ValueError("this router routes by lam; a threshold is for a pair")
            threshold = check_threshold(threshold)
        return self._decisions(texts, threshold)

    def _decisions(self, texts: list[str], threshold: float | None = None):
        r = self._route(texts, threshold)
        th = self.threshold if threshold is None else threshold
        return [RoutingDecision(self.models[j], float(r.score[i]), th, self.lam,
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
        C = self._costs(texts) if self.prices else None
        if self.threshold is not None:
            s = self._pair_score(V, texts)
            pick = np.where(s >= (self.threshold if threshold is None else threshold), 0, 1)
        else:
            if C is None and self.lam > 0:
                raise ValueError("routing by lam > 0 needs the models' prices; pass prices= "
                                 "to the router (USD per million input/output tokens)")
            pick = choose(V, np.zeros_like(V) if C is None else C, self.lam)
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
        return self._state.fallback

    @fallback.setter
    def fallback(self, model):
        self._state = self._state.replace(fallback=model)

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

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the router as a directory (see :mod:`router_ml.core.artifact`)."""
        save_router(self.state, path)

    def __repr__(self):
        from router_ml.core.features import encoder_spec

        knob = (f"threshold={self.threshold:.4f}" if self.threshold is not None
                else f"lam={self.lam:g}")
        if self.length_prior is not None:
            knob += f", length_prior={self.length_prior.weight:g}"
        return (f"Router(encoder={encoder_spec(self.encoder)['kind']}, "
                f"estimator={type(self.estimator).__name__}, models={self.models}, {knob})")


def load_router(path) -> Router:
    """Load a router saved with ``Router.save``; refuses anything it cannot verify (see
    :func:`router_ml.core.artifact.read_state`).

    Raises ArtifactVersionError (unknown format), ArtifactIntegrityError (missing, changed,
    truncated, symlinked or misnamed files) or UntrustedTypeError (a type not allowed).
    """
    return Router(read_state(path))
