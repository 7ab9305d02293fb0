"""The client-key gate of ``router-ml serve --keys``: an ASGI middleware in front of every route
but ``/health``.

Per request: the ``Authorization: Bearer <secret>`` header must name a key of the keys file
(:mod:`router_ml.serve.keys`; else 401), then the quota store (:mod:`router_ml.serve.quota`)
must admit it (else 429 with ``retry-after``). While the request runs, the key's name is in
a context variable: the policy's ``on_finish`` hook (:meth:`KeyGate.finished`) writes it into
the Decision (and so the decision log's ``client`` column) and adds the Decision's
``cost_usd`` (every call made for the request) to what the request spent. That spend goes to
the store, and the request's slot is freed, just before the last byte of the response is sent
(or when the request ends without one), so a client that waits for its answer finds it
counted. The secret is never logged, stored or echoed.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

logger = logging.getLogger("router_ml.serve.endpoint")
OPEN_PATHS = frozenset({"/health"})


class _Pending:
    """What one admitted request has spent so far (USD), and whether it was settled."""

    __slots__ = ("admission", "usd", "settled")

    def __init__(self, admission):
        self.admission, self.usd, self.settled = admission, 0.0, False


_REQUEST: ContextVar[_Pending | None] = ContextVar("router_ml_client_request", default=None)


def _error(status: int, message: str, kind: str, code: str, headers=None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": code}},
                        status_code=status, headers=headers)


def bearer(headers) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header (raw ASGI headers), or None."""
    for k, v in headers:
        if k == b"authorization":
            scheme, _, secret = v.decode("latin-1").strip().partition(" ")
            return secret.strip() if scheme.lower() == "bearer" else None
    return None


class KeyGate:
    """Client keys (a :class:`router_ml.serve.keys.KeyRing`) and their counters (a store of
    :mod:`router_ml.serve.quota`). :meth:`finished` is the policy's ``on_finish`` hook;
    :class:`KeyGateMiddleware` (``app.add_middleware(KeyGateMiddleware, gate=gate)``) checks
    each request."""

    def __init__(self, keys, store):
        self.keys, self.store = keys, store

    async def call(self, fn, *args):
        """``fn(*args)`` on the event loop for a store that says its calls are ``inline``
        (local and short), else in a worker thread."""
        if getattr(self.store, "inline", False):
            return fn(*args)
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(fn, *args)

    async def admit(self, key):
        """The store's admission of ``key``: awaited for a store with ``aadmit`` (Redis)."""
        if hasattr(self.store, "aadmit"):
            return await self.store.aadmit(key)
        return await self.call(self.store.admit, key)

    def finished(self, decision) -> None:
        """Name the client in a finished Decision and add its cost to the request's spend."""
        pending = _REQUEST.get()
        if pending is None:
            return
        decision.client = pending.admission.client
        if decision.cost_usd:
            pending.usd += float(decision.cost_usd)

    async def settle(self, pending: _Pending) -> None:
        """Send a request's spend to the store and free its slot (once)."""
        if pending.settled:
            return
        pending.settled = True
        a, store = pending.admission, self.store
        try:
            if hasattr(store, "asettle"):
                await store.asettle(a, pending.usd)
            else:
                await self.call(store.settle, a, pending.usd)
        except Exception:  # the answer is made; a store outage must not turn it into an error
            logger.exception("quota store: the spend of client %r (USD %.6g) was not counted "
                             "and its slot not freed (it expires)", a.client, pending.usd)


class KeyGateMiddleware:
    """Pure ASGI middleware (it runs the app in the request's own task, so the context
    variable reaches the handlers and the streamed response)."""

    def __init__(self, app, gate: KeyGate):
        self.app, self.gate = app, gate

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # the endpoint has none; no way around the keys
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        gate = self.gate
        secret = bearer(scope["headers"])
        key = gate.keys.authenticate(secret)
        if key is None:
            if secret is None:
                r = _error(401, "no API key: send the header 'Authorization: Bearer <your key>'",
                           "invalid_request_error", "missing_api_key",
                           {"www-authenticate": "Bearer"})
            else:  # the sent value is never echoed
                r = _error(401, "the API key is not valid", "authentication_error",
                           "invalid_api_key", {"www-authenticate": "Bearer"})
            return await r(scope, receive, send)
        try:
            admission = await gate.admit(key)
        except Exception:
            logger.exception("quota store: cannot admit client %r", key.name)
            return await _error(503, "the quota store cannot be reached; try again",
                                "server_error", "quota_store_unavailable",
                                {"retry-after": "1"})(scope, receive, send)
        if not admission.ok:
            kind = "insufficient_quota" if admission.reason.startswith("usd_") \
                else "rate_limit_error"
            return await _error(429, admission.message, kind, admission.reason,
                                {"retry-after": str(admission.retry_after)})(scope, receive, send)
        pending = _Pending(admission)
        token = _REQUEST.set(pending)

        async def send_settled(message):
            # the spend is counted before the client can see the end of its answer
            if (message["type"] == "http.response.body" and not message.get("more_body")
                    and not pending.settled):
                await gate.settle(pending)
            await send(message)

        try:
            await self.app(scope, receive, send_settled)
        finally:
            _REQUEST.reset(token)
            if not pending.settled:
                import anyio

                with anyio.CancelScope(shield=True):  # also when the client went away
                    await gate.settle(pending)


__all__ = ["KeyGate", "KeyGateMiddleware", "OPEN_PATHS", "bearer"]
