"""Fitted heads as numpy weights, and the knob's decision rule over their predictions.

:class:`QualityHeads` predicts each candidate's quality with numpy alone (the logistic heads of
:class:`router_ml.learn.estimator.QualityEstimator`, reduced to their weights, and optionally
:class:`Neighbours`, the labels of the most similar training prompts, averaged with them);
:func:`choose` picks, per prompt, the model maximising predicted quality - lam * cost.
"""

from __future__ import annotations

import math

import numpy as np


def is_number(value) -> bool:
    """A real number given as a Python or numpy int or float (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def unit_rows(X) -> np.ndarray:
    """X (dense or sparse) as float32 rows of length 1 (a zero row stays zero)."""
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)


class Neighbours:
    """Each head's label averaged over the k training prompts most similar to a prompt (cosine
    similarity of the features; uniform weights), with numpy alone.

    reference: (N, d) the training rows' features as unit rows (float32); labels: (N, m) per
    row and head, a quality head's quality in [0, 1] or a gain head's sign(q_j - q_ref) in
    {-1, 0, 1}, NaN where the row has none for that head (its neighbours are then the k most
    similar rows that have one); k: how many; weight: the neighbours' share of a head's value
    (the logistic head's is 1 - weight). Prompts are compared in batches of BATCH rows, so
    scoring many at once holds at most BATCH x N similarities.
    """

    BATCH = 512

    def __init__(self, reference, labels, k: int, weight: float = 0.5):
        self.reference = np.ascontiguousarray(reference, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.float32)
        if self.reference.ndim != 2 or self.labels.ndim != 2 \
                or len(self.reference) != len(self.labels) or not len(self.reference) \
                or not np.isfinite(self.reference).all():
            raise ValueError("Neighbours: reference must be (N, d) finite and labels (N, m), "
                             f"got {self.reference.shape} and {self.labels.shape}")
        have = np.isfinite(self.labels)
        if not have.any(axis=0).all() or (np.abs(self.labels[have]) > 1).any():
            raise ValueError("Neighbours: every head needs labels, each in [-1, 1] (NaN where "
                             "a row has none)")
        if not is_number(k) or int(k) != k or k < 1:
            raise ValueError(f"Neighbours: k must be a whole number >= 1, got {k!r}")
        if not is_number(weight) or not 0.0 <= weight <= 1.0:
            raise ValueError(f"Neighbours: weight must be in [0, 1], got {weight!r}")
        self.k, self.weight = int(k), float(weight)
        self._have = None if have.all() else [np.flatnonzero(have[:, j])
                                              for j in range(have.shape[1])]

    def to_dict(self) -> dict:
        return {"k": self.k, "weight": self.weight}

    def values(self, X) -> np.ndarray:
        """(n, m) each head's mean label over the prompt's k nearest training rows."""
        Xn = unit_rows(X)
        if Xn.shape[1] != self.reference.shape[1]:
            raise ValueError(f"Neighbours: {Xn.shape[1]} features, the reference has "
                             f"{self.reference.shape[1]}")
        out = np.empty((len(Xn), self.labels.shape[1]))
        for start in range(0, len(Xn), self.BATCH):
            S = Xn[start:start + self.BATCH] @ self.reference.T
            rows = slice(start, start + len(S))
            if self._have is None:
                out[rows] = self.labels[_nearest(S, self.k)].mean(axis=1)
                continue
            for j, have in enumerate(self._have):
                idx = have[_nearest(S[:, have], self.k)]
                out[rows, j] = self.labels[idx, j].mean(axis=1)
        return out


def _nearest(S, k: int) -> np.ndarray:
    """(n, min(k, N)) column indices of each row's largest values of S (n, N)."""
    k = min(k, S.shape[1])
    if k == S.shape[1]:
        return np.broadcast_to(np.arange(k), (len(S), k))
    return np.argpartition(-S, k - 1, axis=1)[:, :k]


class QualityHeads:
    """Fitted logistic heads reduced to their weights, one per candidate model.

    kinds[j]: ``quality`` (the head predicts model j's quality, classes 0/1) or ``gain``
    (classes among -1/0/1: model j worse than, as good as or better than the reference, the
    one ``quality`` head). coefs[j]: (1, d) for two classes, (k, d) for k > 2 (and (1, d) of
    zeros for a single class); intercepts[j]: matching (1,) or (k,); classes[j]: int labels.
    The same formulas as scikit-learn's LogisticRegression.predict_proba (sigmoid or
    softmax), computed with numpy in one matrix product. neighbours: None, or
    :class:`Neighbours` whose mean labels are blended with the heads' values (its ``weight``).
    """

    def __init__(self, kinds, coefs, intercepts, classes, neighbours=None):
        self.kinds = list(kinds)
        self.coefs = [np.asarray(c, dtype=np.float64) for c in coefs]
        self.intercepts = [np.asarray(b, dtype=np.float64).ravel() for b in intercepts]
        self.classes = [np.asarray(c, dtype=np.int64).ravel() for c in classes]
        if not (len(self.kinds) == len(self.coefs) == len(self.intercepts) == len(self.classes)):
            raise ValueError("QualityHeads: kinds, coefs, intercepts and classes differ in length")
        if self.kinds.count("quality") != 1 and "gain" in self.kinds:
            raise ValueError("QualityHeads: gain heads need exactly one quality (reference) head")
        self._w = np.ascontiguousarray(np.vstack(self.coefs).T)
        self._b = np.concatenate(self.intercepts)
        self._rows = np.cumsum([0] + [len(c) for c in self.coefs])
        if neighbours is not None and (neighbours.labels.shape[1] != len(self.kinds)
                                       or neighbours.reference.shape[1] != self._w.shape[0]):
            raise ValueError("QualityHeads: the neighbours' labels or features do not match "
                             "the heads")
        self.neighbours = neighbours

    @property
    def n_features(self) -> int:
        return self._w.shape[0]

    def head_values(self, X) -> np.ndarray:
        """(n, m) per head: the expected class label (quality in [0, 1] or gain in [-1, 1])."""
        z = np.asarray(X @ self._w, dtype=np.float64) + self._b
        out = np.empty((z.shape[0], len(self.kinds)))
        for j, cl in enumerate(self.classes):
            zj = z[:, self._rows[j]:self._rows[j + 1]]
            if len(cl) == 1:
                out[:, j] = cl[0]
            elif len(cl) == 2:
                p = np.exp(-np.logaddexp(0.0, -zj[:, 0]))  # sigmoid without overflow
                out[:, j] = cl[0] + (cl[1] - cl[0]) * p
            else:
                e = np.exp(zj - zj.max(axis=1, keepdims=True))
                out[:, j] = (e @ cl) / e.sum(axis=1)
        if self.neighbours is not None:
            w = self.neighbours.weight
            out = (1.0 - w) * out + w * self.neighbours.values(X)
        return out

    @staticmethod
    def combine(kinds, values) -> np.ndarray:
        """Decision values (n, m): quality heads as they are, gain heads plus the reference."""
        out = np.array(values, dtype=np.float64)
        if "gain" in kinds:
            ref = list(kinds).index("quality")
            gains = [j for j, k in enumerate(kinds) if k == "gain"]
            out[:, gains] += out[:, [ref]]
        return out

    def decision_function(self, X) -> np.ndarray:
        return self.combine(self.kinds, self.head_values(X))

    def rounded(self, digits: int) -> "QualityHeads":
        """These heads with weights and intercepts rounded to ``digits`` significant digits."""
        return QualityHeads(self.kinds, [round_significant(c, digits) for c in self.coefs],
                            [round_significant(b, digits) for b in self.intercepts],
                            self.classes, self.neighbours)


def round_significant(x, digits: int):
    """``x`` (a float, an array, or dicts and lists of them) with every float rounded to
    ``digits`` significant digits, by Python's correctly rounded decimal conversion (the same
    result on every CPU, unlike numpy's vectorised log10 and power); other values unchanged."""
    if isinstance(x, dict):
        return {k: round_significant(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(round_significant(v, digits) for v in x)
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        flat = [float(f"{v:.{digits}g}") for v in x.ravel().tolist()]
        return np.array(flat, dtype=x.dtype).reshape(x.shape)
    if isinstance(x, (float, np.floating)) and not isinstance(x, bool):
        return type(x)(float(f"{float(x):.{digits}g}"))
    return x


def choose(values, costs, lam: float) -> np.ndarray:
    """(n,) column chosen per row: argmax of ``values - lam * costs``, ties to the cheaper
    model, then to the lower column. values, costs: (n, m); lam >= 0, or inf: the cheapest
    model, among equally cheap ones the highest value (the limit of a large finite lam)."""
    if np.isinf(lam):
        key1, key2 = -costs, values  # cheapest first, then the best prediction
    else:
        key1, key2 = values - lam * costs, -costs
    cand = key1 == key1.max(axis=1, keepdims=True)
    k2 = np.where(cand, key2, -np.inf)
    cand &= k2 == k2.max(axis=1, keepdims=True)
    return np.argmax(cand, axis=1)  # the first True: the lowest index among exact ties


def check_lam(value) -> float:
    if not is_number(value):
        raise TypeError(f"lam must be a number >= 0, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"lam must be >= 0 (USD per unit of quality), got {value}")
    return value
