"""The difficulty estimator: one prompt difficulty shared by every model, learned from every
(prompt, model, outcome) cell of every source.

    quality(m, p) = sigmoid(a_m + c_source + s_m * d(p)),    d(p) = x_p . w + b

d(p) is a linear function of the prompt's features, shared by all models (higher = harder);
a_m is model m's ability, s_m how much it suffers from difficulty (its discrimination), and
c_source a per-source offset (a source's base rate, its judge's leniency) that stays out of d
and is dropped at prediction. A model with few rows gets its a_m, s_m from those rows, shrunk
towards 0 and -1 by a small penalty.

Fitting, in two stages:

1. d: ridge regression of each prompt's difficulty label, 1 - mean quality over the models
   that answered it, standardised within its source (so one source's base rate or judge does
   not leak into d), on the standardised features. Each source weighs sqrt(its prompts), so no
   large source dominates; the penalty is chosen from ``alphas`` by the Spearman correlation
   of held-out predictions with the label, the mean over shuffled folds and over each source
   left out in turn.
2. a, s, c: soft-label logistic loss over every observed cell against the out-of-fold d, each
   prompt's weight shared among its cells (15 judged models do not make a prompt count 15
   times).

With ``rank`` k > 0, a low-rank model x prompt term follows (stage 3): logit q_m gains
u_m . (V' x_p), V (d, k) shared, u_m (k,) per model, fitted on the cells against the same
out-of-fold d and the fixed a, s, c, with an L2 penalty chosen from :data:`RANK_PENALTIES` by
the log-loss of one held-out fold of prompts. It lets models differ on kinds of prompts beyond
one difficulty (MIRT's ability vectors), and stays a linear head per model.

Since logit q_m = x . (s_m w) + (a_m + s_m b), each model's quality is a plain logistic head:
:attr:`heads_` is a :class:`router_ml.core.heads.QualityHeads` (kinds ``quality``) that
predicts with numpy alone, so a saved router loads without scikit-learn or scipy. ``columns``
names the outputs to predict (the router's candidates) among the columns learned from.

Why: within one benchmark, which of two models answers a question is mostly noise; across
kinds of requests, what is hard for every model is what needs the strong one, and it carries
over to traffic the router was not trained on (docs: the quality report).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from router_ml.core.heads import QualityHeads
from router_ml.learn.evaluation import spearman

ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)
RANK_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1)


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def _log_loss(z, q, w) -> float:
    """The weighted soft-label logistic loss of logits ``z`` against qualities ``q``."""
    return (w * (np.logaddexp(0, z) - q * z)).sum() / w.sum()


def _source_weights(source, how: str) -> np.ndarray:
    """(n,) row weights of mean 1: each source's total weight ~ n_s (none), sqrt(n_s) or 1."""
    _, inv, counts = np.unique(source, return_inverse=True, return_counts=True)
    per = {"none": np.ones(len(counts)), "sqrt": 1.0 / np.sqrt(counts),
           "balanced": 1.0 / counts}[how]
    w = per[inv]
    return w / w.mean()


def difficulty_label(Y, source) -> np.ndarray:
    """(n,) 1 - mean observed quality of each row, standardised within its source (NaN for a
    row without any observed quality, or alone in its source)."""
    Y = np.asarray(Y, dtype=np.float64)
    obs = np.isfinite(Y)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = 1.0 - np.where(obs, Y, 0.0).sum(1) / obs.sum(1)
    out = np.full(len(raw), np.nan)
    for s in np.unique(source):
        m = (source == s) & np.isfinite(raw)
        if m.sum() < 2:
            continue
        sd = raw[m].std()
        out[m] = (raw[m] - raw[m].mean()) / (sd if sd > 0 else 1.0)
    return out


