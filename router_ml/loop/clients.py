"""Calling models: the :class:`Completion` a client returns and :class:`LiteLLMClient`.

A client is any callable ``client(model, messages) -> Completion | str`` (a str has no token
counts); the policy, quality sampling and labelling all call models through one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def import_litellm():
    """litellm, imported without fetching its price map from the network (unless
    ``LITELLM_LOCAL_MODEL_COST_MAP`` says otherwise), its debug banners and telemetry off."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


_SECRET = re.compile(r"(?i)(bearer\s+|api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"
                     r"|\b(sk|rk|pk|key)-[A-Za-z0-9_\-]{6,}")


def redact(text: str | None) -> str | None:
    """``text`` with credentials replaced by ``[redacted]``: ``Bearer <token>``,
    ``api_key=<value>`` and ``sk-...``-style keys. For error texts that may echo them."""
    if not text:
        return text
    return _SECRET.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


@dataclass(frozen=True)
class Completion:
    """A model's answer; tokens from the provider's usage (0 when unknown)."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0


class LiteLLMClient:
    """Calls models through ``litellm.completion`` (imported on the first call).

    api_base, api_key: of an OpenAI-compatible server (model names are sent as
    ``model_prefix + model``, default ``openai/``); timeout in seconds; retries are the
    policy's job, so litellm's are off. Without a ``LITELLM_LOCAL_MODEL_COST_MAP`` setting
    the first call sets it to ``True``, so importing litellm does not fetch its price map.
    """

    def __init__(self, api_base: str | None = None, api_key: str | None = None, *,
                 timeout: float = 30.0, model_prefix: str = "openai/", **kwargs):
        self.api_base, self.api_key, self.timeout = api_base, api_key, timeout
        self.model_prefix, self.kwargs = model_prefix, kwargs
        self._litellm = None

    def __call__(self, model: str, messages: list[dict]) -> Completion:
        if self._litellm is None:
            self._litellm = import_litellm()
        r = self._litellm.completion(model=self.model_prefix + model, messages=messages,
                                     api_base=self.api_base, api_key=self.api_key,
                                     timeout=self.timeout, max_retries=0, num_retries=0,
                                     **self.kwargs)
        usage = getattr(r, "usage", None)
        return Completion(r.choices[0].message.content or "",
                          int(getattr(usage, "prompt_tokens", 0) or 0),
                          int(getattr(usage, "completion_tokens", 0) or 0))


def as_completion(r) -> Completion:
    """A client's return value as a Completion."""
    return r if isinstance(r, Completion) else Completion(str(r))


class Pricer:
    """USD of a call from its token counts: ``pricer(model, completion)``; None for a model
    without a price. prices: a :class:`router_ml.core.prices.PriceTable` (default: built-in)."""

    def __init__(self, prices=None):
        self.as_price_table, self._cache = prices, {}

    def __call__(self, model: str, c: Completion) -> float | None:
        if model not in self._cache:
            from router_ml.core.prices import load_prices
            from router_ml.errors import UnknownModelError

            if self.as_price_table is None:
                self.as_price_table = load_prices()
            try:
                self._cache[model] = self.as_price_table[model]
            except UnknownModelError:
                self._cache[model] = None
        p = self._cache[model]
        return None if p is None else float(p.request_cost(c.input_tokens, c.output_tokens))
