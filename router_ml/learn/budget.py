"""The monthly bill: traffic, the cost of a routing policy, the threshold for a $ budget, and
the cost of quality sampling.

Units everywhere: prices in USD per million tokens (input and output priced separately,
:mod:`router_ml.core.prices`), costs in USD per month, strong-call shares as fractions in
[0, 1], savings in USD per month and in percent (0-100) of the always-strong bill.

    from router_ml.learn.budget import TrafficProfile, monthly_cost
    from router_ml.core.prices import load_prices
    traffic = TrafficProfile(requests_per_month=1_000_000, input_tokens=500, output_tokens=200)
    monthly_cost("gpt-4o", traffic, load_prices())      # 3250.0 USD/month
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router_ml.core.calibration import (
    CalibrationRecord,
    candidate_thresholds,
    check_scores,
    check_threshold,
)
from router_ml.core.heads import is_number
from router_ml.core.prices import (
    CHARS_PER_TOKEN,
    TOKENS_PER_MILLION,
    PriceTable,
    builtin_price_table,
    count_tokens,
    non_negative_price,
    as_price_table,
    check_tokens,
)
from router_ml.core.prompts import fingerprint
from router_ml.errors import CalibrationError
from router_ml.learn.sources import STRONG_MODEL, WEAK_MODEL


def _share(share):
    """A strong-call share (fraction in [0, 1]) as a float or a float64 array."""
    if is_number(share):
        s = float(share)
        if not math.isfinite(s) or not 0.0 <= s <= 1.0:
            raise ValueError(f"share must be a fraction in [0, 1] (strong-model calls / all "
                             f"calls), got {s}")
        return s
    a = np.asarray(share, dtype=np.float64)
    if not (np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()):
        raise ValueError("share must hold fractions in [0, 1] (strong-model calls / all calls)")
    return a


def merge_dcrouter_prices(table: PriceTable | None = None, data_dir=None, *,
                          override: bool = False) -> PriceTable:
    """``table`` (default: the built-in one) plus the per-model prices of the dcrouter source
    (``llm_candidates.json``, USD per million tokens, see
    :func:`router_ml.learn.sources.load_dcrouter_prices`). A model already in ``table`` keeps its
    price unless ``override``: dcrouter's prices are one provider's, not list prices."""
    from router_ml.learn.sources import load_dcrouter_prices, resolve_data_dir

    table = table if table is not None else builtin_price_table()
    prices = load_dcrouter_prices(data_dir)
    where = str(resolve_data_dir(data_dir) / "llmrouter-dcrouter" / "llm_candidates.json")
    return table.merge(prices, source=where, override=override)


@dataclass(frozen=True, eq=False)
class TrafficProfile:
    """How much traffic the router sees.

    requests_per_month: requests per month (>= 0).
    input_tokens, output_tokens: tokens per request, each either a mean (a number) or one
    count per prompt of a sample that stands for the traffic (a sequence; both sequences then
    have the same length). Per-prompt counts let costs follow which prompts the router sends
    to the strong model (see :func:`cost_curve`); share-based functions use the means.
    """

    requests_per_month: float
    input_tokens: float | np.ndarray
    output_tokens: float | np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "requests_per_month", non_negative_price(
            self.requests_per_month, "requests_per_month", "requests per month"))
        object.__setattr__(self, "input_tokens", check_tokens(self.input_tokens, "input_tokens"))
        object.__setattr__(self, "output_tokens", check_tokens(self.output_tokens, "output_tokens"))
        lens = {len(a) for a in (self.input_tokens, self.output_tokens) if isinstance(a, np.ndarray)}
        if len(lens) > 1:
            raise ValueError(f"input_tokens and output_tokens hold counts for different numbers "
                             f"of prompts: {len(self.input_tokens)} vs {len(self.output_tokens)}")

    @classmethod
    def from_prompts(cls, prompts: Sequence[str], requests_per_month: float, output_tokens,
                     *, tokenizer=None, chars_per_token: float = CHARS_PER_TOKEN) -> "TrafficProfile":
        """A profile with per-prompt input token counts of a sample of prompts.

        Without a tokenizer, input tokens are approximated as ``len(prompt) / chars_per_token``
        (4 characters per token by default: a rule of thumb for English text and
        OpenAI-style BPE tokenizers, off by tens of percent for code or other languages).
        tokenizer: a callable ``str -> int`` (a count) or ``str -> sequence`` of tokens, or an
        object with ``encode`` (tiktoken, Hugging Face ``tokenizers``/``transformers``).
        output_tokens: mean output tokens per request, or one count per prompt (e.g. logged).
        """
        if isinstance(prompts, (str, bytes)):
            raise TypeError("prompts must be a list of str, got a single string")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("from_prompts needs at least one prompt")
        cpt = non_negative_price(chars_per_token, "chars_per_token", "characters per token")
        if cpt == 0:
            raise ValueError("chars_per_token must be > 0 (characters per token)")
        counts = np.array([count_tokens(p, tokenizer, cpt) for p in prompts], dtype=np.float64)
        return cls(requests_per_month, counts, output_tokens)

    @property
    def n_prompts(self) -> int | None:
        """The number of prompts with per-prompt counts, or None when both are means."""
        for a in (self.input_tokens, self.output_tokens):
            if isinstance(a, np.ndarray):
                return len(a)
        return None

    @property
    def mean_input_tokens(self) -> float:
        return float(np.mean(self.input_tokens))

    @property
    def mean_output_tokens(self) -> float:
        return float(np.mean(self.output_tokens))

    def per_prompt(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(input, output) token counts as (n,) arrays: the per-prompt counts (whose length
        must be n) or the means repeated."""
        if self.n_prompts is not None and self.n_prompts != n:
            raise ValueError(f"the traffic profile holds token counts for {self.n_prompts} "
                             f"prompts but {n} scores were given; build the profile from the "
                             "same prompts (TrafficProfile.from_prompts) or give mean tokens")
        return (np.broadcast_to(self.input_tokens, (n,)).astype(np.float64),
                np.broadcast_to(self.output_tokens, (n,)).astype(np.float64))