def _ridge(X, y, w, alpha):
    """Weighted ridge with an unpenalised intercept: (coef, intercept)."""
    sw = w / w.sum()
    xm, ym = sw @ X, sw @ y
    Xc = X - xm
    A = (Xc * w[:, None]).T @ Xc + alpha * np.eye(X.shape[1])
    coef = np.linalg.solve(A, (Xc * w[:, None]).T @ (y - ym))
    return coef, ym - xm @ coef


def _spearman(a, b) -> float:
    """NaN for fewer than 3 rows, where a rank correlation says nothing (nanmean skips it)."""
    return np.nan if len(a) < 3 else spearman(a, b)


def check_outcomes(X, Y):
    """(X (n, d) float64, Y (n, M) float64, finite mask of Y): features and qualities in
    [0, 1] with NaN where a model has no outcome; ValueError for shapes that do not match, a
    quality outside [0, 1] or a model with no outcome at all."""
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n = Y.shape[0]
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"X must be (n, d) with one row per row of Y ({n}), got {X.shape}")
    fin = np.isfinite(Y)
    if ((Y[fin] < 0) | (Y[fin] > 1)).any():
        raise ValueError("qualities must be in [0, 1] (NaN where missing)")
    if not fin.any(axis=0).all():
        raise ValueError(f"columns {np.flatnonzero(~fin.any(axis=0)).tolist()} of Y have no "
                         "outcome at all")
    return X, Y, fin


