"""The routing policy around the learned router: rules, escalation, fallback, and why.

Per request, in this order (:meth:`Policy.run`):

1. **Rules** (:func:`load_rules`): the first rule whose conditions all hold picks a model or a
   tier. Conditions read the request metadata (``task``, ``tags``, ``max_latency``) and a
   regular expression on the prompt text.
2. **Learned routing**: unmatched requests go to the router (``router.route_batch``).
3. **Escalation**: after the chosen model answers, the validators (:class:`JsonValid`,
   :class:`JsonSchemaValid`, :class:`NoRefusal`, or any callable) check the answer; on a
   failure the request goes one rung up the ladder (models cheapest first), at most
   ``max_escalations`` times.
4. **Fallback**: a provider error or timeout moves the request to the next rung, or to the
   configured ``fallback`` model when the ladder is exhausted.

The :class:`Decision` records each step and why. Deciding (steps 1-2) makes no network call;
calling a model is the caller's ``client(model, messages)`` callable or :class:`LiteLLMClient`.

Which turns the router reads: an OpenAI-style conversation (a list of ``{"role", "content"}``
dicts) is scored on its user turns, oldest first and the last user turn at the end, cut from
the oldest side to the router's ``MAX_CHARS`` (8,000) so the newest turn always counts; system
and assistant turns are ignored. Rules' ``regex`` matches the same text.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from router_ml.errors import RouterMLError
from router_ml.loop.clients import Completion, LiteLLMClient, Pricer, as_completion
from router_ml.loop.validators import (
    JsonSchemaValid,
    JsonValid,
    NoRefusal,
    ValidationResult,
    _key_path,
    check_answer,
)

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


class AllModelsFailedError(PolicyError):
    """Every model tried for a request failed; ``decision`` holds the attempts."""

    def __init__(self, message: str, decision: "Decision"):
        super().__init__(message)
        self.decision = decision


# ---------------------------------------------------------------------------- rules


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
    (models cheapest first), the fallback model and the escalation cap."""

    rules: tuple = ()
    tiers: dict = field(default_factory=dict)
    ladder: tuple = ()
    fallback: str | None = None
    max_escalations: int = 1


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
                        int(data.get("max_escalations", 1)))


def load_rules(path) -> PolicyConfig:
    """Read and validate a rules file (.toml, .json, .yaml/.yml); see the README's example."""
    path = Path(path)
    if not path.is_file():
        raise RuleConfigError(f"rules file {path} does not exist")
    text, suffix = path.read_text(encoding="utf-8"), path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise RuleConfigError(f"{path}: use a .toml, .json, .yaml or .yml rules file")
    except (ValueError, ImportError) as e:  # TOML/JSON/YAML decode errors are ValueErrors
        if isinstance(e, RuleConfigError):
            raise
        raise RuleConfigError(f"{path}: cannot parse ({type(e).__name__}: {e})") from None
    return parse_rules(data, str(path))


# ---------------------------------------------------------------------------- decisions


@dataclass
class Step:
    """One move up: kind ``escalated`` (message: the validator's) or ``fallback`` (the error)."""

    from_model: str
    to_model: str
    kind: str
    message: str


@dataclass
class Decision:
    """Why a request went where it went. route_reason: ``rule`` or ``learned``; reason: the
    final one (``escalated`` or ``fallback`` when it moved). Costs in USD, times in ms;
    validator: ``passed``, ``failed`` or ``none`` (no validators)."""

    request_id: str
    prompt_sha256: str
    route: str
    route_reason: str
    model: str = ""
    reason: str = ""
    rule: str | None = None
    score: float | None = None
    threshold: float | None = None
    qualities: dict | None = None
    coverage: float | None = None
    steps: list = field(default_factory=list)
    validator: str = "none"
    validator_message: str = ""
    error: str | None = None
    answer: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    strongest_cost_usd: float | None = None
    decision_ms: float = 0.0
    latency_ms: float = 0.0
    time: float = 0.0
    sample: dict | None = None
    prompt: str | None = None

    def __post_init__(self):
        self.model = self.model or self.route
        self.reason = self.reason or self.route_reason

    @property
    def escalations(self) -> int:
        return sum(s.kind == "escalated" for s in self.steps)

    def to_dict(self) -> dict:
        return asdict(self)


