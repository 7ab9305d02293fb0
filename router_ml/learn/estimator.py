"""The estimator: numeric features in, each candidate model's expected quality out.

:class:`QualityEstimator` is a scikit-learn multi-output regressor. ``fit(X, Y)`` takes
features ``X`` (n, d) and qualities ``Y`` (n, m) in [0, 1], one column per candidate model,
NaN where a model has no outcome for a prompt; ``predict(X)`` returns (n, m) expected
qualities in [0, 1]. It works the same for two candidates (strong / weak) and for nine.

Two targets:

- ``gain`` (default): one model is the reference (column ``reference``, 0 by default). A
  head learns the reference's quality; for every other model m a three-class head learns
  sign(q_m - q_ref) (better, as good, worse than the reference on this prompt), and
  m's expected quality is q_ref + P(better) - P(worse) (exact for 0/1 outcomes). Routing
  compares models, so learning the differences directly keeps the noise that all models
  share on a prompt (how hard it is) out of the comparison. For a pair with the strong model
  as the reference, the pair's score 0.5 + (q_strong - q_weak) / 2 is the three-class
  "gain" score of the strong model.
- ``quality``: one head per model on its own quality (soft labels: a row with quality 0.3
  counts as 0.3 of a success and 0.7 of a failure).

Each head is a logistic regression (inverse regularisation ``C``; training chooses it by
the routing quality of out-of-fold predictions, see :func:`router_ml.learn.training.fit_router`),
or a clone of ``classifier`` when given (any scikit-learn classifier with ``predict_proba``). A fitted logistic estimator hands its weights to
:class:`router_ml.core.heads.QualityHeads` (``heads_``), which predicts with numpy alone.
With ``neighbours=k`` each logistic head's value is averaged, half and half, with the mean
label of the k training rows nearest the prompt (cosine similarity of the features;
:class:`router_ml.core.heads.Neighbours`, numpy alone): the logistic heads learn the global
directions, the neighbours what is local to a kind of prompt (one source of a team's mixed
traffic). The neighbours' labels are the heads' own (a gain head's sign(q_m - q_ref), a
quality head's quality), unweighted; they keep at most ``MAX_NEIGHBOUR_ROWS`` training rows (a
random sample beyond that).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from router_ml.core.heads import Neighbours, QualityHeads, unit_rows

# the training rows the neighbours keep at most (a router holds them: 20,000 rows of 80
# features are 6.4 MB, and one prompt's similarities to them take well under a millisecond)
MAX_NEIGHBOUR_ROWS = 20_000


def fit_neighbours(X, labels, k: int, random_state=0) -> Neighbours:
    """:class:`Neighbours` over the rows of X (dense) with their labels (n, m), keeping at
    most MAX_NEIGHBOUR_ROWS of them (a random sample beyond that)."""
    if hasattr(X, "toarray"):
        raise ValueError(f"neighbours={k} needs dense features (the training rows are kept); "
                         "TF-IDF gives sparse ones: set neighbours=0 or choose a dense encoder "
                         "(static, stats, surface)")
    keep = np.arange(len(labels))
    if len(keep) > MAX_NEIGHBOUR_ROWS:
        rng = np.random.default_rng(random_state)
        keep = np.sort(rng.choice(len(labels), MAX_NEIGHBOUR_ROWS, replace=False))
    return Neighbours(unit_rows(X[keep]), labels[keep], k)


class QualityEstimator(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Expected quality of each candidate model from numeric features.

    target: ``gain`` or ``quality`` (see the module docstring). reference: the reference
    column for ``gain``. C: the logistic heads' inverse regularisation strength.
    classifier: None (logistic regression) or an unfitted scikit-learn classifier cloned
    for every head.
    Fitted: ``heads_`` (numpy heads, logistic only), ``estimators_`` (one fitted classifier
    per column; a fixed-share head for a column with one outcome only), ``n_outputs_``,
    ``n_iter_`` (per head).
    """

    _parameter_constraints = {
        "target": [StrOptions({"gain", "quality"})],
        "reference": [Interval(Integral, 0, None, closed="left")],
        "C": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "classifier": [None, HasMethods(["fit", "predict_proba"])],
        "random_state": ["random_state"],
        "neighbours": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, target="gain", reference=0, C=1.0, max_iter=3000, classifier=None,
                 random_state=0, neighbours=0):
        self.target = target
        self.reference = reference
        self.C = C
        self.max_iter = max_iter
        self.classifier = classifier
        self.random_state = random_state
        self.neighbours = neighbours

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None):
        """X: (n, d) numeric; y: (n, m) or (n,) qualities in [0, 1] (NaN = no outcome);
        sample_weight: (n,) non-negative or None. Returns self."""
        self._validate_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None")
        X, Y = self._check_xy(X, y)
        n, m = Y.shape
        if self.neighbours and self.classifier is not None:
            raise ValueError(f"neighbours={self.neighbours} averages logistic heads with the "
                             "nearest training rows; with classifier "
                             f"{type(self.classifier).__name__} set neighbours=0")
        finite = np.isfinite(Y)
        if ((Y[finite] < 0) | (Y[finite] > 1)).any():
            raise ValueError("qualities must be in [0, 1] (NaN where a model has no outcome); "
                             f"got values from {Y[finite].min():.4g} to {Y[finite].max():.4g}")
        empty = np.flatnonzero(~finite.any(axis=0))
        if len(empty):
            raise ValueError(f"y columns {empty.tolist()} hold no quality at all (only NaN); "
                             "drop those models or give them outcomes")
        if self.target == "gain" and self.reference >= m:
            raise ValueError(f"reference column {self.reference} does not exist: y has {m} columns")
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"sample_weight must be {n} finite non-negative numbers")
        if not w.any():
            raise ValueError("sample_weight must hold at least one non-zero weight; all are zero")
        # before the heads: a feature matrix the neighbours cannot keep is refused at once
        self.neighbours_ = self._neighbours(X, Y) if self.neighbours else None
        ref = self.reference if self.target == "gain" else None
        self.estimators_, kinds = [], []
        for j in range(m):
            if ref is None or j == ref:
                rows = finite[:, j]
                est = self._fit_quality_head(X[rows], Y[rows, j], w[rows])
                kinds.append("quality")
            else:
                rows = finite[:, j] & finite[:, ref]
                est = self._fit(X[rows], np.sign(Y[rows, j] - Y[rows, ref]), w[rows])
                kinds.append("gain")
            self.estimators_.append(est)
        self.kinds_ = kinds
        self.n_outputs_ = m
        # iterations of each head's solver (1 for a constant or a non-iterative head)
        self.n_iter_ = np.array([int(np.max(getattr(e, "n_iter_", 1))) for e in self.estimators_])
        self.heads_ = self._numpy_heads()
        return self

    def _neighbours(self, X, Y) -> Neighbours:
        """Each row's label per head (the heads' own targets), at most MAX_NEIGHBOUR_ROWS rows."""
        labels = Y.copy()
        if self.target == "gain":
            ref = self.reference
            for j in range(Y.shape[1]):
                if j != ref:
                    labels[:, j] = np.sign(Y[:, j] - Y[:, ref])  # NaN where either is missing
        return fit_neighbours(X, labels, self.neighbours, self.random_state)

    def _check_xy(self, X, y):
        X = validate_data(self, X, accept_sparse="csr", dtype=(np.float64, np.float32),
                          ensure_min_samples=2)
        Y = np.asarray(y, dtype=np.float64)
        self._one_d = Y.ndim == 1
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have shape ({X.shape[0]}, n_models), got {np.shape(y)}")
        if np.isinf(Y).any():
            raise ValueError("y holds infinite values; use NaN for a missing outcome")
        return X, Y

    def _make(self):
        if self.classifier is not None:
            return clone(self.classifier)
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter,
                                  random_state=self.random_state)

    def _fit(self, X, y, w):
        """A fitted head, or a constant (the weighted class shares) when one class leaves
        nothing to learn."""
        classes = np.unique(y)
        if len(classes) < 2 or w.sum() <= 0:
            share = {float(c): float(w[y == c].sum()) for c in classes}
            return ConstantHead(share)
        est = self._make()
        try:
            try:
                return est.fit(X, y.astype(np.int64), sample_weight=w)
            except TypeError:  # a classifier without sample weights (e.g. kNN)
                return est.fit(X, y.astype(np.int64))
        except ValueError as e:  # e.g. more cross-validation folds than rows of a class
            raise ValueError(f"{type(est).__name__} cannot be fitted on {X.shape[0]} rows of "
                             f"this head: {e}") from e

    def _fit_quality_head(self, X, q, w):
        if np.isin(q, (0.0, 1.0)).all():
            return self._fit(X, q, w)
        # soft labels: every row once as a success with weight q and once as a failure
        import scipy.sparse as sp

        X2 = sp.vstack([X, X], format="csr") if sp.issparse(X) else np.vstack([X, X])
        y2 = np.r_[np.ones(len(q)), np.zeros(len(q))]
        w2 = np.r_[w * q, w * (1 - q)]
        keep = w2 > 0
        return self._fit(X2[keep], y2[keep], w2[keep])

    def _numpy_heads(self):
        """QualityHeads with every head's weights, or None if some head is not logistic."""
        from sklearn.linear_model import LogisticRegression

        coefs, intercepts, classes = [], [], []
        d = self.n_features_in_
        for est in self.estimators_:
            if isinstance(est, ConstantHead):
                cl, logp = est.classes_, np.log(np.maximum(est.proba_, 1e-12))
                k = 1 if len(cl) == 2 else len(cl)
                coef = np.zeros((k, d))
                icpt = np.array([logp[1] - logp[0]]) if len(cl) == 2 else logp
                if len(cl) == 1:
                    cl, coef, icpt = cl, np.zeros((1, d)), np.zeros(1)
            elif isinstance(est, LogisticRegression):
                cl, coef, icpt = est.classes_, est.coef_, est.intercept_
            else:
                return None
            coefs.append(np.asarray(coef, dtype=np.float64))
            intercepts.append(np.asarray(icpt, dtype=np.float64))
            classes.append(np.asarray(cl, dtype=np.int64))
        return QualityHeads(self.kinds_, coefs, intercepts, classes, self.neighbours_)

    # ------------------------------------------------------------------ predicting
    def decision_function(self, X) -> np.ndarray:
        """(n, m) unclipped expected qualities (reference quality plus expected gains)."""
        check_is_fitted(self, "estimators_")
        X = validate_data(self, X, accept_sparse="csr", reset=False,
                          dtype=(np.float64, np.float32))
        if self.heads_ is not None:
            return self.heads_.decision_function(X)
        cols = [_expected(est.predict_proba(X), est.classes_) for est in self.estimators_]
        return QualityHeads.combine(self.kinds_, np.column_stack(cols))

    def predict(self, X) -> np.ndarray:
        """(n, m) expected qualities in [0, 1] ((n,) when fitted on a 1-d y)."""
        out = np.clip(self.decision_function(X), 0.0, 1.0)
        return out[:, 0] if getattr(self, "_one_d", False) else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True
        return tags


def _expected(proba, classes) -> np.ndarray:
    """Expected value of the class labels (qualities 0/1 or signs -1/0/1) under proba.
    A broken classifier's non-finite probabilities give NaN quietly: the router sends such
    prompts to its first model."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.asarray(proba, dtype=np.float64) @ np.asarray(classes, dtype=np.float64)


class ConstantHead:
    """A head for a column with one outcome only (or too few of each): fixed class shares."""

    def __init__(self, share: dict):
        total = sum(share.values()) or 1.0
        self.classes_ = np.array(sorted(share), dtype=np.int64)
        self.proba_ = np.array([share[c] / total for c in sorted(share)])

    def predict_proba(self, X):
        return np.tile(self.proba_, (X.shape[0], 1))


# Saved estimators (skops) name their classes by module: under the package's name, which does
# not move when the modules inside it do (router_ml.__getattr__ resolves them)
QualityEstimator.__module__ = ConstantHead.__module__ = "router_ml"
