"""Routing rules: the rules file (TOML, JSON or YAML, validated with a JSON Schema) and the
first-match rule that picks a model or a tier from request metadata and the routed text.

A rule's conditions: ``task`` (equal to the request's), ``tags`` (any shared),
``max_latency`` (the request's latency class is this one or tighter; classes
:data:`LATENCY_CLASSES`, tightest first) and ``regex`` (searched in the routed text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from router_ml.errors import RouterMLError
from router_ml.loop.validators import _key_path

LATENCY_CLASSES = ("realtime", "interactive", "batch")  # tightest first
_CONDITIONS = ("task", "tags", "regex", "max_latency")
_TEXT = {"type": "string", "minLength": 1}
RULES_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tiers": {"type": "object", "additionalProperties": _TEXT},
        "ladder": {"type": "array", "items": _TEXT, "minItems": 1, "uniqueItems": True},
        "fallback": _TEXT,
        "max_escalations": {"type": "integer", "minimum": 0},
        # models beyond the router's that the rules, tiers, ladder or fallback may name
        "models": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": False, "properties": {}}},
        "rules": {"type": "array", "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": _TEXT, "task": _TEXT, "tags": {"type": "array", "items": _TEXT},
                           "regex": _TEXT, "max_latency": {"enum": list(LATENCY_CLASSES)},
                           "model": _TEXT, "tier": _TEXT},
            "allOf": [
                {"oneOf": [{"required": ["model"]}, {"required": ["tier"]}],
                 "errorMessage": "needs exactly one target: 'model' or 'tier'"},
                {"anyOf": [{"required": [k]} for k in _CONDITIONS],
                 "errorMessage": f"needs at least one condition of {', '.join(_CONDITIONS)}"},
            ]}},
    },
}


class PolicyError(RouterMLError):
    """The policy cannot route or answer a request."""


class RuleConfigError(PolicyError, ValueError):
    """A rules file is malformed; the message names the file and the key."""




@dataclass(frozen=True)
class Rule:
    """A rule: all given conditions must hold. tags: matches when the request has any of them;
    max_latency: matches requests whose latency class is this one or tighter."""

    name: str
    model: str
    task: str | None = None
    tags: tuple = ()
    regex: re.Pattern | None = None
    max_latency: str | None = None

    def matches(self, text: str, meta: Mapping) -> bool:
        if self.task is not None and meta.get("task") != self.task:
            return False
        if self.tags and not set(self.tags) & set(meta.get("tags") or ()):
            return False
        if self.max_latency is not None:
            cls = meta.get("max_latency")
            if cls not in LATENCY_CLASSES or \
                    LATENCY_CLASSES.index(cls) > LATENCY_CLASSES.index(self.max_latency):
                return False
        return self.regex is None or self.regex.search(text) is not None


@dataclass(frozen=True)
class PolicyConfig:
    """What a rules file holds: rules (first match wins), tiers {name: model}, the ladder
    (models cheapest first), the fallback model, the escalation cap, and the models beyond the
    router's that these may name (``[models."name"]`` tables)."""

    rules: tuple = ()
    tiers: dict = field(default_factory=dict)
    ladder: tuple = ()
    fallback: str | None = None
    max_escalations: int = 1
    models: tuple = ()


def parse_rules(data, source: str = "<rules>") -> PolicyConfig:
    """A :class:`PolicyConfig` from parsed data, validated against :data:`RULES_SCHEMA`.
    RuleConfigError names ``source`` and every bad key (e.g. ``rules[1].max_latency``)."""
    import jsonschema

    problems = []
    for e in sorted(jsonschema.Draft202012Validator(RULES_SCHEMA).iter_errors(data),
                    key=lambda e: list(map(str, e.absolute_path))):
        path = list(e.absolute_path)
        if e.validator == "additionalProperties":
            allowed = ", ".join(e.schema.get("properties", {}))
            for key in sorted(set(e.instance) - set(e.schema.get("properties", {}))):
                problems.append(f"{_key_path([*path, key])}: unknown key (allowed: {allowed})")
            continue
        problems.append(f"{_key_path(path)}: {e.schema.get('errorMessage', e.message)}")
    if problems:
        raise RuleConfigError(f"{source}: " + "; ".join(problems))
    tiers = dict(data.get("tiers", {}))
    rules = []
    for i, r in enumerate(data.get("rules", [])):
        if "tier" in r and r["tier"] not in tiers:
            raise RuleConfigError(f"{source}: rules[{i}].tier: unknown tier {r['tier']!r}; "
                                  f"define it under [tiers] (known: {', '.join(tiers) or 'none'})")
        try:
            rx = re.compile(r["regex"]) if "regex" in r else None
        except re.error as e:
            raise RuleConfigError(f"{source}: rules[{i}].regex: not a valid regular "
                                  f"expression ({e})") from None
        rules.append(Rule(r["name"], r.get("model") or tiers[r["tier"]], r.get("task"),
                          tuple(r.get("tags", ())), rx, r.get("max_latency")))
    return PolicyConfig(tuple(rules), tiers, tuple(data.get("ladder", ())), data.get("fallback"),
                        int(data.get("max_escalations", 1)), tuple(data.get("models", {})))


def load_rules(path) -> PolicyConfig:
    """Read and validate a rules file (.toml, .json, .yaml/.yml); see the README's example."""
    path = Path(path)
    if not path.is_file():
        raise RuleConfigError(f"rules file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:  # e.g. a tag safe_load will not construct
                raise ValueError(str(e).replace("\n", " ")) from None
        else:
            raise RuleConfigError(f"{path}: use a .toml, .json, .yaml or .yml rules file")
    except (ValueError, ImportError) as e:  # TOML/JSON/YAML decode errors are ValueErrors
        if isinstance(e, RuleConfigError):
            raise
        raise RuleConfigError(f"{path}: cannot parse ({type(e).__name__}: {e})") from None
    return parse_rules(data, str(path))


__all__ = ["LATENCY_CLASSES", "PolicyConfig", "PolicyError", "RULES_SCHEMA", "Rule",
           "RuleConfigError", "load_rules", "parse_rules"]
