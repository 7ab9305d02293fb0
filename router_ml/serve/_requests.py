"""What a chat request asks for: the knob in its ``model`` name, the policy metadata in its
``metadata`` field and ``x-router-*`` headers, the validators its ``response_format``
implies, and the parameters that go on to the upstream.

A client's body is hostile until checked. Only the OpenAI chat-completion parameters named in
:data:`FORWARDED` go on, each checked for its type; any other field (``base_url``,
``api_key``, ``extra_headers``, ``mock_response``, ...) is a :class:`RequestError` that names
it. The upstream's base, key, provider and headers come from the operator's configuration only
(:class:`router_ml.serve.upstream.Upstream`)."""

from __future__ import annotations

import json
import math

from router_ml.errors import RequestError
from router_ml.loop.rules import LATENCY_CLASSES
from router_ml.loop.validators import JsonSchemaValid, JsonValid

ROUTER_NAME = "router"
MIN_TIMEOUT = 1.0  # seconds: the smallest per-request timeout a client may ask for
MAX_TIMEOUT = 600.0  # seconds: the largest per-request timeout a client may ask for
MAX_DEPTH = 32  # nesting of a request body (objects and lists) and of a response_format schema
MAX_SCHEMA_BYTES = 64 * 1024  # a response_format json_schema, as JSON
MAX_N = 8  # choices a request may ask for
DEFAULT_MAX_TOKENS = 16384  # the default cap on max_tokens / max_completion_tokens
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # a request body
DEFAULT_BODY_TIMEOUT = 30.0  # seconds a client has to send its body
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # one upstream answer (or stream)


def _number(lo=None, hi=None):
    def check(v):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return ok and (lo is None or v >= lo) and (hi is None or v <= hi)
    return check


def _int(lo, hi):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _stop(v):
    return v is None or isinstance(v, str) or (
        isinstance(v, list) and len(v) <= 4 and all(isinstance(x, str) for x in v))


def _dict(v):
    return isinstance(v, dict)


# The OpenAI chat-completion parameters forwarded to the upstream, each with its check (the
# description in the 400 says what is expected). max_tokens and n get their caps at run time.
FORWARDED = {
    "temperature": (_number(0, 2), "a number in [0, 2]"),
    "top_p": (_number(0, 1), "a number in [0, 1]"),
    "frequency_penalty": (_number(-2, 2), "a number in [-2, 2]"),
    "presence_penalty": (_number(-2, 2), "a number in [-2, 2]"),
    "max_tokens": (_int(1, 10**9), "a positive integer"),
    "max_completion_tokens": (_int(1, 10**9), "a positive integer"),
    "n": (_int(1, MAX_N), f"an integer in [1, {MAX_N}]"),
    "stop": (_stop, "a string or a list of at most 4 strings"),
    "seed": (_int(-2**63, 2**63 - 1), "an integer"),
    "user": (lambda v: isinstance(v, str) and len(v) <= 256, "a string of at most 256 characters"),
    "logit_bias": (lambda v: isinstance(v, dict) and len(v) <= 300 and all(
        _number(-100, 100)(x) for x in v.values()), "an object of at most 300 numbers in [-100, 100]"),
    "logprobs": (lambda v: isinstance(v, bool), "true or false"),
    "top_logprobs": (_int(0, 20), "an integer in [0, 20]"),
    "response_format": (_dict, "an object"),
    "tools": (lambda v: isinstance(v, list) and len(v) <= 128 and all(map(_dict, v)),
              "a list of at most 128 tool objects"),
    "tool_choice": (lambda v: isinstance(v, (str, dict)), "a string or an object"),
    "parallel_tool_calls": (lambda v: isinstance(v, bool), "true or false"),
    "stream_options": (_dict, "an object"),
}
OWN = ("model", "messages", "stream", "metadata")  # read by the endpoint, not forwarded as given
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal"})
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


MAX_ECHO = 64  # characters of a client's field name said back in an error


def _echo(name: str) -> str:
    """A client-chosen field name as an error may say it back: at most MAX_ECHO characters."""
    return name if len(name) <= MAX_ECHO else name[:MAX_ECHO] + "..."


def depth_exceeds(obj, limit: int = MAX_DEPTH) -> bool:
    """Whether ``obj`` (parsed JSON) nests objects and lists more than ``limit`` deep; iterative,
    so a hostile body cannot exhaust the stack."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        if d > limit:
            return True
        stack.extend((x, d + 1) for x in o if isinstance(x, (dict, list)))
    return False


def forwarded_params(body: dict, max_tokens: int = DEFAULT_MAX_TOKENS) -> dict:
    """The parameters of ``body`` that go on to the upstream, checked. RequestError names the
    first field that is unknown or of the wrong type, or a max_tokens above ``max_tokens``."""
    out = {}
    for k, v in body.items():
        if k in OWN:
            continue
        spec = FORWARDED.get(k)
        if spec is None:
            name = _echo(k)
            raise RequestError(f"unrecognized request argument: {name!r}. This endpoint "
                               f"forwards only: {', '.join(sorted(FORWARDED))}", name)
        if not spec[0](v):
            raise RequestError(f"{k} must be {spec[1]}", k)
        if k in ("max_tokens", "max_completion_tokens") and v > max_tokens:
            raise RequestError(f"{k} must be at most {max_tokens} on this endpoint, got {v}", k)
        out[k] = v
    if not isinstance(body.get("stream", False), bool):
        raise RequestError("stream must be true or false", "stream")
    return out


def check_messages(messages) -> list:
    """``messages`` as sent, checked: a non-empty list of objects with a known role and only the
    OpenAI message fields. RequestError names the message and field."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {'role', 'content'} chat "
                           "messages", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError(f"messages[{i}] must be an object", "messages")
        extra = sorted(set(m) - MESSAGE_KEYS)
        if extra:
            raise RequestError(f"messages[{i}] has an unrecognized field {_echo(extra[0])!r}",
                               "messages")
        if m.get("role") not in ROLES:
            raise RequestError(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}",
                               "messages")
        c = m.get("content")
        if not (c is None or isinstance(c, str) or (isinstance(c, list)
                                                    and all(map(_dict, c)))):
            raise RequestError(f"messages[{i}].content must be a string or a list of content "
                               "parts", "messages")
    return messages