def monthly_cost(model: str, profile: TrafficProfile, prices=None) -> float:
    """USD per month of sending every request to ``model`` (mean tokens per request)."""
    p = as_price_table(prices)[model]
    per_request = profile.mean_input_tokens * p.input + profile.mean_output_tokens * p.output
    return profile.requests_per_month * per_request / TOKENS_PER_MILLION


def router_monthly_cost(share, profile: TrafficProfile, prices=None, *, strong: str = STRONG_MODEL,
                        weak: str = WEAK_MODEL):
    """USD per month when a fraction ``share`` of requests goes to ``strong`` and the rest to
    ``weak``, assuming the strong-routed requests have the mean token counts. share: a number
    or an array of fractions in [0, 1]; returns a float or an array of the same shape."""
    s = _share(share)
    table = as_price_table(prices)
    hi, lo = monthly_cost(strong, profile, table), monthly_cost(weak, profile, table)
    out = lo + s * (hi - lo)
    return float(out) if isinstance(s, float) else out


@dataclass(frozen=True)
class CostSummary:
    """The monthly bill at a strong-call share. Costs and saving in USD per month;
    saving_pct in percent (0-100) of the always-strong bill (0 when that bill is 0)."""

    share: float
    always_weak: float
    always_strong: float
    router: float
    saving_usd: float
    saving_pct: float


def _saving(cost, always_strong):
    usd = always_strong - cost
    pct = 100.0 * usd / always_strong if always_strong > 0 else 0.0 * usd
    return usd, pct


def cost_summary(share: float, profile: TrafficProfile, prices=None, *, strong: str = STRONG_MODEL,
                 weak: str = WEAK_MODEL) -> CostSummary:
    """Always-weak, always-strong and routed monthly cost at ``share``, and the saving."""
    s = _share(share)
    if not isinstance(s, float):
        raise ValueError("cost_summary takes one share; use router_monthly_cost for many")
    table = as_price_table(prices)
    lo, hi = monthly_cost(weak, profile, table), monthly_cost(strong, profile, table)
    cost = lo + s * (hi - lo)  # = router_monthly_cost(s, ...), without pricing both again
    usd, pct = _saving(cost, hi)
    return CostSummary(s, lo, hi, cost, float(usd), float(pct))


def saving(share, profile: TrafficProfile, prices=None, *, strong: str = STRONG_MODEL,
           weak: str = WEAK_MODEL):
    """(USD per month, percent) saved against always-strong when a fraction ``share`` of
    requests goes to the strong model. Works on a number or an array of shares."""
    table = as_price_table(prices)
    cost = router_monthly_cost(share, profile, table, strong=strong, weak=weak)
    return _saving(cost, monthly_cost(strong, profile, table))


