"""What a chat request asks for, beyond its messages: the knob in its ``model`` name, the
policy metadata in its ``metadata`` field and ``x-router-*`` headers, and the validators its
``response_format`` implies."""

from __future__ import annotations

import json
import math

from router_ml.loop.rules import LATENCY_CLASSES
from router_ml.loop.validators import JsonSchemaValid, JsonValid

ROUTER_NAME = "router"
MAX_TIMEOUT = 600.0  # seconds: the largest per-request timeout a client may ask for


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
    """Policy metadata (task, tags, max_latency, timeout) from the body's ``metadata`` and the
    ``x-router-*`` headers (headers win). ValueError names the bad field."""
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata must be a JSON object")
    out = {k: meta[k] for k in ("task", "tags", "max_latency", "timeout") if k in meta}
    if "latency" in meta:
        out.setdefault("max_latency", meta["latency"])
    for header, key in (("x-router-task", "task"), ("x-router-tags", "tags"),
                        ("x-router-latency", "max_latency"), ("x-router-timeout", "timeout")):
        if headers.get(header):
            out[key] = headers[header]
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
        if not 0 < t <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be seconds in (0, {MAX_TIMEOUT:g}], got "
                             f"{out['timeout']!r}")
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
        key = json.dumps(schema, sort_keys=True)
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


__all__ = ["MAX_TIMEOUT", "ROUTER_NAME", "format_validators", "parse_model_name",
           "request_metadata"]
