"""The HTTP app of ``router-ml serve`` (FastAPI): chat completions through the policy, feedback,
the model list, health and metrics. See :mod:`router_ml.serve.endpoint` for what it does."""

# No "from __future__ import annotations": FastAPI reads the handlers' annotations at run time.
import json
import logging
import math

from router_ml.loop.policy import AllModelsFailedError, PolicyError
from router_ml.serve.requests import ROUTER_NAME, format_validators, parse_model_name, request_metadata
from router_ml.serve.upstream import chunk_text

logger = logging.getLogger("router_ml.serve.endpoint")


def app_for(policy, upstream, *, metrics=None, drain_seconds: float = 30.0, gate=None):
    """The FastAPI app: ``policy`` (a :class:`router_ml.loop.policy.Policy` with its router,
    rules, breaker, log and sampler) answering through ``upstream`` (a
    :class:`router_ml.serve.upstream.Upstream`). ``app.state.close()`` finishes the sampler's
    queue (at most ``drain_seconds``) and flushes the log; the app's shutdown calls it.
    gate: a :class:`router_ml.serve.gate.KeyGate` (client keys on every route but /health;
    its ``finished`` must be the policy's ``on_finish``), or None."""
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    from router_ml.loop.clients import Completion
    from router_ml.serve.metrics import Metrics

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

    def error(status: int, message: str, kind: str = "invalid_request_error", headers=None):
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status,
                            headers=headers)

    def headers_of(d) -> dict:
        h = {"x-router-model": d.model, "x-router-reason": d.reason, "x-request-id": d.request_id}
        if d.score is not None:
            h["x-router-score"] = f"{d.score:.6f}"
        return h

    def failed(e: AllModelsFailedError):
        d = e.decision
        m.observe(d, failed=True)
        return error(502, f"every model failed for this request: {d.error}", "upstream_error",
                     headers_of(d))

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
        names = [ROUTER_NAME, *(getattr(router, "models", None) or ())]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0,
                                            "owned_by": "router_ml"} for n in names]}

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        try:
            body = await request.json()
            rid, score = body["request_id"], float(body["score"])
            if not isinstance(rid, str) or not math.isfinite(score):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return error(400, 'send {"request_id": "<the x-request-id header>", "score": <number>}')
        if policy.log is None:
            return error(409, "this endpoint keeps no decision log; start it with --log DIR")
        if not await run_in_threadpool(policy.log.feedback, rid, score):
            return error(404, f"no logged request {rid!r}", "not_found_error")
        return {"request_id": rid, "score": score, "recorded": True}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object")
        try:
            knob = parse_model_name(body.get("model"), getattr(router, "threshold", None))
            if not isinstance(body.get("messages"), list):
                raise ValueError("messages must be a list of {'role', 'content'} chat messages")
            meta = request_metadata(body, request.headers)
            checks = [*policy.validators, *format_validators(body.get("response_format"))]
            # in a worker thread: a transformer encoder must not stall the event loop
            run = await run_in_threadpool(lambda: policy.start(body["messages"], meta,
                                                               validators=checks, threshold=knob))
        except (TypeError, ValueError) as e:
            return error(400, str(e))
        except PolicyError as e:
            return error(500, str(e), "server_error")
        params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream",
                                                             "metadata")}
        try:
            return await respond(run, body, params, meta.get("timeout"))
        except BaseException as e:  # the client went away (cancelled): the row is still logged
            if run.model is not None:
                run.decision.error = f"{type(e).__name__}: the request ended before an answer"
                run.model = None
                run.finish()
            raise

    async def respond(run, body, params, timeout):
        messages = run.messages
        if not body.get("stream"):
            answer = None
            while run.model is not None:
                try:
                    c, answer = await upstream.complete(run.model, messages, params, timeout)
                except Exception as e:  # the upstream's failure: the next rung, or a 502
                    try:
                        run.failed(e)
                    except AllModelsFailedError as err:
                        return failed(err)
                    continue
                run.answered(c)
            d = run.finish()
            m.observe(d)
            return JSONResponse(answer, headers=headers_of(d))

        while run.model is not None:
            try:
                first, rest = await upstream.stream(run.model, messages, params, timeout)
                if not run.checks:
                    run.answered(Completion(""))
                    break
                chunks = [first] + [c async for c in rest]
            except Exception as e:  # before the first byte: the next rung, or a 502
                try:
                    run.failed(e)
                except AllModelsFailedError as err:
                    return failed(err)
                continue
            if run.answered(Completion("".join(map(chunk_text, chunks)))):
                d = run.finish()
                m.observe(d)
                return StreamingResponse(_replay(chunks), media_type="text/event-stream",
                                         headers=headers_of(d))
        return StreamingResponse(_relay(run, first, rest, m), media_type="text/event-stream",
                                 headers=headers_of(run.decision))

    return app


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def _replay(chunks):
    for c in chunks:
        yield _sse(c)
    yield "data: [DONE]\n\n"


async def _relay(run, first, rest, metrics):
    """Send a started stream on; a failure ends it with an error event. The Decision is
    finished (logged, counted) when the stream ends, however it ends."""
    d, parts = run.decision, [chunk_text(first)]
    try:
        yield _sse(first)
        async for c in rest:
            parts.append(chunk_text(c))
            yield _sse(c)
    except Exception as e:
        run.broke(e)
        logger.warning("upstream stream of %s broke off: %s", d.model, d.error)
        yield _sse({"error": {"message": f"the upstream stream broke off: {d.error}",
                              "type": "upstream_error"}})
    finally:
        d.answer = "".join(parts)
        run.finish()
        metrics.observe(d)
    yield "data: [DONE]\n\n"


__all__ = ["app_for"]
