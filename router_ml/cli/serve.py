"""``router-ml serve``: parses the endpoint's options, checks them, prints what it serves and runs
uvicorn (:mod:`router_ml.serve.endpoint` builds the app)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from router_ml.errors import RouterMLError, ServingError
from router_ml.serve import endpoint
from router_ml.serve._requests import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_TOKENS,
    ROUTER_NAME,
)
from router_ml.serve.endpoint import (
    ARGS_ENV,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    build_app,
    check_limits,
    check_port,
    header_timeout_protocol,
    is_loopback,
    quota_url,
)


def serve_parser(prog: str = "router-ml serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=endpoint.__doc__.split("\n\n")[1].strip())
    p.add_argument("--model", required=True, help="router directory (written by router.save)")
    p.add_argument("--upstream-base", default=os.environ.get("OPENAI_BASE_URL"),
                   help="base URL of the OpenAI-compatible upstream, e.g. "
                        "http://127.0.0.1:4000/v1 (default: $OPENAI_BASE_URL)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the upstream's API key (default "
                        "%(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--rules", help="rules file (.toml, .json, .yaml): rules, ladder, fallback, "
                                   "max_escalations")
    p.add_argument("--log", help="decision log folder (SQLite, a file per day)")
    p.add_argument("--store-prompts", choices=["no", "sampled", "all"], default="sampled",
                   help="prompt text in the log: none, of sampled requests (default), or all")
    p.add_argument("--flush-seconds", type=float, default=1.0,
                   help="seconds between log inserts; a hard kill loses at most the rows of "
                        "this window (default %(default)s)")
    p.add_argument("--sample-rate", type=float, default=0.0,
                   help="share of cheaper answers judged against the strongest model (e.g. 0.03)")
    p.add_argument("--judge", help="judge model at the upstream for quality sampling")
    p.add_argument("--check-refusals", action="store_true",
                   help="escalate answers that refuse or say they are not sure")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds for one upstream call, connect to last byte (default "
                        "%(default)s; per request: x-router-timeout)")
    p.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT,
                   help="seconds to connect to the upstream (default %(default)s)")
    p.add_argument("--breaker-failures", type=int, default=5,
                   help="consecutive failures that open a model's circuit (default %(default)s)")
    p.add_argument("--breaker-cooldown", type=float, default=30.0,
                   help="seconds a model's open circuit skips it (default %(default)s)")
    p.add_argument("--drain-seconds", type=float, default=30.0,
                   help="on SIGTERM, seconds to finish in-flight requests and queued samples")
    p.add_argument("--keys", help="client keys file (.toml, .json, .yaml; router-ml keys new "
                                  "NAME makes an entry): every route but /health then needs "
                                  "'Authorization: Bearer <secret>'")
    p.add_argument("--quota-store", help="where the keys' counters live: sqlite:///PATH (one "
                                         "machine) or redis://HOST:PORT/DB (several); default "
                                         "quota.sqlite in the --log folder, else "
                                         "./router-ml-quota.sqlite")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="without --keys, listen on a non-loopback --host anyway")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (default %(default)s); they share the keys' counters")
    lim = p.add_argument_group("limits (see docs/security.md)")
    lim.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                     help="largest request body; 413 past it (default %(default)s)")
    lim.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT,
                     help="seconds a client has to send its request headers before the "
                          "connection is closed (default %(default)s)")
    lim.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT,
                     help="seconds a client has to send its body; 408 after (default "
                          "%(default)s)")
    lim.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                     help="largest max_tokens a request may ask for (default %(default)s)")
    lim.add_argument("--max-response-bytes", type=int, default=DEFAULT_MAX_RESPONSE_BYTES,
                     help="most bytes read of one upstream answer; past it the request gets a "
                          "502 and the model keeps its circuit (default %(default)s)")
    lim.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                     help="open connections and requests in flight; 503 past it (default "
                          "%(default)s)")
    return p


def describe(args, router, config) -> str:
    """The start-up lines: where it listens, which router, which upstream, what else runs."""
    if getattr(router, "threshold", None) is not None:
        knob = f"{router.strong_model} / {router.weak_model}, threshold {router.threshold:.4f}"
    else:
        knob = f"{', '.join(router.models)}, lam {router.lam:g}"
    lines = [f"router-ml serve: listening on http://{args.host}:{args.port} (model {ROUTER_NAME!r}"
             f"; /v1/chat/completions, /v1/models, /v1/feedback, /health, /metrics)"
             + (f", {args.workers} worker processes" if getattr(args, "workers", 1) > 1 else ""),
             f"router:   {args.model} ({knob})",
             f"upstream: {args.upstream_base} (timeout {args.timeout:g} s, connect "
             f"{args.connect_timeout:g} s)"]
    if config is not None:
        lines.append(f"rules:    {args.rules or 'none'} ({len(config.rules)} rules"
                     + (f", ladder {' -> '.join(config.ladder)}" if config.ladder else "")
                     + (f", fallback {config.fallback}" if config.fallback else "")
                     + f", {len(config.tasks)} task types"
                     + (f", conversation {config.conversation}"
                        if config.conversation != "free" else "") + ")")
    lines.append(f"log:      {args.log or 'none'}" + (
        f"; sampling {100 * args.sample_rate:g} % judged by {args.judge}" if args.sample_rate
        else ""))
    if getattr(args, "keys", None):
        lines.append(f"keys:     {args.keys} (quota store {quota_url(args)})")
    return "\n".join(lines)


def serve_main(argv=None, prog: str = "router-ml serve") -> int:
    args = serve_parser(prog).parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = None
    try:
        if args.keys and args.allow_unauthenticated:
            raise ServingError("--allow-unauthenticated turns client keys off; drop it or "
                               "--keys")
        if not args.keys and not args.allow_unauthenticated and not is_loopback(args.host):
            raise ServingError(
                f"--host {args.host} is not a loopback address and no --keys file is given: "
                "anyone who reaches it could spend the upstream's budget. Pass --keys FILE "
                "(make entries with `router-ml keys new NAME`), or --allow-unauthenticated if "
                "something in front of it checks who calls")
        if args.workers < 1:
            raise ServingError(f"--workers must be >= 1, got {args.workers}")
        if not args.upstream_base:
            raise ServingError("no upstream: pass --upstream-base URL (an OpenAI-compatible "
                               "server) or set OPENAI_BASE_URL")
        if not 0.0 <= args.sample_rate <= 1.0:
            raise ServingError(f"--sample-rate must be in [0, 1], got {args.sample_rate}")
        check_limits(args)
        try:
            import uvicorn
        except ImportError:
            raise ServingError("router-ml serve needs the serve extra: "
                               "pip install 'router_ml[serve]'") from None
        # the parent builds the app once either way: bad files fail here, before any worker
        app, router, config, log = build_app(args)
        check_port(args.host, args.port)
    except (RouterMLError, ImportError, ValueError) as e:
        if log is not None:
            log.close()
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(describe(args, router, config), flush=True)
    if args.allow_unauthenticated and not is_loopback(args.host):
        print(f"warning: serving on {args.host} without client keys (--allow-unauthenticated): "
              "whoever reaches this address can spend the upstream's budget", file=sys.stderr,
              flush=True)
    options = dict(host=args.host, port=args.port, log_level="warning",
                   timeout_graceful_shutdown=args.drain_seconds,
                   http=header_timeout_protocol(args.header_timeout),
                   limit_concurrency=args.max_connections, h11_max_incomplete_event_size=64 * 1024)
    if args.workers == 1:
        uvicorn.run(app, **options)
        return 0
    if log is not None:
        log.close()  # each worker opens its own
    os.environ[ARGS_ENV] = json.dumps(vars(args))
    # each worker imports the protocol by name; app_from_env sets its deadline there
    options["http"] = "router_ml.serve._protocol:HeaderTimeoutH11"
    uvicorn.run("router_ml.serve.endpoint:app_from_env", factory=True, workers=args.workers,
                **options)
    return 0


__all__ = ['describe', 'serve_main', 'serve_parser']
