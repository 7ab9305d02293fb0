"""What a fitted router is, as one frozen value: :class:`RouterState`.

Training (:mod:`router_ml.learn`) produces a state; loading (:mod:`router_ml.core.artifact`)
reads one from a saved folder; :class:`router_ml.core.router.Router` is built from a state
and from nothing else, and saving writes the state back. Every check that the parts fit
together runs here, once, whichever way the state came.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from router_ml.core.calibration import CalibrationRecord, check_threshold
from router_ml.core.heads import QualityHeads, check_lam, round_significant

# how a pair's score comes from its predicted qualities (router_ml.core.router.pair_score)
SCORE_RULES = ("gain", "weak")


@dataclass(frozen=True)
class RouterState:
    """A fitted router.

    encoder: a fitted encoder (:mod:`router_ml.core.features`). estimator: the fitted
    :class:`~router_ml.core.heads.QualityHeads`, or a fitted estimator with
    ``decision_function`` (a scikit-learn one, or one that hands its logistic heads over as
    ``heads_``). models: the candidate names, in the estimator's column order (a pair: strong
    first). prices: {model: {"input": USD/M tokens, "output": USD/M tokens}}.
    threshold (a pair) or lam: the knob, exactly one of them; calibration: how it was chosen
    (default: a ``manual`` record of its value). score_rule: how a pair's score comes from its
    predicted qualities (``gain`` or ``weak``). prior: a pair's
    :class:`~router_ml.core.prior.LengthPrior` or None. coverage: a
    :class:`~router_ml.core.coverage.Coverage` or None; fallback: the model an uncovered
    prompt goes to (None: the knob decides). training, evaluation: provenance records (plain
    JSON). manifest: the saved manifest, for a router that was loaded (None otherwise).
    """

    encoder: object
    estimator: object
    models: tuple
    threshold: float | None = None
    lam: float | None = None
    calibration: CalibrationRecord | None = None
    prices: dict = field(default_factory=dict)
    score_rule: str = "gain"
    prior: object = None
    coverage: object = None
    fallback: str | None = None
    training: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    manifest: dict | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # the normalised values of a frozen dataclass
        models = tuple(str(m) for m in self.models)
        if len(models) < 2:
            raise ValueError(f"a router needs at least two candidate models, got {list(models)}")
        dup = sorted({m for m in models if models.count(m) > 1})
        if dup:
            raise ValueError(f"candidate models must be distinct; repeated: {', '.join(dup)}")
        set_(self, "models", models)
        if (self.threshold is None) == (self.lam is None):
            raise ValueError("a router's knob is a threshold or lam: give exactly one")
        if self.threshold is not None:
            if len(models) != 2:
                raise ValueError(f"a threshold needs exactly two models, this router has "
                                 f"{len(models)}; set lam instead")
            set_(self, "threshold", check_threshold(self.threshold))
        else:
            set_(self, "lam", check_lam(self.lam))
        if self.calibration is None:
            kind = "threshold" if self.threshold is not None else "lam"
            set_(self, "calibration", CalibrationRecord("manual", {kind: getattr(self, kind)}))
        set_(self, "prices", {m: dict(p) for m, p in (self.prices or {}).items()})
        if self.score_rule not in SCORE_RULES:
            raise ValueError(f"score rule must be one of {SCORE_RULES}, got {self.score_rule!r}")
        if self.prior is not None and len(models) != 2:
            raise ValueError("a length prior needs two models")
        if self.fallback is not None and self.fallback not in models:
            raise ValueError(f"fallback {self.fallback!r} is not a candidate model; choose from "
                             f"{', '.join(models)}")
        if self.estimator is None:
            raise ValueError("a router's state needs a fitted estimator")
        set_(self, "training", dict(self.training or {}))
        set_(self, "evaluation", dict(self.evaluation or {}))

    @property
    def heads(self) -> QualityHeads | None:
        """The logistic heads that predict with numpy alone, when the estimator has them."""
        est = self.estimator
        return est if isinstance(est, QualityHeads) else getattr(est, "heads_", None)

    def replace(self, **changes) -> "RouterState":
        """A copy with ``changes`` (checked like a new state)."""
        return replace(self, **changes)

    def rounded(self, digits: int) -> "RouterState":
        """The fitted numbers (the heads' weights, the knob, the length prior's quantiles, the
        calibration and training records) rounded to ``digits`` significant digits. Fits whose
        inputs differ in the last bits (the BLAS kernels of another CPU) then save the same
        bytes, as long as that noise stays below the rounding step."""
        est, heads = self.estimator, self.heads
        if heads is not None:
            if est is heads:
                est = heads.rounded(digits)
            else:
                est.heads_ = heads.rounded(digits)  # the training's own estimator object
        knob = ({"threshold": round_significant(self.threshold, digits)}
                if self.threshold is not None else {"lam": round_significant(self.lam, digits)})
        cal = self.calibration
        return replace(self, estimator=est, **knob,
                       prior=None if self.prior is None else self.prior.rounded(digits),
                       calibration=replace(cal, achieved=round_significant(cal.achieved, digits)),
                       training=round_significant(self.training, digits))
