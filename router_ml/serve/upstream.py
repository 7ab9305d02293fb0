"""Calls to the upstream models through LiteLLM, with a gateway's timeouts and limits.

Every call has a connect timeout (seconds to open the connection) and a total (seconds for the
whole call: connect, wait and read, enforced with ``asyncio.timeout`` around it). A stream's
total applies to its first chunk with text, and then to each gap between chunks. LiteLLM's own
retries are off: moving on after a failure is the policy's job (fallback up the ladder).

The upstream's base URL, key and headers are the operator's (the constructor's arguments);
nothing a request carries reaches them: calls go through one ``openai.AsyncOpenAI`` client
built here, whose HTTP transport also stops reading an answer past ``max_response_bytes``.
Every failure comes out as :class:`router_ml.errors.UpstreamError`, which keeps the kind and
the HTTP status and drops the upstream's text (it may echo a key or an internal reply).
"""

from __future__ import annotations

import asyncio
import contextvars

import httpx
import openai

from router_ml.errors import ResponseTooLargeError, UpstreamError
from router_ml.loop.clients import Completion, import_litellm
from router_ml.serve._requests import DEFAULT_MAX_RESPONSE_BYTES

_oversized: contextvars.ContextVar = contextvars.ContextVar("router_ml_oversized")


class Upstream:
    """An OpenAI-compatible upstream (``api_base``; models are sent as ``model_prefix + name``,
    default ``openai/``). connect_timeout, timeout: seconds (> 0; defaults 3 and 30).
    max_response_bytes: the most of one answer (or one stream) read from the upstream."""

    def __init__(self, api_base: str, api_key: str | None = None, *, connect_timeout: float = 3.0,
                 timeout: float = 30.0, model_prefix: str = "openai/",
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES):
        for name, v in (("connect_timeout", connect_timeout), ("timeout", timeout),
                        ("max_response_bytes", max_response_bytes)):
            if not float(v) > 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        self._litellm, self._httpx = import_litellm(), httpx
        self.api_base, self.api_key = api_base, api_key or "none"
        self.connect_timeout, self.timeout = float(connect_timeout), float(timeout)
        self.model_prefix = model_prefix
        self.max_response_bytes = int(max_response_bytes)
        self._client = openai.AsyncOpenAI(
            base_url=api_base, api_key=self.api_key, max_retries=0,
            http_client=httpx.AsyncClient(
                transport=_CappedTransport(self.max_response_bytes),
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100)))
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
            kwargs.pop("client")
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
        # params first: the operator's fields below always win (the endpoint has already
        # refused any name outside its allow-list)
        return {**params, "model": self.model_prefix + model, "messages": messages,
                "api_base": self.api_base, "api_key": self.api_key, "client": self._client,
                "stream": stream, "timeout": self._http_timeout(total), "max_retries": 0,
                "num_retries": 0}

    async def complete(self, model: str, messages: list, params: dict,
                       timeout: float | None = None) -> tuple[Completion, dict]:
        """One answer: (Completion with the provider's token counts, the response body as a
        dict). Raises UpstreamError (``empty`` when the answer has neither text nor tool
        calls)."""
        total = timeout or self.timeout
        flag = []
        token = _oversized.set(flag)
        try:
            async with asyncio.timeout(total):
                r = await self._litellm.acompletion(**self._kwargs(model, messages, params,
                                                                   total, False))
        except Exception as e:
            raise upstream_error(e, flag) from None
        finally:
            _oversized.reset(token)
        body = r.model_dump(exclude_none=True)
        if not any(_choice_has_answer(c.get("message") or {}) for c in body.get("choices", ())):
            raise UpstreamError("empty", counts=False)
        usage = getattr(r, "usage", None)
        text = r.choices[0].message.content or ""
        return (Completion(text, int(getattr(usage, "prompt_tokens", 0) or 0),
                           int(getattr(usage, "completion_tokens", 0) or 0)), body)

    async def stream(self, model: str, messages: list, params: dict,
                     timeout: float | None = None):
        """(the chunks up to the first with text or tool calls, as dicts; an async iterator of
        the other chunks as dicts). The first answer must come within ``timeout`` seconds, and
        each later chunk within ``timeout`` of the one before. Before the first answer every
        failure, and a stream that ends without one, raises UpstreamError (so the policy can
        still move on); later ones are raised from the iterator as UpstreamError."""
        total = timeout or self.timeout
        flag = []
        token = _oversized.set(flag)
        head = []
        try:
            async with asyncio.timeout(total):
                r = await self._litellm.acompletion(**self._kwargs(model, messages, params,
                                                                   total, True))
                it = r.__aiter__()
                while True:
                    try:
                        chunk = (await it.__anext__()).model_dump(exclude_none=True)
                    except StopAsyncIteration:
                        raise UpstreamError("empty", counts=False) from None
                    head.append(chunk)
                    if any(_choice_has_answer(c.get("delta") or {})
                           for c in chunk.get("choices") or ()):
                        break
        except Exception as e:
            raise upstream_error(e, flag) from None
        finally:
            _oversized.reset(token)

        async def rest():
            token = _oversized.set(flag)
            try:
                while True:
                    try:
                        async with asyncio.timeout(total):
                            chunk = await it.__anext__()
                    except StopAsyncIteration:
                        return
                    except Exception as e:
                        raise upstream_error(e, flag) from None
                    yield chunk.model_dump(exclude_none=True)
            finally:
                _oversized.reset(token)

        return head, rest()