def parse_model_name(name, default_threshold):
    """The threshold a request asks for: ``router`` -> None (the router's own knob),
    ``router:<knob>`` -> knob in [0, 1]. ValueError (with what to send instead) otherwise."""
    if not isinstance(name, str) or not (name == ROUTER_NAME or name.startswith(ROUTER_NAME + ":")):
        raise ValueError(f"model must be {ROUTER_NAME!r} or '{ROUTER_NAME}:<threshold in [0, 1]>'"
                         f", got {name!r}")
    if name == ROUTER_NAME:
        return None
    if default_threshold is None:
        raise ValueError("this router has more than two models and routes by lam; send "
                         f"model {ROUTER_NAME!r}")
    try:
        knob = float(name[len(ROUTER_NAME) + 1:])
    except ValueError:
        raise ValueError(f"the knob in {name!r} is not a number; send e.g. 'router:0.6'") from None
    if not 0.0 <= knob <= 1.0:
        raise ValueError(f"the knob in {name!r} must be in [0, 1]")
    return knob


def request_metadata(body: dict, headers) -> dict:
    """Policy metadata (task, tags, max_latency, timeout, conversation, and the body's
    ``user``) from the body's ``metadata`` and the ``x-router-*`` headers (headers win).
    ValueError names the bad field."""
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata must be a JSON object")
    out = {k: meta[k] for k in ("task", "tags", "max_latency", "timeout", "conversation")
           if k in meta}
    if "latency" in meta:
        out.setdefault("max_latency", meta["latency"])
    for header, key in (("x-router-task", "task"), ("x-router-tags", "tags"),
                        ("x-router-latency", "max_latency"), ("x-router-timeout", "timeout"),
                        ("x-router-conversation", "conversation")):
        if headers.get(header):
            out[key] = headers[header]
    if isinstance(body.get("user"), str):
        out["user"] = body["user"]
    for key in ("task", "conversation"):
        if key in out and not (isinstance(out[key], str) and 0 < len(out[key]) <= 128):
            raise RequestError(f"{key} must be a string of 1 to 128 characters", key)
    if isinstance(out.get("tags"), str):
        out["tags"] = [t.strip() for t in out["tags"].split(",") if t.strip()]
    if "tags" in out and not (isinstance(out["tags"], list)
                              and all(isinstance(t, str) for t in out["tags"])):
        raise ValueError("tags must be a list of strings (or comma-separated in x-router-tags)")
    if "max_latency" in out and out["max_latency"] not in LATENCY_CLASSES:
        raise ValueError(f"latency class must be one of {', '.join(LATENCY_CLASSES)}, got "
                         f"{out['max_latency']!r}")
    if "timeout" in out:
        try:
            t = float(out["timeout"])
        except (TypeError, ValueError):
            t = math.nan
        if not MIN_TIMEOUT <= t <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be seconds in [{MIN_TIMEOUT:g}, {MAX_TIMEOUT:g}], "
                             f"got {out['timeout']!r}")
        out["timeout"] = t
    return out


_SCHEMAS: dict = {}  # compiled JSON Schema validators by schema text (a service reuses a few)


def format_validators(response_format) -> list:
    """Validators a ``response_format`` implies: JSON for ``json_object``, the schema for
    ``json_schema`` (``{"json_schema": {"schema": {...}}}``); none otherwise."""
    if not isinstance(response_format, dict):
        return []
    kind = response_format.get("type")
    if kind == "json_object":
        return [JsonValid()]
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("response_format json_schema needs json_schema.schema, an object")
        if depth_exceeds(schema):
            raise RequestError(f"response_format json_schema.schema nests deeper than "
                               f"{MAX_DEPTH}", "response_format")
        key = json.dumps(schema, sort_keys=True)
        if len(key) > MAX_SCHEMA_BYTES:
            raise RequestError(f"response_format json_schema.schema is larger than "
                               f"{MAX_SCHEMA_BYTES} bytes", "response_format")
        if key not in _SCHEMAS:
            import jsonschema

            try:
                _SCHEMAS[key] = JsonSchemaValid(schema)
            except jsonschema.SchemaError as e:
                raise ValueError(f"response_format json_schema.schema is not a valid JSON "
                                 f"Schema: {e.message}") from None
            if len(_SCHEMAS) > 256:
                _SCHEMAS.pop(next(iter(_SCHEMAS)))
        return [_SCHEMAS[key]]
    return []


__all__ = ["DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_RESPONSE_BYTES",
           "DEFAULT_MAX_TOKENS", "FORWARDED", "MAX_DEPTH", "MAX_N", "MAX_SCHEMA_BYTES",
           "MAX_TIMEOUT", "MIN_TIMEOUT", "ROUTER_NAME", "RequestError", "check_messages",
           "depth_exceeds", "format_validators", "forwarded_params", "parse_model_name",
           "request_metadata"]
