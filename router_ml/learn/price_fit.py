"""Prices derived from observed costs: a model that the price table lacks gets the per-token
price that best explains what its requests cost in the logs (``<model>|total_cost`` columns,
as RouterBench-style logs have), so such a table trains without a price file.

Units: observed costs in USD per request; prices in USD per million tokens, as in
:mod:`router_ml.core.prices`, where a prompt's cost is ``(input x tokens + output x
OUTPUT_TOKENS) / 1e6`` with tokens the estimated input count (ceil(characters / 4), or a
tokenizer's count).

Method ``least-squares``: non-negative least squares (``scipy.optimize.nnls``) of the observed
cost of each row on its estimated input tokens and the assumed ``OUTPUT_TOKENS`` output
tokens, so the fitted prices reproduce the costs through the same formula that estimates them
for new prompts. It needs rows of at least two different token counts; otherwise (method
``mean``) input and output get one price, the mean cost per request over the mean tokens per
request (input estimate plus ``OUTPUT_TOKENS``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from router_ml.core.prices import OUTPUT_TOKENS, TOKENS_PER_MILLION, input_tokens

logger = logging.getLogger(__name__)

# A price that makes a model's logged requests cost more than this many times what the log
# says (or less than 1/this) is reported: the router routes by the price, not the log.
MISMATCH_FACTOR = 2.0

METHODS = ("least-squares", "mean")
METHOD = ("non-negative least squares of each row's observed cost (USD) on its estimated input "
          "tokens and the assumed output tokens (router_ml.learn.price_fit); where all rows "
          "have one token count, one price for both: mean cost over mean tokens per request")


@dataclass(frozen=True)
class DerivedPrice:
    """A price derived from observed costs. input, output: USD per million tokens; method: one
    of :data:`METHODS`; rows: how many observed costs it rests on; mean_cost: their mean, USD
    per request; fitted_mean_cost: the mean of what the price gives on those rows, USD."""

    input: float
    output: float
    method: str
    rows: int
    mean_cost: float
    fitted_mean_cost: float

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"${self.input:.4g} / ${self.output:.4g} per million input / output tokens "
                f"({self.method} fit on {self.rows} observed costs, mean ${self.mean_cost:.3g} "
                f"per request; the price gives ${self.fitted_mean_cost:.3g})")


def price_from_costs(tokens, costs, output_tokens: float = OUTPUT_TOKENS) -> DerivedPrice:
    """The per-token price of one model from its rows' estimated input tokens (n,) and observed
    costs (n,) in USD per request; rows whose cost is NaN are left out. ValueError without an
    observed cost."""
    t = np.asarray(tokens, dtype=np.float64).ravel()
    c = np.asarray(costs, dtype=np.float64).ravel()
    if t.shape != c.shape:
        raise ValueError(f"tokens and costs differ in length: {len(t)}, {len(c)}")
    keep = np.isfinite(c)
    t, c = t[keep], c[keep]
    if len(c) == 0:
        raise ValueError("no observed cost to derive a price from")
    if (c < 0).any():
        raise ValueError(f"observed costs must be >= 0 USD, got {c.min()}")
    if len(np.unique(t)) >= 2:
        from scipy.optimize import nnls

        A = np.column_stack([t, np.full_like(t, float(output_tokens))]) / TOKENS_PER_MILLION
        (p_in, p_out), _ = nnls(A, c)
        method = "least-squares"
    else:
        p_in = p_out = float(c.mean() / (t.mean() + output_tokens) * TOKENS_PER_MILLION)
        method = "mean"
    fitted = (p_in * t + p_out * output_tokens) / TOKENS_PER_MILLION
    return DerivedPrice(float(p_in), float(p_out), method, int(len(c)), float(c.mean()),
                        float(fitted.mean()))


def prices_from_costs(prompts: Sequence[str], models: Sequence[str], observed, *,
                      tokenizer=None) -> dict[str, DerivedPrice]:
    """{model: DerivedPrice} for every model with at least one observed cost.

    observed: (n, len(models)) USD per request, NaN where not observed (``Rows.costs``);
    tokens of each prompt as :func:`router_ml.core.prices.prompt_costs` counts them."""
    C = np.asarray(observed, dtype=np.float64)
    if C.shape != (len(prompts), len(models)):
        raise ValueError(f"observed costs must have shape ({len(prompts)}, {len(models)}), "
                         f"got {C.shape}")
    t = input_tokens(prompts, tokenizer)
    return {m: price_from_costs(t, C[:, j]) for j, m in enumerate(models)
            if np.isfinite(C[:, j]).any()}


def price_mismatches(prompts: Sequence[str], models: Sequence[str], observed, prices, *,
                     tokenizer=None, factor: float = MISMATCH_FACTOR
                     ) -> dict[str, tuple[float, float]]:
    """{model: (mean priced cost, mean observed cost)}, USD per request over the rows with an
    observed cost, for each model whose ``prices`` and observed costs (n, len(models)) are
    more than ``factor`` times apart either way."""
    from router_ml.core.prices import prompt_costs

    C = np.asarray(observed, dtype=np.float64)
    out = {}
    for j, m in enumerate(models):
        seen = np.isfinite(C[:, j])
        if m not in prices or not seen.any():
            continue
        idx = np.flatnonzero(seen)
        priced = float(prompt_costs([prompts[i] for i in idx], [m], {m: prices[m]},
                                    tokenizer=tokenizer)[:, 0].mean())
        logged = float(C[seen, j].mean())
        if priced > factor * logged or logged > factor * priced:
            out[m] = (priced, logged)
    return out


def router_prices(train, price_file=None, tokenizer=None) -> tuple[dict | None, dict]:
    """(prices for a router of ``train.models``, {model: DerivedPrice}).

    Each model's price ({"input", "output"}: USD per million tokens) comes from the price
    file (JSON, TOML or YAML; a name in it is used exactly as written), else the built-in
    table (:func:`router_ml.core.prices.load_prices`), else its observed costs in the rows
    (``train.costs``, :func:`prices_from_costs`). A model without any is an
    :class:`~router_ml.errors.UnknownModelError` naming ``--prices`` for more than two models;
    a pair then gets None (it routes by its threshold; costs are optional)."""
    from router_ml.core.prices import price_entry, load_prices, read_price_file
    from router_ml.errors import DataFormatError, UnknownModelError

    models = list(train.models)
    # the file may price openai/gpt-4o and azure/gpt-4o apart, which the prefix-blind table
    # refuses as twins: its names are used as they are
    exact = read_price_file(price_file) if price_file else {}
    try:
        table = load_prices(price_file) if price_file else load_prices()
    except DataFormatError:
        if not any(m in exact for m in models):
            raise
        table = load_prices()
    out, lacking = {}, []
    for m in models:
        try:
            p = price_entry(m, exact[m], str(price_file)) if m in exact else table[m]
        except UnknownModelError:
            lacking.append(m)
            continue
        out[m] = {"input": p.input, "output": p.output}
    derived = {}
    if train.costs is not None:
        for m, (priced, logged) in price_mismatches(train.prompts, list(out), train.costs[
                :, [models.index(m) for m in out]], out, tokenizer=tokenizer).items():
            logger.warning(
                "%s: its price (%s) puts its logged requests at $%.3g each on average, %.1fx "
                "the $%.3g its logged costs say (more than %gx apart); the router routes and "
                "calibrates by the price. Fix the price, or drop it to price %s from its "
                "logged costs", m, "the price file" if m in exact else "the built-in table",
                priced, priced / logged if logged else float("inf"), logged, MISMATCH_FACTOR,
                m)
    if lacking and train.costs is not None:
        j = [models.index(m) for m in lacking]
        derived = prices_from_costs(train.prompts, lacking, train.costs[:, j],
                                    tokenizer=tokenizer)
        out.update({m: {"input": d.input, "output": d.output} for m, d in derived.items()})
    missing = [m for m in lacking if m not in derived]
    if missing and len(models) > 2:
        raise UnknownModelError(
            f"no price for {', '.join(map(repr, missing))}: not in the price table "
            f"({table.source}) and no observed cost in the rows (a {missing[0]}|total_cost "
            f"column). Pass --prices FILE (JSON, TOML or YAML), e.g. "
            f'{{"{missing[0]}": {{"input": <USD per 1M input tokens>, "output": <USD per 1M '
            f'output tokens>}}}}')
    return (None if missing else out), derived


__all__ = ["METHOD", "METHODS", "MISMATCH_FACTOR", "DerivedPrice", "price_from_costs",
           "price_mismatches", "prices_from_costs", "router_prices"]