class DifficultyEstimator(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Each model's quality from one shared prompt difficulty (see the module docstring).

    alphas: the ridge penalties to choose from (on standardised features); alpha: a fixed
    one instead. source_weight: ``sqrt`` (default), ``balanced`` or ``none``. cv: folds for
    the out-of-fold difficulty and the penalty search. columns: the indices of Y's columns to
    predict (None: all). rank: the low-rank model x prompt term's rank (0: none).
    Fitted: ``coef_`` (d,), ``intercept_`` (d = X coef_ + intercept_, mean 0 and sd 1 on the
    training rows), ``a_``, ``s_`` (one per column of Y), ``c_`` {source: offset},
    ``alpha_``, ``heads_`` (the ``columns``), ``n_outputs_``, ``sources_``; with ``rank``:
    ``U_`` (M, k), ``V_`` (d, k) on the raw features, ``rank_penalty_``.
    """

    _parameter_constraints = {
        "alphas": ["array-like"],
        "alpha": [None, Interval(Real, 0, None, closed="neither")],
        "source_weight": [StrOptions({"sqrt", "balanced", "none"})],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "columns": [None, "array-like"],
        "random_state": ["random_state"],
        "rank": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, alphas=ALPHAS, alpha=None, source_weight="sqrt", cv=5, columns=None,
                 random_state=0, rank=0):
        self.alphas = alphas
        self.alpha = alpha
        self.source_weight = source_weight
        self.cv = cv
        self.columns = columns
        self.random_state = random_state
        self.rank = rank

    def fit(self, X, y, sample_weight=None, source=None):
        """X: (n, d) features; y: (n, M) qualities in [0, 1], NaN where a model has no
        outcome; source: (n,) labels (None: one source); sample_weight: (n,) or None.
        Returns self."""
        self._validate_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None: give each model's qualities, (n, M) in [0, 1]")
        X = validate_data(self, X, accept_sparse=("csr", "csc"), dtype=np.float64,
                          ensure_min_samples=2)
        X, Y, fin = check_outcomes(X, y)
        n, M = Y.shape
        cols = list(range(M)) if self.columns is None else [int(c) for c in self.columns]
        if not cols or min(cols) < 0 or max(cols) >= M:
            raise ValueError(f"columns must index Y's {M} columns, got {self.columns!r}")
        source = (np.zeros(n, dtype=object) if source is None
                  else np.asarray(source, dtype=object))
        if source.shape != (n,):
            raise ValueError(f"source must have one label per row ({n}), got {source.shape}")
        keep = fin.any(axis=1)
        X, Y, source, fin = X[keep], Y[keep], source[keep], fin[keep]
        sw = _check_sample_weight(sample_weight, X, ensure_non_negative=True)[keep]
        if not sw.sum() > 0:
            raise ValueError("sample_weight must not be all zero (on the rows with an outcome)")
        w_row = sw * _source_weights(source, self.source_weight)
        self.n_outputs_ = len(cols)
        self.sources_ = sorted({str(s) for s in source})
        mean, scale = X.mean(axis=0), X.std(axis=0)
        scale[scale < 1e-8] = 1.0
        Xs = (X - mean) / scale

        # stage 1: the difficulty, a ridge regression of the standardised label
        y = difficulty_label(Y, source)
        lab = np.isfinite(y)
        folds = np.random.default_rng(self.random_state).integers(0, self.cv, len(y))
        self.alpha_ = self.alpha if self.alpha is not None else \
            self._choose_alpha(Xs[lab], y[lab], w_row[lab], source[lab], folds[lab])
        d_oof = np.empty(len(y))
        for k in range(self.cv):
            tr = lab & (folds != k)
            cf, ic = _ridge(Xs[tr], y[tr], w_row[tr], self.alpha_)
            d_oof[folds == k] = Xs[folds == k] @ cf + ic
        coef, icpt = _ridge(Xs[lab], y[lab], w_row[lab], self.alpha_)
        d_all = Xs @ coef + icpt
        mu, sd = d_all.mean(), d_all.std() or 1.0
        coef, icpt, d_oof = coef / sd, (icpt - mu) / sd, (d_oof - mu) / sd

        # stage 2: each model's ability and discrimination, each source's offset
        rows, cells = np.nonzero(fin)
        src = np.searchsorted(np.array(self.sources_, dtype=object),
                              np.array([str(s) for s in source[rows]], dtype=object))
        cw = w_row[rows] / fin.sum(axis=1)[rows]
        a, s, c = self._fit_heads(d_oof[rows], Y[rows, cells], cw / cw.mean(), cells, src, M,
                                  len(self.sources_))
        self.coef_ = coef / scale
        self.intercept_ = float(icpt - mean @ self.coef_)
        self.a_, self.s_ = a, s
        self.c_ = dict(zip(self.sources_, c.tolist()))
        self.columns_ = cols
        W = np.outer(s[cols], self.coef_)
        b = a[cols] + s[cols] * self.intercept_
        if self.rank:  # stage 3: the low-rank term, on the standardised features
            q, w = Y[rows, cells], cw / cw.mean()
            offset = a[cells] + c[src] + s[cells] * d_oof[rows]
            tr, te = folds[rows] != 0, folds[rows] == 0

            def held_out_loss(lam):
                U, V = self._fit_rank(Xs, rows[tr], cells[tr], q[tr], w[tr], offset[tr], M, lam)
                z = offset[te] + ((Xs @ V)[rows[te]] * U[cells[te]]).sum(1)
                return _log_loss(z, q[te], w[te])

            self.rank_penalty_ = min(RANK_PENALTIES, key=held_out_loss)
            U, V = self._fit_rank(Xs, rows, cells, q, w, offset, M, self.rank_penalty_)
            self.U_, self.V_ = U, V / scale[:, None]
            W = W + U[cols] @ self.V_.T
            b = b - U[cols] @ (mean @ self.V_)
        self.heads_ = QualityHeads(["quality"] * len(cols), [W[j:j + 1] for j in range(len(cols))],
                                   [b[j:j + 1] for j in range(len(cols))], [[0, 1]] * len(cols))
        return self

    def _choose_alpha(self, Xs, y, w, source, folds) -> float:
        """The penalty whose held-out predictions rank the label best: the mean of the pooled
        shuffled-fold Spearman and the mean Spearman over left-out sources."""
        best, best_v = None, -np.inf
        srcs = np.unique(source)
        for alpha in self.alphas:
            pred = np.empty(len(y))
            for k in range(self.cv):
                cf, ic = _ridge(Xs[folds != k], y[folds != k], w[folds != k], alpha)
                pred[folds == k] = Xs[folds == k] @ cf + ic
            parts = [_spearman(pred, y)]
            if len(srcs) > 1:
                held = []
                for s_ in srcs:
                    te = source == s_
                    cf, ic = _ridge(Xs[~te], y[~te], w[~te], alpha)
                    held.append(_spearman(Xs[te] @ cf + ic, y[te]))
                parts.append(np.nanmean(held))
            v = np.nanmean(parts)
            if v > best_v:
                best, best_v = float(alpha), v
        return best

    @staticmethod
    def _fit_heads(d, q, cw, cols, src, M, S):
        """a (M,), s (M,), c (S,) minimising the weighted soft-label logistic loss of
        a_m + c_src + s_m d over the cells, with small L2 penalties (a towards 0, s towards
        -1 so that a model with few rows suffers from difficulty like a typical one)."""
        from scipy.optimize import minimize

        W = cw.sum()

        def f(theta):
            a, s, c = theta[:M], theta[M:2 * M], theta[2 * M:]
            z = a[cols] + c[src] + s[cols] * d
            g = cw * (_sigmoid(z) - q) / W
            loss = _log_loss(z, q, cw)
            loss += 5e-5 * (a @ a + (s + 1) @ (s + 1)) + 1e-3 * (c @ c)
            return loss, np.r_[np.bincount(cols, g, M) + 1e-4 * a,
                               np.bincount(cols, g * d, M) + 1e-4 * (s + 1),
                               np.bincount(src, g, S) + 2e-3 * c]

        theta0 = np.r_[np.zeros(M), -np.ones(M), np.zeros(S)]
        t = minimize(f, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 1000}).x
        return t[:M], t[M:2 * M], t[2 * M:]

    def _fit_rank(self, Xs, rows, cells, q, cw, offset, M, lam):
        """U (M, k), V (d, k) minimising the weighted soft-label logistic loss of offset +
        U[m] . (V' x) over the cells, + lam (|U|^2 + |V|^2)."""
        from scipy.optimize import minimize

        k, d = self.rank, Xs.shape[1]
        W = cw.sum()

        def f(theta):
            U, V = theta[:M * k].reshape(M, k), theta[M * k:].reshape(d, k)
            Zr = (Xs @ V)[rows]  # (cells, k): each prompt once, its cells index into it
            z = offset + (Zr * U[cells]).sum(1)
            g = cw * (_sigmoid(z) - q) / W
            loss = _log_loss(z, q, cw)
            loss += lam * ((U * U).sum() + (V * V).sum())
            gU = np.stack([np.bincount(cells, g * Zr[:, j], M) for j in range(k)], 1)
            gZ = np.zeros((len(Xs), k))
            np.add.at(gZ, rows, g[:, None] * U[cells])
            return loss, np.r_[(gU + 2 * lam * U).ravel(), (Xs.T @ gZ + 2 * lam * V).ravel()]

        rng = np.random.default_rng(self.random_state)
        theta0 = 0.01 * rng.standard_normal(M * k + d * k)
        t = minimize(f, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
        return t[:M * k].reshape(M, k), t[M * k:].reshape(d, k)

    def difficulty(self, X) -> np.ndarray:
        """(n,) predicted difficulty (mean 0, sd 1 on the training rows; higher = harder)."""
        check_is_fitted(self, "coef_")
        return self._features(X) @ self.coef_ + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        """(n, len(columns)) expected qualities in [0, 1] (no source offset)."""
        check_is_fitted(self, "heads_")
        return self.heads_.decision_function(self._features(X))

    def predict(self, X) -> np.ndarray:
        return self.decision_function(X)

    def _features(self, X) -> np.ndarray:
        X = validate_data(self, X, accept_sparse=("csr", "csc"), dtype=np.float64, reset=False)
        return X.toarray() if hasattr(X, "toarray") else X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags
