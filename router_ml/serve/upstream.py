"""Calls to the upstream models through LiteLLM, with a gateway's timeouts.

Every call has a connect timeout (seconds to open the connection; LiteLLM's ``timeout`` as an
``httpx.Timeout``) and a total (seconds for the whole call: connect, wait and read, enforced
with ``asyncio.timeout`` around it). A stream's total applies to its first chunk, and then to
each gap between chunks. LiteLLM's own retries are off: moving on after a failure is the
policy's job (fallback up the ladder).
"""

from __future__ import annotations

import asyncio

from router_ml.loop.clients import Completion, import_litellm


class Upstream:
    """An OpenAI-compatible upstream (``api_base``; models are sent as ``model_prefix + name``,
    default ``openai/``). connect_timeout, timeout: seconds (> 0; defaults 3 and 30)."""

    def __init__(self, api_base: str, api_key: str | None = None, *, connect_timeout: float = 3.0,
                 timeout: float = 30.0, model_prefix: str = "openai/"):
        for name, v in (("connect_timeout", connect_timeout), ("timeout", timeout)):
            if not float(v) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        import httpx

        self._litellm, self._httpx = import_litellm(), httpx
        self.api_base, self.api_key = api_base, api_key or "none"
        self.connect_timeout, self.timeout = float(connect_timeout), float(timeout)
        self.model_prefix = model_prefix
        self._timeouts: dict = {}

    async def warm(self) -> None:
        """Runs LiteLLM's first-call work (imports and schema builds: 0.5-1 s that would hold
        the event loop, and run into the timeouts of calls already in flight) before serving:
        one plain and one streamed call to a closed port on 127.0.0.1. Nothing is sent."""
        import socket

        with socket.socket() as s:  # a free port, closed again: the calls are refused
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        for stream in (False, True):
            kwargs = self._kwargs("warm-up", [{"role": "user", "content": "hi"}], {}, 5.0, stream)
            try:
                await self._litellm.acompletion(**{**kwargs, "api_base": closed})
            except Exception:  # noqa: BLE001 (refused, as intended)
                pass

    def _http_timeout(self, total: float):
        # one Timeout object per total: LiteLLM keys its cached HTTP clients on it
        t = self._timeouts.get(total)
        if t is None:
            t = self._timeouts.setdefault(total, self._httpx.Timeout(
                total, connect=min(self.connect_timeout, total)))
        return t

    def _kwargs(self, model: str, messages: list, params: dict, total: float, stream: bool):
        return dict(model=self.model_prefix + model, messages=messages, api_base=self.api_base,
                    api_key=self.api_key, stream=stream, timeout=self._http_timeout(total),
                    max_retries=0, num_retries=0, **params)

    async def complete(self, model: str, messages: list, params: dict,
                       timeout: float | None = None) -> tuple[Completion, dict]:
        """One answer: (Completion with the provider's token counts, the response body as a
        dict). Raises the provider's error, or TimeoutError after ``timeout`` seconds."""
        total = timeout or self.timeout
        async with asyncio.timeout(total):
            r = await self._litellm.acompletion(**self._kwargs(model, messages, params, total,
                                                               False))
        usage = getattr(r, "usage", None)
        text = r.choices[0].message.content or "" if r.choices else ""
        return (Completion(text, int(getattr(usage, "prompt_tokens", 0) or 0),
                           int(getattr(usage, "completion_tokens", 0) or 0)),
                r.model_dump(exclude_none=True))

    async def stream(self, model: str, messages: list, params: dict,
                     timeout: float | None = None):
        """(first chunk as a dict, an async iterator of the other chunks as dicts). The first
        chunk must come within ``timeout`` seconds, and each later one within ``timeout`` of
        the one before (TimeoutError otherwise)."""
        total = timeout or self.timeout
        async with asyncio.timeout(total):
            r = await self._litellm.acompletion(**self._kwargs(model, messages, params, total,
                                                               True))
            it = r.__aiter__()
            first = await it.__anext__()

        async def rest():
            while True:
                try:
                    async with asyncio.timeout(total):
                        chunk = await it.__anext__()
                except StopAsyncIteration:
                    return
                yield chunk.model_dump(exclude_none=True)

        return first.model_dump(exclude_none=True), rest()


def chunk_text(chunk: dict) -> str:
    """The text a chat completion chunk adds."""
    return "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or ())


__all__ = ["Upstream", "chunk_text"]
