"""Routing rules: the rules file (TOML, JSON or YAML, validated with a JSON Schema) and the
first-match rule that picks a model or a tier from request metadata and the routed text.

A rule's conditions: ``task`` (equal to the request's), ``tags`` (any shared),
``max_latency`` (the request's latency class is this one or tighter; classes
:data:`LATENCY_CLASSES`, tightest first) and ``regex`` (searched in the routed text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from router_ml.errors import PolicyError, RuleConfigError
from router_ml.loop._config_file import read_config
from router_ml.loop.validators import key_path

LATENCY_CLASSES = ("realtime", "interactive", "batch")  # tightest first
CONVERSATION_MODES = ("free", "sticky", "escalate-only")
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
        # what each model can take; also declares models beyond the router's that the rules,
        # tiers, ladder or fallback may name
        "models": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": False, "properties": {
                "context_tokens": {"type": "integer", "minimum": 1},
                "tools": {"type": "boolean"}, "vision": {"type": "boolean"},
                "response_format": {"type": "boolean"}}}},
        # task types by example: [tasks.NAME] tables, checked by router_ml.loop.tasks
        "tasks": {"type": "object"},
        "conversation": {"enum": list(CONVERSATION_MODES),
                         "errorMessage": f"must be one of {', '.join(CONVERSATION_MODES)}"},
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
class Needs:
    """What a request needs of a model: tokens (the prompt's estimate, ceil(characters / 4) of
    every message, plus the answer's ``max_tokens``), tools, vision (an image part) and a
    ``response_format``."""

    tokens: int = 0
    tools: bool = False
    vision: bool = False
    response_format: bool = False


def request_needs(messages, params: Mapping | None = None) -> Needs:
    """The :class:`Needs` of chat ``messages`` (or a str) sent with ``params`` (the request's
    OpenAI parameters: ``tools``, ``response_format``, ``max_tokens``)."""
    params = params or {}
    chars, vision = 0, False
    for m in ([{"content": messages}] if isinstance(messages, str) else messages or ()):
        c = m.get("content") if isinstance(m, Mapping) else None
        if isinstance(c, str):
            chars += len(c)
        elif isinstance(c, list):
            for part in c:
                if isinstance(part, Mapping):
                    chars += len(part.get("text") or "") if isinstance(part.get("text"), str) else 0
                    vision = vision or part.get("type") in ("image_url", "input_image", "image")
    out = params.get("max_tokens") or params.get("max_completion_tokens") or 0
    fmt = params.get("response_format")
    return Needs(-(-chars // 4) + int(out), bool(params.get("tools")), vision,
                 isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"))


@dataclass(frozen=True)
class ModelLimits:
    """What a model can take (a rules file's ``[models."name"]`` table); None: not limited."""

    context_tokens: int | None = None
    tools: bool | None = None
    vision: bool | None = None
    response_format: bool | None = None

    def lacks(self, needs: Needs) -> str | None:
        """Why the model cannot take a request with ``needs``, or None when it can."""
        if self.context_tokens is not None and needs.tokens > self.context_tokens:
            return f"about {needs.tokens} tokens, past its context of {self.context_tokens}"
        for what in ("tools", "vision", "response_format"):
            if getattr(needs, what) and getattr(self, what) is False:
                return {"tools": "tools", "vision": "an image",
                        "response_format": "a response_format"}[what] + ", which it does not take"
        return None


@dataclass(frozen=True)
class PolicyConfig:
    """What a rules file holds: rules (first match wins), tiers {name: model}, the ladder
    (models cheapest first), the fallback model, the escalation cap, and the models beyond the
    router's that these may name with what each can take (``[models."name"]`` tables:
    :class:`ModelLimits`), and the conversation mode (``free``, ``sticky``: a conversation
    keeps its model; ``escalate-only``: it may only move up the ladder), and the task types
    whose detection names a request's task when its metadata names none ({name:
    :class:`router_ml.loop.tasks.TaskSpec}`; empty: no detection)."""

    rules: tuple = ()
    tiers: dict = field(default_factory=dict)
    ladder: tuple = ()
    fallback: str | None = None
    max_escalations: int = 1
    models: dict = field(default_factory=dict)
    conversation: str = "free"
    tasks: dict = field(default_factory=dict)


def parse_rules(data, source: str = "<rules>") -> PolicyConfig:
    """A :class:`PolicyConfig` from parsed data, validated against :data:`RULES_SCHEMA`.
    RuleConfigError names ``source`` and every bad key (e.g. ``rules[1].max_latency``). The
    task types to detect are the file's ``[tasks.*]`` tables; ``[tasks] extend_default =
    true`` adds them to the package's default set
    (:func:`router_ml.loop.tasks.default_tasks`). Without a ``tasks`` table nothing is
    detected, so rules with a ``task`` match only what requests name."""
    import jsonschema

    problems = []
    for e in sorted(jsonschema.Draft202012Validator(RULES_SCHEMA).iter_errors(data),
                    key=lambda e: list(map(str, e.absolute_path))):
        path = list(e.absolute_path)
        if e.validator == "additionalProperties":
            allowed = ", ".join(e.schema.get("properties", {}))
            for key in sorted(set(e.instance) - set(e.schema.get("properties", {}))):
                problems.append(f"{key_path([*path, key])}: unknown key (allowed: {allowed})")
            continue
        problems.append(f"{key_path(path)}: {e.schema.get('errorMessage', e.message)}")
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
    tasks = {}
    if "tasks" in data:
        from router_ml.loop.tasks import parse_tasks  # it imports this module

        tasks = parse_tasks(data["tasks"], source)
    return PolicyConfig(tuple(rules), tiers, tuple(data.get("ladder", ())), data.get("fallback"),
                        int(data.get("max_escalations", 1)),
                        {m: ModelLimits(**v) for m, v in data.get("models", {}).items()},
                        data.get("conversation", "free"), tasks)


def load_rules(path) -> PolicyConfig:
    """Read and validate a rules file (.toml, .json, .yaml/.yml); see the README's example."""
    data = read_config(path, "rules file", RuleConfigError)
    return parse_rules(data, str(path))


__all__ = ["CONVERSATION_MODES", "LATENCY_CLASSES", "ModelLimits", "Needs", "PolicyConfig",
           "PolicyError", "RULES_SCHEMA", "Rule", "RuleConfigError", "load_rules", "parse_rules",
           "request_needs"]
