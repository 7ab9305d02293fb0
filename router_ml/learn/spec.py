"""An unfitted router: :class:`RouterSpec` holds the encoder, the estimator, the candidate
models, their prices and the starting knob; ``fit`` learns from prompts and their qualities
and returns a fitted :class:`~router_ml.core.router.Router`.

    from router_ml.core.encoders import TfidfEncoder
    from router_ml.learn.spec import RouterSpec

    router = RouterSpec(TfidfEncoder(), models=["strong", "weak"]).fit(prompts, qualities)

``router-ml train`` (:func:`router_ml.learn.training.fit_router`) does more: it chooses the
heads' regularisation, calibrates the knob on out-of-fold predictions and adds a length prior
and coverage; a spec fits once, with the knob it is given.
"""

from __future__ import annotations

import numpy as np

from router_ml.core.calibration import check_threshold
from router_ml.core.heads import check_lam
from router_ml.core.prompts import check_prompts, fingerprint
from router_ml.core.router import Router
from router_ml.core.state import RouterState


class RouterSpec:
    """Encoder + estimator + candidates, not yet fitted.

    encoder: an encoder from :mod:`router_ml.core.features` (default: the prompt statistics).
    estimator: a scikit-learn estimator of qualities (default:
    :class:`router_ml.learn.estimator.QualityEstimator`). models: the candidate names, the
    columns of the training qualities in order; for two models the first is the strong one.
    prices: {model: {"input": USD/M tokens, "output": USD/M tokens}} for costs and ``lam``.
    threshold (two models) or lam: the knob; two-model routers start at threshold 0.5, others
    at lam 0 (the best predicted quality, whatever it costs).
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
        if threshold is not None and len(models) != 2:
            raise ValueError(f"a threshold needs exactly two models, this router has "
                             f"{len(models)}; set lam instead")
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
        if lam is None and (threshold is not None or len(models) == 2):
            self.knob = {"threshold": check_threshold(0.5 if threshold is None else threshold)}
        else:
            self.knob = {"lam": check_lam(0.0 if lam is None else lam)}

    def fit(self, prompts, qualities, sample_weight=None, *, features=None) -> Router:
        """Fit the encoder (if it learns from prompts) and the estimator; return the router.

        qualities: (n, len(models)) in [0, 1], NaN where a model has no outcome.
        features: the fitted encoder's output for ``prompts``, when the caller has it."""
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
        return Router(RouterState(
            self.encoder, self.estimator, self.models, prices=self.prices, **self.knob,
            training={"n": len(prompts),
                      "fingerprint": fingerprint(prompts, np.nan_to_num(Y, nan=-1))}))

    def __repr__(self):
        from router_ml.core.features import encoder_spec

        knob = ", ".join(f"{k}={v:g}" for k, v in self.knob.items())
        return (f"RouterSpec(encoder={encoder_spec(self.encoder)['kind']}, "
                f"estimator={type(self.estimator).__name__}, models={self.models}, {knob})")
