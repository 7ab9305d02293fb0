"""``router-ml serve``: an OpenAI-compatible endpoint that routes each request.

    router-ml serve --model models/default --upstream-base http://127.0.0.1:4000/v1

``POST /v1/chat/completions`` takes an OpenAI chat request whose ``model`` is ``router`` (the
router's own threshold) or ``router:<knob>`` (a threshold in [0, 1] for this request only:
the strong model when score >= knob). The router scores the last user turn (see
:func:`router_ml.core.prompts.prompt_text`), and the request goes on to the chosen model through LiteLLM
(``litellm.acompletion`` with ``api_base`` = the upstream, an OpenAI-compatible server such as
a LiteLLM proxy, vLLM or OpenAI itself); ``stream: true`` is answered with server-sent events.
The response carries ``x-router-model`` and ``x-router-score`` headers.

``GET /health``: the router's models and threshold. ``GET /metrics``: Prometheus text with
``router_ml_decisions_total{model}``, ``router_ml_decision_seconds`` (histogram of the
routing time alone) and ``router_ml_upstream_errors_total``.

The router is loaded once at start-up; the embedding cache is never used here. The upstream
API key is read from the environment variable named by ``--api-key-env`` (default
``OPENAI_API_KEY``), never from the command line.
"""


import argparse
import json
import logging
import os
import sys
import time

from router_ml.errors import RouterMLError, ServingError

logger = logging.getLogger("router_ml.serve.endpoint")
ROUTER_NAME = "router"


def parse_model_name(name, default_threshold: float) -> float:
    """The threshold a request asks for: ``router`` -> the router's, ``router:<knob>`` ->
    knob. ValueError (with what to send instead) otherwise."""
    if not isinstance(name, str) or not (name == ROUTER_NAME or name.startswith(ROUTER_NAME + ":")):
        raise ValueError(f"model must be {ROUTER_NAME!r} or '{ROUTER_NAME}:<threshold in [0, 1]>'"
                         f", got {name!r}")
    if name == ROUTER_NAME:
        return default_threshold
    text = name[len(ROUTER_NAME) + 1:]
    try:
        knob = float(text)
    except ValueError:
        raise ValueError(f"the knob in {name!r} is not a number; send e.g. 'router:0.6'") from None
    if not 0.0 <= knob <= 1.0:
        raise ValueError(f"the knob in {name!r} must be in [0, 1]")
    return knob


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    return registry, {
        "decisions": Counter("router_ml_decisions", "Routing decisions, by chosen model",
                             ["model"], registry=registry),
        "latency": Histogram("router_ml_decision_seconds", "Time to route one request "
                             "(scoring only, no upstream call)", registry=registry,
                             buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
                                      5e-2, 0.1, 0.25, 1.0)),
        "upstream_errors": Counter("router_ml_upstream_errors", "Upstream calls that failed",
                                   registry=registry),
    }


def create_app(router, upstream_base: str, api_key: str | None = None, *,
               timeout: float = 600.0):
    """The FastAPI app for a loaded ``router`` forwarding to ``upstream_base``."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    import litellm
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.concurrency import run_in_threadpool

    from router_ml.core.prompts import prompt_text

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        # one INFO line per upstream call would cost more than the routing itself
        logging.getLogger(name).setLevel(logging.WARNING)
    registry, m = _metrics()
    app = FastAPI(title="router_ml", docs_url=None, redoc_url=None)
    app.state.router = router
    app.state.metrics = m

    def timed_route(prompt: str):
        t0 = time.perf_counter()
        decision = router.route(prompt)
        m["latency"].observe(time.perf_counter() - t0)
        return decision

    def error(status: int, message: str, kind: str = "invalid_request_error"):
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": router.models, "threshold": router.threshold,
                "lam": router.lam}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object")
        try:
            if router.threshold is None and body.get("model") != "router":
                raise ValueError("this router has more than two models and routes by lam; send "
                                 "model 'router'")
            threshold = parse_model_name(body.get("model"), router.threshold)
            if not isinstance(body.get("messages"), list):
                raise ValueError("messages must be a list of {'role', 'content'} chat messages")
            prompt = prompt_text(body["messages"], "messages")
            # in a worker thread: a transformer encoder must not stall the event loop
            decision = await run_in_threadpool(timed_route, prompt)
            chosen = decision.model
            if threshold != router.threshold:  # a knob for this request
                chosen = router.strong_model if decision.score >= threshold else router.weak_model
        except (TypeError, ValueError) as e:
            return error(400, str(e))
        m["decisions"].labels(model=chosen).inc()
        headers = {"x-router-model": chosen, "x-router-score": f"{decision.score:.6f}"}
        params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        stream = bool(body.get("stream"))
        try:
            result = await litellm.acompletion(
                model=f"openai/{chosen}", messages=body["messages"], api_base=upstream_base,
                api_key=api_key or "none", stream=stream, timeout=timeout, num_retries=0,
                **params)
        except Exception as e:  # the upstream's failure is the client's 502, never a crash
            m["upstream_errors"].inc()
            logger.warning("upstream call for %s failed: %s", chosen, e)
            return error(502, f"the upstream model {chosen!r} failed: {type(e).__name__}: {e}",
                         "upstream_error")
        if not stream:
            return JSONResponse(result.model_dump(exclude_none=True), headers=headers)

        async def events():
            try:
                async for chunk in result:
                    yield f"data: {json.dumps(chunk.model_dump(exclude_none=True))}\n\n"
            except Exception as e:
                m["upstream_errors"].inc()
                logger.warning("upstream stream for %s failed: %s", chosen, e)
                err = {"error": {"message": f"upstream stream failed: {e}",
                                 "type": "upstream_error"}}
                yield f"data: {json.dumps(err)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return app


def serve_parser(prog: str = "router-ml serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1].strip())
    p.add_argument("--model", required=True, help="router directory (written by router.save)")
    p.add_argument("--upstream-base", default=os.environ.get("OPENAI_BASE_URL"),
                   help="base URL of the OpenAI-compatible upstream, e.g. "
                        "http://127.0.0.1:4000/v1 (default: $OPENAI_BASE_URL)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the upstream's API key (default "
                        "%(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--timeout", type=float, default=600.0, help="upstream timeout in seconds")
    return p


def serve_main(argv=None, prog: str = "router-ml serve") -> int:
    args = serve_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if not args.upstream_base:
            raise ServingError("no upstream: pass --upstream-base URL (an OpenAI-compatible "
                               "server) or set OPENAI_BASE_URL")
        try:
            import uvicorn
        except ImportError:
            raise ServingError("router-ml serve needs the serve extra: "
                               "pip install 'router_ml[serve]'") from None
        from router_ml.core.load import load_router

        router = load_router(args.model)
        app = create_app(router, args.upstream_base, os.environ.get(args.api_key_env),
                         timeout=args.timeout)
    except (RouterMLError, ImportError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


__all__ = ["create_app", "parse_model_name", "serve_main", "serve_parser"]
