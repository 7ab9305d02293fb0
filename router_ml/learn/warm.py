"""The warm start: a team's own rows correct the default router's prior instead of replacing it.

The prior (:class:`Prior`) is the default recipe's difficulty estimator fitted on every model's
public outcomes (:func:`router_ml.learn.protocols.outcome_rows`) minus the rows that match one
of the team's (:func:`prior_outcomes`): one difficulty d(x) on the
static embedding and, per model it met, an ability a_m and discrimination s_m. On the team's
rows, :class:`WarmStartEstimator` fits one residual logistic head per candidate model

    logit q_m(x) = beta_m [a_m + s_m d(x)] + x . v_m + b_m

with the prior's logit as an offset and an L2 penalty ``(|v_m|^2 + b_m^2 + (beta_m - 1)^2) /
(2 C)`` that shrinks towards the prior (scikit-learn's convention: the rows' loss is a sum,
so the penalty weighs less as rows accrue; the features as the encoder gives them, as the
heads from scratch take them). ``C = 0`` is the prior alone; with few rows or a small ``C``
the heads stay near it, with many rows they become the team's own (beta_m may leave 1 for 0
where the prior does not help). ``C`` is chosen on held-out folds of the team's rows by routing
quality (:func:`choose_warm`, scikit-learn's GridSearchCV), over a grid that reaches the
prior alone. A candidate the prior never met (no public outcomes) gets a_m, s_m from the
team's rows against the prior's d, inside each fit, so held-out folds stay held out.

Since d(x) is linear in the features, the sum is a plain logistic head: :attr:`heads_` is a
:class:`router_ml.core.heads.QualityHeads` (kinds ``quality``), saved as the usual arrays and
loaded with numpy alone, as the heads from scratch are.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from router_ml.core.heads import QualityHeads
from router_ml.learn.difficulty import check_outcomes
from router_ml.learn.estimator import fit_neighbours

# inverse penalty strengths of the residual heads: 0 is the prior alone, 1 the team's own
# heads with a light penalty
WARM_C_GRID = (0.0, 1e-3, 0.01, 0.1, 1.0)
# inverse penalty strengths of the abilities' corrections (each model's intercept and the
# scale of the prior's logit): 0 keeps the prior's abilities
WARM_C_ABILITY_GRID = (0.0, 0.1, 1.0)

# the prior's encoder: the residual heads' encoder starts with it (more parts may follow)
PRIOR_ENCODER = "static"


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass(frozen=True)
class Prior:
    """The default's difficulty and abilities: d(x) = x[:dim] . coef + intercept on the
    prior's encoder (:data:`PRIOR_ENCODER`, ``dim`` features), and {model: (a, s)} for
    every model with public outcomes. ``n`` is the number of outcome rows it learnt from."""

    coef: np.ndarray
    intercept: float
    abilities: dict
    n: int = 0

    @classmethod
    def fit(cls, outcomes, encoder=None, random_state: int = 0) -> "Prior":
        """The difficulty estimator on ``outcomes`` (Rows of every model's outcomes), with the
        committed static embedding unless ``encoder`` (a fitted encoder) is given."""
        from router_ml.learn.config import build_encoder
        from router_ml.learn.difficulty import DifficultyEstimator

        if outcomes is None or not len(outcomes):
            raise ValueError("the warm start learns its prior from every model's public "
                             "outcomes: give outcome rows (TrainConfig.outcomes, e.g. "
                             "mmlu,gsm8k,arena-hard,dcrouter,arena-rated and the data), or train "
                             "without the prior (estimator 'heads')")
        # a model whose every outcome matched the team's rows is unknown to the prior
        seen = np.isfinite(outcomes.quality).any(axis=0)
        if not seen.any():
            raise ValueError("the warm start's prior has no public outcome left once the rows "
                             "that match the training rows are dropped; train without it "
                             "(estimator 'heads')")
        enc = encoder if encoder is not None else build_encoder(PRIOR_ENCODER)
        X = np.asarray(enc.fit_transform(outcomes.prompts), dtype=np.float64)
        est = DifficultyEstimator(random_state=random_state).fit(X, outcomes.quality[:, seen],
                                                                 source=outcomes.sources)
        models = [m for m, k in zip(outcomes.models, seen) if k]
        abilities = {m: (float(a), float(s)) for m, a, s in zip(models, est.a_, est.s_)}
        return cls(est.coef_, est.intercept_, abilities, len(outcomes))

    def abilities_of(self, models) -> np.ndarray:
        """(m, 2) (a, s) per model, matched by name regardless of case; NaN for a model the
        prior never met."""
        lower = {k.lower(): v for k, v in self.abilities.items()}
        return np.array([self.abilities.get(m, lower.get(str(m).lower(), (np.nan, np.nan)))
                         for m in models], dtype=np.float64)

    def difficulty_weights(self, n_features: int) -> np.ndarray:
        """(n_features,) d's weights over an encoder whose first part is the prior's (zeros
        for the parts after it)."""
        if n_features < len(self.coef):
            raise ValueError(f"the warm start's features ({n_features}) must start with the "
                             f"prior's {len(self.coef)} ({PRIOR_ENCODER!r} encoder)")
        return np.r_[self.coef, np.zeros(n_features - len(self.coef))]


class WarmStartEstimator(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Residual logistic heads over a prior's logit (see the module docstring).

    prior_coef: (d,) the prior's difficulty weights over X's columns, prior_intercept: its
    intercept (None, None: no prior, d = 0); abilities: (m, 2) the prior's (a, s) per output,
    NaN for a model it never met (None: none met); C: inverse L2 strength of the residual
    weights (0: the prior alone); neighbours: 0, or k: each corrected head averaged, half and
    half, with the mean quality of the k nearest training rows, as the heads from scratch
    (:class:`router_ml.learn.estimator.QualityEstimator`'s ``neighbours``).
    Fitted: ``heads_`` (numpy heads), ``abilities_`` (m, 2) the (a, s) used,
    ``prior_scale_`` (m,) beta, ``residual_coef_`` (m, d), ``residual_intercept_`` (m,),
    ``n_outputs_``.
    """

    _parameter_constraints = {
        "prior_coef": [None, "array-like"],
        "prior_intercept": [None, Real],
        "abilities": [None, "array-like"],
        "C": [Interval(Real, 0, None, closed="left")],
        "C_ability": [Interval(Real, 0, None, closed="left")],
        "neighbours": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, prior_coef=None, prior_intercept=None, abilities=None, C=0.1,
                 C_ability=1.0, neighbours=0):
        self.prior_coef = prior_coef
        self.prior_intercept = prior_intercept
        self.abilities = abilities
        self.C = C
        self.C_ability = C_ability
        self.neighbours = neighbours

    def fit(self, X, y, sample_weight=None):
        """X: (n, d) features; y: (n, M) qualities in [0, 1], NaN where missing;
        sample_weight: (n,) or None. Returns self."""
        self._validate_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None: give each model's qualities, (n, M) in [0, 1]")
        X = validate_data(self, X, accept_sparse=("csr", "csc"), dtype=np.float64)
        X, Y, fin = check_outcomes(X, y)
        nb = fit_neighbours(X, Y, self.neighbours) if self.neighbours else None
        n, m = Y.shape
        d_ = X.shape[1]
        coef = (np.zeros(d_) if self.prior_coef is None
                else np.asarray(self.prior_coef, dtype=np.float64).ravel())
        if coef.shape != (d_,):
            raise ValueError(f"prior_coef must have one weight per feature ({d_}), got "
                             f"{coef.shape}")
        icpt = 0.0 if self.prior_intercept is None else float(self.prior_intercept)
        ab = (np.full((m, 2), np.nan) if self.abilities is None
              else np.array(self.abilities, dtype=np.float64))
        if ab.shape != (m, 2):
            raise ValueError(f"abilities must be (a, s) per output, shape ({m}, 2), got {ab.shape}")
        w = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
        d = X @ coef + icpt
        V, B, beta = np.zeros((m, d_)), np.zeros(m), np.ones(m)
        for j in range(m):
            r = fin[:, j]
            if not np.isfinite(ab[j]).all():
                ab[j] = _fit_ability(d[r], Y[r, j], w[r])
            if self.C > 0 or self.C_ability > 0:
                V[j], B[j], beta[j] = _fit_residual(X[r], Y[r, j], w[r],
                                                    ab[j, 0] + ab[j, 1] * d[r], self.C,
                                                    self.C_ability)
        self.abilities_, self.prior_scale_ = ab, beta
        self.residual_coef_, self.residual_intercept_ = V, B
        # beta (a + s d(x)) + x . v + b, with d linear in x: one logistic head per model
        W = (beta * ab[:, 1])[:, None] * coef + V
        b = beta * (ab[:, 0] + ab[:, 1] * icpt) + B
        self.n_outputs_ = m
        self.heads_ = QualityHeads(["quality"] * m, [W[j:j + 1] for j in range(m)],
                                   [b[j:j + 1] for j in range(m)], [[0, 1]] * m, nb)
        return self

    def decision_function(self, X) -> np.ndarray:
        """(n, m) expected qualities in [0, 1]."""
        check_is_fitted(self, "heads_")
        X = validate_data(self, X, accept_sparse=("csr", "csc"), dtype=np.float64, reset=False)
        return self.heads_.decision_function(X.toarray() if hasattr(X, "toarray") else X)

    def predict(self, X) -> np.ndarray:
        return self.decision_function(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags


def _fit_ability(d, q, w):
    """(a, s) of a model the prior never met, from its rows against the prior's d: the
    difficulty estimator's soft-label logistic loss and its small pull towards (0, -1)."""
    from scipy.optimize import minimize

    W = w.sum()

    def f(t):
        z = t[0] + t[1] * d
        g = w * (_sigmoid(z) - q) / W
        loss = (w * (np.logaddexp(0, z) - q * z)).sum() / W
        return (loss + 5e-5 * (t[0] ** 2 + (t[1] + 1) ** 2),
                np.array([g.sum() + 1e-4 * t[0], g @ d + 1e-4 * (t[1] + 1)]))

    return minimize(f, np.array([0.0, -1.0]), jac=True, method="L-BFGS-B").x


def _fit_residual(X, q, w, offset, C, C_ability):
    """(v, b, beta): the soft-label logistic loss (a sum over rows) of beta * offset + X v + b
    plus |v|^2 / (2 C) + (b^2 + (beta - 1)^2) / (2 C_ability); a strength of 0 keeps its part
    at the prior (v = 0; b = 0, beta = 1). With few rows the prior's logit nearly as it is,
    with many the rows' own head (beta towards 0 where the prior does not help). The features
    are penalised as they come, as scikit-learn's LogisticRegression does."""
    from scipy.optimize import minimize

    d_ = X.shape[1]
    # a strength of 0 fixes its parameters: an infinite penalty, i.e. bounds at the prior
    iv, ia = (1.0 / C if C > 0 else 0.0), (1.0 / C_ability if C_ability > 0 else 0.0)

    def f(t):
        v, b, beta = t[:d_], t[d_], t[d_ + 1]
        z = beta * offset + X @ v + b
        g = w * (_sigmoid(z) - q)
        loss = (w * (np.logaddexp(0, z) - q * z)).sum()
        loss += 0.5 * iv * (v @ v) + 0.5 * ia * (b * b + (beta - 1) ** 2)
        return loss, np.r_[X.T @ g + iv * v, g.sum() + ia * b, g @ offset + ia * (beta - 1)]

    bounds = ([(None, None) if C > 0 else (0.0, 0.0)] * d_
              + [(None, None) if C_ability > 0 else (0.0, 0.0),
                 (None, None) if C_ability > 0 else (1.0, 1.0)])
    t = minimize(f, np.r_[np.zeros(d_ + 1), 1.0], jac=True, method="L-BFGS-B", bounds=bounds,
                 options={"maxiter": 1000}).x
    return t[:d_], t[d_], t[d_ + 1]


def prior_outcomes(outcomes, train):
    """``outcomes`` without the rows whose question matches a row of ``train`` (normalised as
    :class:`router_ml.learn.protocols.QuestionIndex` does), and how many were dropped: the prior
    never learns from the rows that correct it, so that their held-out folds are held out."""
    from router_ml.learn.protocols import QuestionIndex

    index = QuestionIndex(train.prompts)
    keep = np.array([p not in index for p in outcomes.prompts], dtype=bool)
    return outcomes.subset(keep), int((~keep).sum())


def warm_estimator(prior: Prior, models, n_features: int, C: float = 0.1,
                   neighbours: int = 0) -> WarmStartEstimator:
    """An unfitted WarmStartEstimator for ``models`` over ``n_features`` features whose first
    are the prior's."""
    return WarmStartEstimator(prior_coef=prior.difficulty_weights(n_features),
                              prior_intercept=prior.intercept,
                              abilities=prior.abilities_of(models), C=C, neighbours=neighbours)


def choose_warm(estimator: WarmStartEstimator, X, Y, costs, *, folds: int = 3,
                repeats: int = 1, random_state: int = 0, lengths=None, length_weights=None,
                rules=("gain", "weak"), grid=WARM_C_GRID,
                ability_grid=WARM_C_ABILITY_GRID) -> dict:
    """The C and C_ability whose held-out predictions have the least log-loss and, for a pair,
    the score rule among ``rules`` (``gain`` or ``weak``, see
    :func:`router_ml.core.router.pair_score`) whose held-out predictions then route best:
    each candidate of the grid (scikit-learn's ParameterGrid) predicts every row from a clone
    fitted without it (shuffled KFold, ``repeats`` times with other shuffles); a pair scores
    the APGR of those predictions, blended with the prompts' ``lengths`` by the length prior
    as the router will be (:class:`router_ml.core.prior.LengthPrior`, when given, over
    ``length_weights``: None for its grid); more models their AIQ with the rows' ``costs``.
    Returns {"C", "C_ability", "rule", "score" (its
    routing quality), "se" (over the repeats; NaN for one), "log_loss", "log_losses" (the
    mean per candidate), "scores" (the mean routing quality per candidate and rule)}."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, ParameterGrid
    from threadpoolctl import threadpool_limits

    from router_ml.core.router import pair_score
    from router_ml.learn.selection import routing_score

    Y = np.asarray(Y, dtype=np.float64)
    pair = costs is None
    candidates = list(ParameterGrid({"C": list(grid), "C_ability": list(ability_grid)}))
    splits = [list(KFold(folds, shuffle=True, random_state=random_state + r).split(X))
              for r in range(repeats)]
    per = {}  # (rule, candidate index) -> the score of each repeat
    loss = {}  # candidate index -> the held-out log-loss of each repeat
    with threadpool_limits(1):
        for i, params in enumerate(candidates):
            est = clone(estimator).set_params(**params)
            for parts in splits:
                V = np.empty(Y.shape)
                for tr, te in parts:
                    V[te] = clone(est).fit(X[tr], Y[tr]).decision_function(X[te])
                obs = np.isfinite(Y)
                p = np.clip(V[obs], 1e-9, 1 - 1e-9)
                loss.setdefault(i, []).append(float(-np.mean(Y[obs] * np.log(p)
                                                             + (1 - Y[obs]) * np.log1p(-p))))
                for rule in (rules if pair else ("gain",)):
                    if not pair:
                        v = routing_score(Y, V, costs)
                    elif lengths is None:
                        v = routing_score(Y, V, None, rule)
                    else:
                        from router_ml.core.prior import WEIGHTS, LengthPrior

                        score = pair_score(V, rule)
                        try:
                            v = LengthPrior.fit(score, lengths, Y[:, 0], Y[:, 1],
                                                weights=length_weights or WEIGHTS).apgr_
                        except ValueError:
                            v = None
                        if v is None:
                            v = float("-inf")
                    per.setdefault((rule, i), []).append(float(v))
    mean = {k: float(np.mean(v)) for k, v in per.items()}
    # the strengths by held-out log-loss, a proper score far steadier than a few hundred
    # rows' APGR (whose noise would pick the prior or a residual by luck); the rule, then,
    # by routing quality
    i = int(np.argmin([np.mean(loss[k]) for k in range(len(candidates))]))
    rule = max((r for r, k in mean if k == i), key=lambda r: mean[r, i])
    best = mean[rule, i]
    se = float(np.std(per[rule, i], ddof=1) / np.sqrt(repeats)) if repeats > 1 else float("nan")
    return {"C": float(candidates[i]["C"]), "C_ability": float(candidates[i]["C_ability"]),
            "rule": rule if pair else "gain", "score": best, "se": se,
            "log_loss": float(np.mean(loss[i])),
            "log_losses": {f"C={c['C']:g} C_ability={c['C_ability']:g}": float(np.mean(loss[k]))
                           for k, c in enumerate(candidates)},
            "scores": {f"{r} C={candidates[k]['C']:g} C_ability="
                       f"{candidates[k]['C_ability']:g}": v for (r, k), v in mean.items()}}
