"""``router-ml serve``: an OpenAI-compatible endpoint that runs every request through the policy.

    router-ml serve --model models/default --upstream-base http://127.0.0.1:4000/v1 \\
        [--rules rules.toml] [--log logs/decisions] [--sample-rate 0.03 --judge gpt-4o]

``POST /v1/chat/completions`` takes an OpenAI chat request whose ``model`` is ``router`` (the
router's own knob) or ``router:<knob>`` (a pair router's threshold in [0, 1] for this request
only). Each request goes through the same :class:`router_ml.loop.policy.Policy` as the Python
loop: rules (metadata from the body's ``metadata`` or the ``x-router-task``,
``x-router-tags`` (comma-separated) and ``x-router-latency`` headers), the learned router,
escalation up the ladder when an answer fails a validator (``response_format`` ``json_object``
or ``json_schema`` is checked as JSON or against its schema), fallback on provider errors and
timeouts, a circuit breaker per model, the decision log and quality sampling (off the request
path). The request goes on to the chosen model through LiteLLM (see
:mod:`router_ml.serve.upstream` for the timeouts; ``x-router-timeout`` or ``metadata.timeout``
sets this request's total in seconds).

Responses carry ``x-router-model``, ``x-router-reason`` (rule, learned, escalated, fallback),
``x-request-id`` (for ``POST /v1/feedback``) and, for learned routes, ``x-router-score``. When
every model fails the client gets a 502 with those headers. **Streaming** (``stream: true``):
fallback happens before the first byte is sent (the first chunk must arrive); with validators
the whole answer is read, checked (and escalated) before it is sent; once a stream has
started, a failure ends it with ``data: {"error": {...}}`` and ``data: [DONE]``.

``POST /v1/feedback`` ``{"request_id", "score"}``: the user's feedback on a logged request.
``GET /v1/models``: ``router`` and the router's candidates. ``GET /health``. ``GET /metrics``:
see :mod:`router_ml.serve._prometheus`. With ``--keys FILE`` every route but ``/health`` needs
``Authorization: Bearer <secret>`` of a client key, with its budgets and rate limits
(:mod:`router_ml.serve.keys`, :mod:`router_ml.serve.gate`, :mod:`router_ml.serve.quota`);
without it the endpoint listens on loopback addresses only, unless
``--allow-unauthenticated``. ``--workers N`` runs N processes that share the key's counters.
On SIGTERM uvicorn stops accepting, drains in-flight
requests (``--drain-seconds``), then the sampler's queue is finished (same bound) and the log
is flushed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os

from router_ml.errors import ServingError
from router_ml.serve._requests import parse_model_name

DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT = 30.0, 3.0  # seconds
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds a client has to send its request line and headers
DEFAULT_MAX_CONNECTIONS = 1000  # open connections and requests in flight (503 past it)
ARGS_ENV = "ROUTER_ML_SERVE_ARGS"  # the parsed arguments, as JSON, for each worker process


def create_app(router, upstream_base: str, api_key: str | None = None, *,
               timeout: float = DEFAULT_TIMEOUT, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
               config=None, log=None, sample_rate: float = 0.0, judge: str | None = None,
               validators=(), prices=None, breaker_failures: int = 5,
               breaker_cooldown: float = 30.0, sample_queue: int = 64,
               drain_seconds: float = 30.0, seed: int | None = None,
               max_body_bytes: int | None = None, body_timeout: float | None = None,
               max_tokens: int | None = None, max_response_bytes: int | None = None,
               keys=None, quota=None):
    """The FastAPI app for a loaded ``router`` answering through ``upstream_base``.

    timeout, connect_timeout: seconds for one upstream call and for opening its connection.
    config: a :class:`router_ml.loop.rules.PolicyConfig` (rules, ladder, fallback,
    max_escalations; from :func:`router_ml.loop.rules.load_rules`). log: a
    :class:`router_ml.loop.decision_log.DecisionLog` (closed at shutdown) or None.
    sample_rate: share in [0, 1] of the answers below the strongest model that ``judge`` (a
    model name at the upstream) compares with the strongest one, off the request path, through
    a queue of ``sample_queue`` samples (needs ``log``). validators: checks for every answer
    (``response_format`` adds its own per request). prices: a price table (default built-in).
    breaker_failures, breaker_cooldown: consecutive failures that open a model's circuit, and
    seconds it stays open. drain_seconds: how long shutdown waits for queued samples.
    max_body_bytes, body_timeout, max_tokens: the request limits of
    :func:`router_ml.serve._app.app_for`; max_response_bytes: the most read of one upstream
    answer (:class:`router_ml.serve.upstream.Upstream`). None: the documented default.
    keys: a :class:`router_ml.serve.keys.KeyRing` (every route but /health needs one of its
    keys) with ``quota``, the store of its counters (:func:`router_ml.serve.quota.open_store`).
    """
    from router_ml.loop.breaker import CircuitBreaker
    from router_ml.loop.clients import LiteLLMClient
    from router_ml.loop.policy import Policy
    from router_ml.serve._app import app_for
    from router_ml.serve.upstream import Upstream

    upstream = Upstream(upstream_base, api_key, connect_timeout=connect_timeout, timeout=timeout,
                        **({} if max_response_bytes is None
                           else {"max_response_bytes": max_response_bytes}))
    sampler = None
    if sample_rate:
        from router_ml.loop.labeling import PairwiseJudge
        from router_ml.loop.sampling import BackgroundSampler, QualitySampler

        if log is None or not judge:
            raise ServingError("quality sampling writes its verdicts to the decision log: pass "
                               "--log DIR and --judge MODEL with --sample-rate")
        client = LiteLLMClient(api_base=upstream_base, api_key=api_key or "none",
                               timeout=timeout)
        sampler = BackgroundSampler(QualitySampler(PairwiseJudge(client, judge, prices),
                                                   rate=sample_rate, seed=seed),
                                    client, log, max_queue=sample_queue)
    gate = None
    if keys is not None:
        from router_ml.serve.gate import KeyGate

        if quota is None:
            raise ServingError("client keys need a quota store for their counters: pass "
                               "quota=router_ml.serve.quota.open_store(URL)")
        gate = KeyGate(keys, quota)
    policy = Policy(router, config, validators=validators, prices=prices, log=log,
                    sampler=sampler, breaker=CircuitBreaker(breaker_failures, breaker_cooldown),
                    on_finish=gate.finished if gate is not None else None)
    limits = {k: v for k, v in (("max_body_bytes", max_body_bytes),
                                 ("body_timeout", body_timeout), ("max_tokens", max_tokens))
              if v is not None}
    return app_for(policy, upstream, drain_seconds=drain_seconds, gate=gate, **limits)




def check_limits(args) -> None:
    """ServingError for a limit that is not positive."""
    for name in ("max_body_bytes", "header_timeout", "body_timeout", "max_tokens",
                 "max_response_bytes", "max_connections", "timeout", "connect_timeout"):
        if not getattr(args, name) > 0:
            raise ServingError(f"--{name.replace('_', '-')} must be positive, got "
                               f"{getattr(args, name)}")


def check_port(host: str, port: int) -> None:
    """ServingError when ``host:port`` cannot be bound (in use, or not an address here), before
    anything says it is listening."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ServingError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    family, *_, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(addr)
        except OSError as e:
            raise ServingError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol closing a connection whose request line and headers have not all
    arrived ``seconds`` after the connection opened or its next request began
    (:class:`router_ml.serve._protocol.HeaderTimeoutH11`; the deadline is per process)."""
    from router_ml.serve._protocol import HeaderTimeoutH11

    HeaderTimeoutH11.seconds = float(seconds)
    return HeaderTimeoutH11


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def quota_url(args) -> str:
    """The quota store's URL: ``--quota-store``, else a file in the log folder, else ./."""
    if args.quota_store:
        return args.quota_store
    return "sqlite:///" + (os.path.join(args.log, "quota.sqlite") if args.log
                           else "router-ml-quota.sqlite")