@dataclass(frozen=True)
class CostCurve:
    """share: (n+1,) strong-call shares k/n, k = 0..n, prompts sorted by score (highest
    first, equal scores as a block, as in :func:`router_ml.core.metrics.cost_quality_curve`);
    usd_per_month: (n+1,) the monthly cost at each share."""

    share: np.ndarray
    usd_per_month: np.ndarray

    @property
    def _slope(self) -> float:
        return float(self.usd_per_month[-1] - self.usd_per_month[0])  # USD/month per unit share

    @property
    def increasing(self) -> bool:
        """True when the cost never falls as the share grows and always-strong costs more than
        always-weak: then :meth:`share_at` inverts :meth:`at` (e.g. for a secondary plot axis)."""
        return self._slope > 0 and bool((np.diff(self.usd_per_month) >= 0).all())

    def at(self, share):
        """USD per month at share(s) (fractions), linear between curve points and, for plot
        axes that reach past the ends, beyond [0, 1] at the always-weak-to-strong slope."""
        x = np.asarray(share, dtype=np.float64)
        xc = np.clip(x, 0.0, 1.0)
        return np.interp(xc, self.share, self.usd_per_month) + self._slope * (x - xc)

    def share_at(self, usd):
        """The share (fraction) whose monthly cost is ``usd``: the inverse of :meth:`at`.
        ValueError unless the curve is :attr:`increasing`."""
        if not self.increasing:
            raise ValueError("the cost does not rise with the strong-call share (is the strong "
                             "model cheaper per token?); it cannot be inverted")
        u = np.asarray(usd, dtype=np.float64)
        lo, hi = self.usd_per_month[0], self.usd_per_month[-1]
        uc = np.clip(u, lo, hi)
        return np.interp(uc, self.usd_per_month, self.share) + (u - uc) / self._slope


def _per_prompt_costs(n: int, profile: TrafficProfile, table: PriceTable, strong: str, weak: str):
    """(n,) monthly cost of the traffic if every request were like prompt i, on each model."""
    tin, tout = profile.per_prompt(n)
    r = profile.requests_per_month
    return (r * table[strong].request_cost(tin, tout), r * table[weak].request_cost(tin, tout))


def cost_curve(scores, profile: TrafficProfile, prices=None, *, strong: str = STRONG_MODEL,
               weak: str = WEAK_MODEL) -> CostCurve:
    """Monthly cost (USD) at every strong-call share of the prompts behind ``scores`` (n,).

    With per-prompt token counts in ``profile`` (aligned with ``scores``) the cost follows
    which prompts go strong; with means it is linear in the share."""
    from router_ml.core.metrics import cost_quality_curve

    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(s) == 0:
        raise ValueError("scores holds no prompts")
    table = as_price_table(prices)
    c_strong, c_weak = _per_prompt_costs(len(s), profile, table, strong, weak)
    # The "quality" of routing k prompts to strong is here their mean monthly cost.
    c = cost_quality_curve(s, c_strong, c_weak)
    return CostCurve(c.share, c.quality)


def monthly_cost_at_threshold(scores, threshold: float, profile: TrafficProfile, prices=None, *,
                              strong: str = STRONG_MODEL, weak: str = WEAK_MODEL) -> float:
    """USD per month when the prompts behind ``scores`` are routed at ``threshold`` (strong
    iff score >= threshold); per-prompt token counts are used when the profile has them."""
    t = check_threshold(threshold)
    s = np.asarray(scores, dtype=np.float64).ravel()
    curve = cost_curve(s, profile, prices, strong=strong, weak=weak)
    return float(curve.usd_per_month[int((s >= t).sum())])