def conversation_text(messages) -> str:
    """The text the router scores: a str as is; for OpenAI-style messages the last user
    turn (:func:`router_ml.core.prompts.prompt_text`, the router's own rule)."""
    from router_ml.core.prompts import prompt_text

    return prompt_text(messages, "messages")


def as_messages(messages) -> list[dict]:
    return [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)


# ---------------------------------------------------------------------------- the policy


class Policy:
    """Rules, then the learned router; then escalation and fallback while answering.

    router: a fitted router (``route_batch``), or None for rules only. config: a
    :class:`PolicyConfig` (from :func:`load_rules`); ``rules``, ``ladder``, ``fallback`` and
    ``max_escalations`` given here override it. ladder: models cheapest first (default: the
    config's, else ``router.models`` or (weak, strong)); a model off the ladder escalates to
    its first rung. validators: callables checking each answer (see :func:`check_answer`).
    prices: a :class:`router_ml.core.prices.PriceTable` for estimated costs (default: built-in);
    models without a price get cost None. sampler: quality sampling (see
    :class:`router_ml.loop.monitoring.QualitySampler`). log: where decisions go (``write(decision)``;
    a :class:`router_ml.loop.monitoring.DecisionLog` keeps only the text's sha256 unless asked).
    """

    def __init__(self, router=None, config: PolicyConfig | None = None, *, rules=None,
                 ladder=None, fallback=None, max_escalations=None, validators=(), prices=None,
                 sampler=None, log=None):
        config = config or PolicyConfig()
        self.router = router
        self.rules = tuple(config.rules if rules is None else rules)
        self.ladder = tuple(ladder or config.ladder or self._router_ladder(router))
        self.fallback = fallback if fallback is not None else config.fallback
        self.max_escalations = int(config.max_escalations if max_escalations is None
                                   else max_escalations)
        self.validators = tuple(validators)
        self.sampler, self.log = sampler, log
        self._pricer = Pricer(prices)

    @staticmethod
    def _router_ladder(router) -> tuple:
        if router is None:
            return ()
        models = list(getattr(router, "models", None) or ())
        if len(models) == 2:  # a pair lists the strong model first; a ladder is cheapest first
            return (models[1], models[0])
        prices = getattr(router, "prices", None) or {}
        if models and all(m in prices for m in models):
            return tuple(sorted(models, key=lambda m: (prices[m]["input"] + prices[m]["output"])))
        return tuple(models) if models else (router.weak_model, router.strong_model)

    @property
    def strongest(self) -> str | None:
        """The top rung: the model quality sampling compares with."""
        return self.ladder[-1] if self.ladder else None

    # ------------------------------------------------------------------ deciding
    def decide_batch(self, conversations: Sequence, metadata: Sequence | None = None) -> list:
        """Decisions for a batch (no model call): rules first, the rest in one router call.
        conversations: prompts (str) or OpenAI-style message lists; metadata: one dict
        (``task``, ``tags``, ``max_latency``) or None per request."""
        t0 = time.perf_counter()
        metadata = metadata if metadata is not None else [None] * len(conversations)
        if len(metadata) != len(conversations):
            raise ValueError(f"metadata holds {len(metadata)} entries for "
                             f"{len(conversations)} requests; give one per request or None")
        texts = [conversation_text(c) for c in conversations]
        out: list = [None] * len(texts)
        learned = []
        for i, (text, meta) in enumerate(zip(texts, metadata)):
            meta = meta or {}
            for rule in self.rules:
                if rule.matches(text, meta):
                    out[i] = self._new(text, rule.model, "rule", rule=rule.name)
                    break
            else:
                learned.append(i)
        if learned:
            if self.router is None:
                raise PolicyError(f"{len(learned)} requests match no rule and the policy has "
                                  "no router; add a catch-all rule or pass router=")
            for i, d in zip(learned, self.router.route_batch([texts[i] for i in learned])):
                out[i] = self._new(texts[i], d.model, "learned", score=float(d.score),
                                   threshold=None if d.threshold is None else float(d.threshold),
                                   qualities=getattr(d, "qualities", None),
                                   coverage=getattr(d, "coverage", None))
        ms = (time.perf_counter() - t0) * 1000 / max(len(texts), 1)
        for d in out:
            d.decision_ms = ms
        return out

    def decide(self, conversation, metadata: Mapping | None = None) -> Decision:
        """The decision for one request (see :meth:`decide_batch`)."""
        return self.decide_batch([conversation], [metadata])[0]

    def _new(self, text: str, model: str, why: str, **kw) -> Decision:
        return Decision(uuid.uuid4().hex, hashlib.sha256(text.encode("utf-8", "replace"))
                        .hexdigest(), model, why, time=time.time(),
                        prompt=text, **kw)

    # ------------------------------------------------------------------ answering
    def cost(self, model: str, c: Completion) -> float | None:
        """Estimated USD of one call from its token counts, None for a model without a price."""
        return self._pricer(model, c)

    def _next(self, model: str, tried: set) -> str | None:
        rungs = self.ladder[self.ladder.index(model) + 1:] if model in self.ladder else self.ladder
        return next((m for m in rungs if m not in tried), None)

    def run(self, messages, client: Callable, metadata: Mapping | None = None, *,
            validators: Sequence | None = None) -> Decision:
        """Decide, call ``client(model, messages) -> Completion | str``, validate, escalate
        and fall back; log the Decision (also when every model fails, then raise
        :class:`AllModelsFailedError`)."""
        t0 = time.perf_counter()
        d = self.decide(messages, metadata)
        msgs = as_messages(messages)
        checks = self.validators if validators is None else tuple(validators)
        tried, model, spent = set(), d.route, []
        while True:
            tried.add(model)
            try:
                c = as_completion(client(model, msgs))
            except Exception as e:  # any provider error or timeout: next rung or fallback
                nxt = self._next(model, tried)
                if nxt is None and self.fallback and self.fallback not in tried:
                    nxt = self.fallback
                err = f"{type(e).__name__}: {str(e)[:300]}"
                if nxt is None:
                    d.error, d.model, d.reason = err, model, "fallback" if d.steps else d.reason
                    self._finish(d, spent, None, t0)
                    raise AllModelsFailedError(f"request {d.request_id}: every model failed "
                                               f"({', '.join(sorted(tried))}); last error {err}",
                                               d) from e
                d.steps.append(Step(model, nxt, "fallback", err))
                d.error, model = err, nxt
                continue
            spent.append(self.cost(model, c))
            d.answer, d.model = c.text, model
            d.input_tokens += c.input_tokens
            d.output_tokens += c.output_tokens
            if not checks:
                break
            v = check_answer(checks, c.text)
            d.validator, d.validator_message = ("passed" if v.ok else "failed"), v.message
            if v.ok:
                break
            nxt = self._next(model, tried)
            if nxt is None or d.escalations >= self.max_escalations:
                break
            d.steps.append(Step(model, nxt, "escalated", v.message))
            model = nxt
        if d.steps:
            d.reason = d.steps[-1].kind
        self._finish(d, spent, c, t0)
        if self.sampler is not None and self.strongest and d.model != self.strongest:
            self.sampler.maybe_sample(d, msgs, lambda m, ms: as_completion(client(m, ms)),
                                      self.strongest, self.cost)
        if self.log is not None:
            self.log.write(d)
        return d

    def _finish(self, d: Decision, spent: list, last: Completion | None, t0: float) -> None:
        known = [s for s in spent if s is not None]
        d.cost_usd = float(sum(known)) if known or not spent else None
        if last is not None and self.strongest:
            d.strongest_cost_usd = self.cost(self.strongest, last)
        d.latency_ms = (time.perf_counter() - t0) * 1000
        if d.error is not None and last is None and self.log is not None:
            self.log.write(d)


__all__ = [
    "AllModelsFailedError", "Completion", "Decision", "JsonSchemaValid", "JsonValid",
    "LATENCY_CLASSES", "LiteLLMClient", "NoRefusal", "Policy", "PolicyConfig", "PolicyError",
    "Rule", "RuleConfigError", "Step", "ValidationResult", "check_answer", "conversation_text",
    "load_rules", "parse_rules",
]