def _choice_has_answer(message: dict) -> bool:
    return bool(message.get("content") or message.get("tool_calls")
                or message.get("function_call"))


def upstream_error(e: BaseException, oversized=()) -> UpstreamError:
    """``e``, raised by a call to the upstream, as an UpstreamError without the upstream's text.
    ``oversized`` is non-empty when the call's transport cut the answer off at the size cap."""
    if isinstance(e, UpstreamError):
        return e
    if oversized:
        return UpstreamError("too_large", counts=False)
    if isinstance(e, (TimeoutError, openai.APITimeoutError, httpx.TimeoutException)):
        return UpstreamError("timeout", 408 if isinstance(e, openai.APITimeoutError) else None)
    status = getattr(e, "status_code", None)
    if isinstance(e, (openai.APIConnectionError, httpx.TransportError)) and not (
            isinstance(status, int) and 400 <= status < 500):
        return UpstreamError("connect")
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return UpstreamError("client", status, counts=False)
    return UpstreamError("server", status if isinstance(status, int) else None)


def _flag():
    f = _oversized.get(None)
    if f is not None:
        f.append(True)


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner, cap: int):
        self.inner, self.cap = inner, cap

    async def __aiter__(self):
        seen = 0
        async for part in self.inner:
            seen += len(part)
            if seen > self.cap:
                _flag()
                raise ResponseTooLargeError(f"answer past {self.cap} bytes")
            yield part

    async def aclose(self):
        await self.inner.aclose()


class _CappedTransport(httpx.AsyncHTTPTransport):
    """Stops reading an upstream answer past ``cap`` bytes, and flags the call (the SDKs above
    re-wrap the error, so its type does not survive)."""

    def __init__(self, cap: int, **kw):
        super().__init__(**kw)
        self.cap = cap

    async def handle_async_request(self, request):
        r = await super().handle_async_request(request)
        n = r.headers.get("content-length", "")
        if n.isdigit() and int(n) > self.cap:
            await r.aclose()
            _flag()
            raise ResponseTooLargeError(f"answer of {n} bytes")
        r.stream = _CappedStream(r.stream, self.cap)
        return r


def chunk_text(chunk: dict) -> str:
    """The text a chat completion chunk adds."""
    return "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or ())


__all__ = ["Upstream", "chunk_text", "upstream_error"]