def threshold_for_budget(scores, budget: float, profile: TrafficProfile, prices=None, *,
                         strong: str = STRONG_MODEL, weak: str = WEAK_MODEL, q_strong=None,
                         q_weak=None, prompts: Sequence[str] | None = None
                         ) -> tuple[float, CalibrationRecord]:
    """The threshold with the largest strong-call share on ``scores`` whose monthly cost is
    at most ``budget`` (USD per month).

    scores: (n,) router scores of calibration prompts that stand for the traffic; profile: the
    traffic (per-prompt token counts, if any, aligned with ``scores``). q_strong, q_weak:
    optional (n,) qualities to record the achieved quality and PGR; prompts: optional, to
    fingerprint the calibration set. A budget below the always-weak bill raises
    CalibrationError; a budget at or above the always-strong bill gives share 1 (threshold 0).
    Returns (threshold, CalibrationRecord(method="budget")) for ``router.set_threshold``.
    """
    if not is_number(budget) or not math.isfinite(float(budget)) or float(budget) < 0:
        raise CalibrationError(f"budget must be a finite number >= 0 (USD per month), got {budget!r}")
    budget = float(budget)
    s = check_scores(scores)
    table = as_price_table(prices)
    n = len(s)
    curve = cost_curve(s, profile, table, strong=strong, weak=weak)
    always_weak = monthly_cost(weak, profile, table)
    always_strong = monthly_cost(strong, profile, table)
    tol = 1e-9 * max(1.0, abs(budget))  # costs summed two ways may differ in the last bits
    if budget + tol < always_weak:
        raise CalibrationError(
            f"a budget of ${budget:,.2f}/month is below the cost of sending every request to the "
            f"weak model {weak!r} (${always_weak:,.2f}/month at {profile.requests_per_month:,.0f} "
            "requests); raise the budget, lower the traffic or choose a cheaper weak model")
    t, k = candidate_thresholds(s)
    fits = curve.usd_per_month[k] <= budget + tol
    if not fits.any():
        raise CalibrationError(
            f"a budget of ${budget:,.2f}/month cannot be met on these {n} prompts: even threshold "
            f"1.0 sends {k[0]} prompts with score 1.0 to the strong model "
            f"(${curve.usd_per_month[k[0]]:,.2f}/month)")
    # The most strong calls within budget; of equal ones the lowest threshold (0.0 for all).
    best = int(np.flatnonzero(fits & (k == k[fits].max()))[-1])
    threshold, achieved_share = float(t[best]), k[best] / n
    k_at = int((s >= threshold).sum())
    cost = float(curve.usd_per_month[k_at])
    usd, pct = _saving(cost, always_strong)
    achieved = {"share": float(achieved_share), "monthly_cost_usd": cost,
                "saving_usd": float(usd), "saving_pct": float(pct)}
    if q_strong is not None and q_weak is not None:
        qs = np.asarray(q_strong, dtype=np.float64).ravel()
        qw = np.asarray(q_weak, dtype=np.float64).ravel()
        if not len(qs) == len(qw) == n:
            raise CalibrationError(f"scores, q_strong and q_weak differ in length: {n}, "
                                   f"{len(qs)}, {len(qw)}")
        quality = float(np.where(s >= threshold, qs, qw).mean())
        gap = qs.mean() - qw.mean()
        achieved["quality"] = quality
        achieved["pgr"] = float((quality - qw.mean()) / gap) if gap != 0 else None
    record = CalibrationRecord(
        "budget",
        {"budget_usd_per_month": budget, "requests_per_month": profile.requests_per_month,
         "strong": strong, "weak": weak, "prices": table.source},
        achieved, n, fingerprint(list(prompts)) if prompts is not None else "")
    return float(threshold), record


@dataclass(frozen=True)
class SamplingCost:
    """Re-sending a fraction ``rate`` of the weak-routed requests to the strong model too, to
    keep measuring what routing costs in quality. samples_per_month: requests re-sent per
    month; usd_per_month: their strong-model cost (the weak answer is paid for anyway)."""

    rate: float
    samples_per_month: float
    usd_per_month: float


def quality_sampling_cost(share: float, rate: float, profile: TrafficProfile, prices=None, *,
                          strong: str = STRONG_MODEL) -> SamplingCost:
    """The monthly cost of quality sampling at a strong-call ``share`` (fraction) and a
    sampling ``rate`` (fraction of weak-routed requests, e.g. 0.02-0.05), at mean tokens."""
    s = _share(share)
    if not isinstance(s, float):
        raise ValueError("quality_sampling_cost takes one share")
    if not is_number(rate) or not math.isfinite(float(rate)) or not 0 <= float(rate) <= 1:
        raise ValueError(f"rate must be a fraction in [0, 1] (share of weak-routed requests "
                         f"re-sent to the strong model), got {rate!r}")
    n = profile.requests_per_month * (1.0 - s) * float(rate)
    unit = float(as_price_table(prices)[strong].request_cost(profile.mean_input_tokens,
                                                       profile.mean_output_tokens))
    return SamplingCost(float(rate), n, n * unit)


__all__ = [
    "CostCurve", "CostSummary", "SamplingCost", "TrafficProfile", "cost_curve", "cost_summary",
    "merge_dcrouter_prices", "monthly_cost", "monthly_cost_at_threshold",
    "quality_sampling_cost", "router_monthly_cost", "saving", "threshold_for_budget",
]
