"""The HTTP app of ``router-ml serve`` (FastAPI): chat completions through the policy, feedback,
the model list, health and metrics. See :mod:`router_ml.serve.endpoint` for what it does."""

# No "from __future__ import annotations": FastAPI reads the handlers' annotations at run time.
import asyncio
import json
import logging
import math

from router_ml.errors import RequestError
from router_ml.loop.policy import AllModelsFailedError, PolicyError
from router_ml.serve._requests import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_TOKENS,
    MAX_DEPTH,
    ROUTER_NAME,
    check_messages,
    depth_exceeds,
    format_validators,
    forwarded_params,
    parse_model_name,
    request_metadata,
)
from router_ml.serve.upstream import chunk_text, upstream_error

logger = logging.getLogger("router_ml.serve.endpoint")


def app_for(policy, upstream, *, metrics=None, drain_seconds: float = 30.0,
            max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
            body_timeout: float = DEFAULT_BODY_TIMEOUT, max_tokens: int = DEFAULT_MAX_TOKENS,
            gate=None):
    """The FastAPI app: ``policy`` (a :class:`router_ml.loop.policy.Policy` with its router,
    rules, breaker, log and sampler) answering through ``upstream`` (a
    :class:`router_ml.serve.upstream.Upstream`). ``app.state.close()`` finishes the sampler's
    queue (at most ``drain_seconds``) and flushes the log; the app's shutdown calls it.

    max_body_bytes: the largest request body (413 past it); body_timeout: seconds a client has
    to send its body (408 after); max_tokens: the cap on a request's max_tokens. gate: a
    :class:`router_ml.serve.gate.KeyGate` (client keys on every route but /health; its
    ``finished`` must be the policy's ``on_finish``), or None."""
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    from router_ml.loop.clients import Completion
    from router_ml.serve._prometheus import Metrics

    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        # one INFO line per upstream call would cost more than the routing itself
        logging.getLogger(name).setLevel(logging.WARNING)
    router = policy.router
    m = metrics or Metrics(policy.breaker, policy.sampler)
    closed = []

    def close():
        if closed:
            return
        closed.append(True)
        if hasattr(policy.sampler, "close"):
            left = policy.sampler.close(drain_seconds)
            if left:
                logger.warning("%d quality samples left unjudged at shutdown", left)
        if policy.log is not None and hasattr(policy.log, "close"):
            policy.log.close()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await upstream.warm()
        yield
        await run_in_threadpool(close)

    app = FastAPI(title="router_ml", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.policy, app.state.metrics, app.state.close = policy, m, close
    if gate is not None:
        from router_ml.serve.gate import KeyGateMiddleware

        app.add_middleware(KeyGateMiddleware, gate=gate)

    def error(status: int, message: str, kind: str = "invalid_request_error", headers=None,
              param: str | None = None):
        return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                       "code": None}}, status_code=status, headers=headers)

    def headers_of(d) -> dict:
        h = {"x-router-model": d.model, "x-router-reason": d.reason, "x-request-id": d.request_id}
        if d.score is not None:
            h["x-router-score"] = f"{d.score:.6f}"
        if d.conversation:
            h["x-router-conversation"] = d.conversation
        if d.task:
            h["x-router-task"] = d.task
            h["x-router-task-source"] = d.task_source
        return h

    def failed(e: AllModelsFailedError):
        d = e.decision
        m.observe(d, failed=True)
        # the upstream's own text stays out: it may echo a key or an internal reply
        return error(502, f"every model failed for this request ({d.error}); request "
                          f"{d.request_id}", "upstream_error", headers_of(d))

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": getattr(router, "models", None),
                "threshold": getattr(router, "threshold", None),
                "lam": getattr(router, "lam", None), "ladder": list(policy.ladder)}

    @app.get("/metrics")
    async def metrics_():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(m.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        # only what a request may name: the candidates are the router's to choose
        return {"object": "list", "data": [{"id": ROUTER_NAME, "object": "model", "created": 0,
                                            "owned_by": "router_ml",
                                            "candidates": list(getattr(router, "models", None)
                                                               or ())}]}

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        body = await read_body(request)
        if not isinstance(body, dict):
            return body
        try:
            rid, score = body["request_id"], float(body["score"])
            if not isinstance(rid, str) or len(rid) > 64 or not math.isfinite(score):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return error(400, 'send {"request_id": "<the x-request-id header>", "score": <number>}')
        if policy.log is None:
            return error(409, "this endpoint keeps no decision log; start it with --log DIR")
        if not await run_in_threadpool(policy.log.feedback, rid, score):
            return error(404, f"no logged request {rid!r}", "not_found_error")
        return {"request_id": rid, "score": score, "recorded": True}

    async def read_body(request: Request):
        """The parsed body, or an error response: 413 past ``max_body_bytes``, 408 when the
        client is slower than ``body_timeout``, 400 for what is not a JSON object of at most
        MAX_DEPTH levels."""
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > max_body_bytes:
            return error(413, f"the request body is larger than {max_body_bytes} bytes")
        parts, seen = [], 0
        try:
            async with asyncio.timeout(body_timeout):
                async for part in request.stream():
                    seen += len(part)
                    if seen > max_body_bytes:
                        return error(413, f"the request body is larger than {max_body_bytes} "
                                          "bytes")
                    parts.append(part)
        except TimeoutError:
            return error(408, f"the request body did not arrive within {body_timeout:g} s")
        # a few MB of JSON take milliseconds to parse and walk: not on the event loop
        problem = await run_in_threadpool(_parse, b"".join(parts))
        return error(400, problem) if isinstance(problem, str) else problem

    def prepare(body, headers):
        """Checks, schema compilation and the routing decision: in a worker thread, so that a
        large schema or a transformer encoder does not stall the event loop."""
        knob = parse_model_name(body.get("model"), getattr(router, "threshold", None))
        messages = check_messages(body.get("messages"))
        params = forwarded_params(body, max_tokens)
        meta = request_metadata(body, headers)
        checks = [*policy.validators, *format_validators(body.get("response_format"))]
        return (policy.start(messages, meta, validators=checks, threshold=knob, params=params),
                params, meta)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        if not isinstance(body, dict):
            return body
        try:
            run, params, meta = await run_in_threadpool(prepare, body, request.headers)
        except RequestError as e:
            return error(400, str(e), param=e.param)
        except (TypeError, ValueError, RecursionError) as e:
            return error(400, str(e) if not isinstance(e, RecursionError)
                         else f"the request nests deeper than {MAX_DEPTH}")
        except PolicyError as e:
            return error(500, str(e), "server_error")
        try:
            return await respond(run, body, params, meta.get("timeout"))
        except BaseException as e:  # the client went away (cancelled): the row is still logged
            if run.model is not None:
                run.decision.error = f"{type(e).__name__}: the request ended before an answer"
                run.model = None
                run.finish()
            raise

    def give_up(run, e: Exception, shortened: bool):
        """The call failed: the next rung (None), or the response that ends the request.
        shortened: the client asked for a timeout below the operator's."""
        e = upstream_error(e)
        if e.kind == "timeout" and shortened:
            e.counts = False  # a client's short timeout says nothing about the model
        if e.kind == "client":  # the request's own fault: no other model would take it
            run.model = None
            run.decision.error = str(e)
            run.finish()
            d = run.decision
            m.observe(d, failed=True)
            return error(400, f"the model refused this request (HTTP {e.status}); check its "
                              f"parameters (request {d.request_id})", headers=headers_of(d))
        try:
            run.failed(e)
        except AllModelsFailedError as err:
            return failed(err)
        return None

    async def respond(run, body, params, timeout):
        messages = run.messages
        shortened = timeout is not None and timeout < upstream.timeout
        if not body.get("stream"):
            answer = None
            while run.model is not None:
                try:
                    c, answer = await upstream.complete(run.model, messages, params, timeout)
                except Exception as e:  # the upstream's failure: the next rung, or an error
                    if (out := give_up(run, e, shortened)) is not None:
                        return out
                    continue
                run.answered(c)
            d = run.finish()
            m.observe(d)
            return JSONResponse(answer, headers=headers_of(d))

        while run.model is not None:
            try:
                head, rest = await upstream.stream(run.model, messages, params, timeout)
                if not run.checks:
                    run.answered(Completion(""))
                    break
                chunks = head + [c async for c in rest]
            except Exception as e:  # before the first byte: the next rung, or an error
                if (out := give_up(run, e, shortened)) is not None:
                    return out
                continue
            if run.answered(Completion("".join(map(chunk_text, chunks)))):
                d = run.finish()
                m.observe(d)
                return StreamingResponse(_replay(chunks), media_type="text/event-stream",
                                         headers=headers_of(d))
        return StreamingResponse(_relay(run, head, rest, m), media_type="text/event-stream",
                                 headers=headers_of(run.decision))

    return app


def _parse(data: bytes):
    """The body as a dict of at most MAX_DEPTH levels, or what is wrong with it (a str)."""
    try:
        body = json.loads(data)
    except RecursionError:
        return f"the request body nests deeper than {MAX_DEPTH}"
    except ValueError:
        return "the request body is not JSON"
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if depth_exceeds(body):
        return f"the request body nests deeper than {MAX_DEPTH}"
    return body


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def _replay(chunks):
    for c in chunks:
        yield _sse(c)
    yield "data: [DONE]\n\n"


async def _relay(run, head, rest, metrics):
    """Send a started stream on; a failure ends it with an error event. The Decision is
    finished (logged, counted) when the stream ends, however it ends."""
    d, parts = run.decision, [chunk_text(c) for c in head]
    try:
        for c in head:
            yield _sse(c)
        async for c in rest:
            parts.append(chunk_text(c))
            yield _sse(c)
    except Exception as e:
        e = upstream_error(e)
        run.broke(e)
        logger.warning("upstream stream of %s broke off: %s (request %s)", d.model, d.error,
                       d.request_id)
        yield _sse({"error": {"message": f"the upstream stream broke off ({e}); request "
                                         f"{d.request_id}", "type": "upstream_error"}})
    finally:
        d.answer = "".join(parts)
        run.finish()
        metrics.observe(d)
    yield "data: [DONE]\n\n"


__all__ = ["app_for"]