def build_app(args):
    """(app, router, config, log) from parsed ``serve`` arguments; raises RouterMLError,
    ImportError or ValueError (the log is closed then)."""
    from router_ml.core.router import load_router
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.rules import load_rules
    from router_ml.loop.validators import NoRefusal

    log = None
    try:
        keys = quota = None
        if args.keys:
            from router_ml.serve.keys import load_keys
            from router_ml.serve.quota import open_store

            keys = load_keys(args.keys)
            quota = open_store(quota_url(args))
        router = load_router(args.model)
        config = load_rules(args.rules) if args.rules else None
        if args.log:
            log = DecisionLog(args.log, flush_seconds=args.flush_seconds, store_prompts={
                "no": False, "sampled": "sampled", "all": True}[args.store_prompts])
        app = create_app(router, args.upstream_base, os.environ.get(args.api_key_env),
                         timeout=args.timeout, connect_timeout=args.connect_timeout,
                         config=config, log=log, sample_rate=args.sample_rate, judge=args.judge,
                         validators=[NoRefusal()] if args.check_refusals else (),
                         breaker_failures=args.breaker_failures,
                         breaker_cooldown=args.breaker_cooldown,
                         drain_seconds=args.drain_seconds, max_body_bytes=args.max_body_bytes,
                         body_timeout=args.body_timeout, max_tokens=args.max_tokens,
                         max_response_bytes=args.max_response_bytes, keys=keys, quota=quota)
    except BaseException:
        if log is not None:
            log.close()
        raise
    return app, router, config, log


def app_from_env():
    """The app of one worker process of ``serve --workers N`` (uvicorn's factory): built from
    the arguments the parent left in ``$ROUTER_ML_SERVE_ARGS``."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = argparse.Namespace(**json.loads(os.environ[ARGS_ENV]))
    header_timeout_protocol(args.header_timeout)  # this worker's deadline for headers
    return build_app(args)[0]






__all__ = ["app_from_env", "build_app", "check_limits", "check_port", "create_app",
           "header_timeout_protocol", "is_loopback", "parse_model_name", "quota_url",]
