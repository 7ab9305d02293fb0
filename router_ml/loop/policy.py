"""The routing policy around the learned router: rules, escalation, fallback, and why.

Per request, in this order (:meth:`Policy.run`, or :meth:`Policy.arun` with an async client):

1. **Rules** (:func:`load_rules`, :mod:`router_ml.loop.rules`): the first rule whose conditions
   all hold picks a model or a tier. Conditions read the request metadata (``task``, ``tags``,
   ``max_latency``) and a regular expression on the routed text.
2. **Learned routing**: unmatched requests go to the router (``router.route_batch``).
3. **Escalation**: after the chosen model answers, the validators (:class:`JsonValid`,
   :class:`JsonSchemaValid`, :class:`NoRefusal`, or any callable) check the answer; on a
   failure the request goes one rung up the ladder (models cheapest first), at most
   ``max_escalations`` times.
4. **Fallback**: a provider error or timeout moves the request to the next rung, or to the
   configured ``fallback`` model when the ladder is exhausted. With a
   :class:`~router_ml.loop.breaker.CircuitBreaker`, a model whose circuit is open is skipped
   (a ``fallback`` step whose message starts with ``CircuitOpen``).

The :class:`Decision` records each step and why. Deciding (steps 1-2) makes no network call;
calling a model is the caller's ``client(model, messages)`` callable or :class:`LiteLLMClient`.
:class:`Run` is one request's way up the ladder, step by step, for callers that make the calls
themselves (the endpoint's streaming).

Which turns the router reads: an OpenAI-style conversation (a list of ``{"role", "content"}``
dicts) is scored on its user turns, newest first (:func:`router_ml.core.prompts.prompt_text`:
the last user turn, then the earlier ones, up to a bound); system and assistant turns are
ignored. Rules' ``regex`` matches the same text.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from router_ml.errors import AllModelsFailedError, NoCapableModelError
from router_ml.loop.clients import Completion, LiteLLMClient, Pricer, as_completion, redact
from router_ml.loop.rules import (
    LATENCY_CLASSES,
    Needs,
    PolicyConfig,
    PolicyError,
    Rule,
    RuleConfigError,
    load_rules,
    parse_rules,
    request_needs,
)
from router_ml.loop.validators import (
    JsonSchemaValid,
    JsonValid,
    NoRefusal,
    ValidationResult,
    check_answer,
)

OUTPUT_TOKENS = 256  # the router's assumed answer length (router_ml.core.prices.OUTPUT_TOKENS)
CIRCUIT_OPEN = "CircuitOpen"  # how a step that skipped an open circuit starts its message


class ConversationMemory:
    """The model each conversation last ended on, for the ``sticky`` and ``escalate-only``
    modes: at most ``size`` conversations, each forgotten ``ttl`` seconds after its last
    request. In this process only (each worker process keeps its own). Thread-safe."""

    def __init__(self, size: int = 100_000, ttl: float = 3600.0, *, clock=time.monotonic):
        from collections import OrderedDict

        self.size, self.ttl, self.clock = int(size), float(ttl), clock
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conversation: str) -> str | None:
        with self._lock:
            hit = self._models.get(conversation)
            if hit is None:
                return None
            if self.clock() - hit[1] > self.ttl:
                del self._models[conversation]
                return None
            return hit[0]

    def set(self, conversation: str, model: str) -> None:
        with self._lock:
            self._models[conversation] = (model, self.clock())
            self._models.move_to_end(conversation)
            while len(self._models) > self.size:
                self._models.popitem(last=False)


def conversation_id(messages, metadata: Mapping | None = None) -> str | None:
    """A conversation's id: ``metadata["conversation"]`` (the ``x-router-conversation`` header)
    when given, else a sha256 of the request's ``user`` (``metadata["user"]``), its system
    prompt and its first user turn, which every later turn of the conversation repeats.
    None for a bare string without an id."""
    meta = metadata or {}
    if meta.get("conversation"):
        return str(meta["conversation"])[:128]
    if isinstance(messages, str):
        return None
    firsts = {}
    for m in messages:
        role = m.get("role") if isinstance(m, Mapping) else None
        if role in ("system", "developer", "user") and role not in firsts:
            firsts[role] = m.get("content")
    if "user" not in firsts:
        return None
    key = json.dumps([meta.get("user"), firsts.get("system") or firsts.get("developer"),
                      firsts["user"]], sort_keys=True, default=str)
    return "h:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:32]


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
    final one (``escalated`` or ``fallback`` when it moved). coverage: 1.0 when the router
    counts the prompt as covered, 0.0 when not, None without a coverage signal. Costs in USD
    (``cost_estimated``: a call returned no token counts, so its cost is the router's estimate,
    ceil(characters / 4) input and 256 output tokens), times in ms; validator: ``passed``,
    ``failed`` or ``none`` (no validators). conversation: the conversation's id; sticky: the
    conversation mode overrode the learned choice (route_reason ``sticky``); capability: why
    the first choice could not take the request (route_reason ``capability``); task: the
    request's task type, task_source: ``given`` (its metadata) or ``detected`` (with
    task_similarity, in [-1, 1]; a detected None: no task was close enough); client: the
    name of the caller's key (the endpoint's ``--keys``), None without keys."""

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
    cost_estimated: bool = False
    decision_ms: float = 0.0
    latency_ms: float = 0.0
    time: float = 0.0
    sample: dict | None = None
    prompt: str | None = None
    conversation: str | None = None
    sticky: bool = False
    capability: str | None = None
    task: str | None = None
    task_source: str | None = None
    task_similarity: float | None = None
    client: str | None = None

    def __post_init__(self):
        self.model = self.model or self.route
        self.reason = self.reason or self.route_reason

    @property
    def escalations(self) -> int:
        return sum(s.kind == "escalated" for s in self.steps)

    def to_dict(self) -> dict:
        return asdict(self)


def conversation_text(messages) -> str:
    """The text the router scores: a str as is; for OpenAI-style messages the user turns,
    newest first (:func:`router_ml.core.prompts.prompt_text`, the router's own rule)."""
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
    models without a price get cost None. sampler: quality sampling (a
    :class:`router_ml.loop.sampling.QualitySampler`, or a
    :class:`~router_ml.loop.sampling.BackgroundSampler` that samples off the request path).
    log: where decisions go (``write(decision)``; a :class:`router_ml.loop.decision_log.DecisionLog`
    keeps only the text's sha256 unless asked). breaker: a
    :class:`router_ml.loop.breaker.CircuitBreaker` (None: every model is always tried).
    on_finish: ``on_finish(decision)``, called with each finished Decision before it is logged
    (the endpoint's client keys name the client there and count its spend).
    """

    def __init__(self, router=None, config: PolicyConfig | None = None, *, rules=None,
                 ladder=None, fallback=None, max_escalations=None, validators=(), prices=None,
                 sampler=None, log=None, breaker=None, on_finish=None):
        config = config or PolicyConfig()
        self.router = router
        self.rules = tuple(config.rules if rules is None else rules)
        self.ladder = tuple(ladder or config.ladder or self._router_ladder(router))
        self.fallback = fallback if fallback is not None else config.fallback
        self.max_escalations = int(config.max_escalations if max_escalations is None
                                   else max_escalations)
        self.validators = tuple(validators)
        self.sampler, self.log, self.breaker = sampler, log, breaker
        self.on_finish = on_finish
        self._pricer = Pricer(prices)
        self.limits = dict(config.models)
        self.conversation_mode = config.conversation
        self.memory = ConversationMemory() if config.conversation != "free" else None
        self.tasks = dict(config.tasks)
        self._detector = None  # built on the first request that needs it (see _tasks)
        self._check_models(config)

    def _check_models(self, config: PolicyConfig) -> None:
        """A model named by the rules, tiers, ladder or fallback that neither the router nor
        the rules file's ``[models]`` declares is a typo that would send requests to a model
        that does not exist: RuleConfigError."""
        if not getattr(self.router, "models", None):
            return
        known = [*self.router.models, *(m for m in config.models if m not in self.router.models)]
        named = [*((f"rules[{r.name!r}]", r.model) for r in self.rules),
                 *((f"tiers.{k}", m) for k, m in config.tiers.items()),
                 *(("ladder", m) for m in self.ladder),
                 *((("fallback", self.fallback),) if self.fallback else ())]
        bad = [f"{where}: {m!r}" for where, m in named if m not in known]
        if bad:
            raise RuleConfigError(f"unknown model in the rules: {'; '.join(bad)}. The router's "
                                  f"models are: {', '.join(self.router.models)}; declare "
                                  'others as [models."name"] in the rules file')

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
    def decide_batch(self, conversations: Sequence, metadata: Sequence | None = None, *,
                     threshold: float | None = None, needs: Sequence | None = None) -> list:
        """Decisions for a batch (no model call): rules first, the rest in one router call,
        then the conversation mode, then the models' limits.
        conversations: prompts (str) or OpenAI-style message lists; metadata: one dict
        (``task``, ``tags``, ``max_latency``, ``conversation``, ``user``) or None per request.
        threshold: a pair router's knob in [0, 1] for these requests only (the strong model
        when score >= threshold; None: the router's own). needs: a
        :class:`~router_ml.loop.rules.Needs` per request (default: from the messages alone);
        a first choice that cannot take its request moves to the next model up the ladder
        that can (route_reason ``capability``), or NoCapableModelError."""
        t0 = time.perf_counter()
        metadata = metadata if metadata is not None else [None] * len(conversations)
        if len(metadata) != len(conversations):
            raise ValueError(f"metadata holds {len(metadata)} entries for "
                             f"{len(conversations)} requests; give one per request or None")
        texts = [conversation_text(c) for c in conversations]
        metadata, found = self._tasks(texts, metadata)
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
            # a per-request knob goes to the router, which keeps its coverage fallback
            knob = {"threshold": threshold} if (
                threshold is not None and getattr(self.router, "threshold", None) is not None) else {}
            for i, d in zip(learned, self.router.route_batch([texts[i] for i in learned], **knob)):
                th = d.threshold
                out[i] = self._new(texts[i], d.model, "learned", score=float(d.score),
                                   threshold=None if th is None else float(th),
                                   qualities=getattr(d, "qualities", None) or None,
                                   coverage=_coverage(getattr(d, "covered", None)))
        needs = needs if needs is not None else [request_needs(c) for c in conversations]
        for d, conv, meta, need, (task, source, sim) in zip(out, conversations, metadata, needs,
                                                             found):
            d.task, d.task_source, d.task_similarity = task, source, sim
            d.conversation = conversation_id(conv, meta)
            if self.memory is not None and d.route_reason == "learned" and d.conversation:
                self._stick(d)
            if self.limits:
                self._fit(d, need)
        ms = (time.perf_counter() - t0) * 1000 / max(len(texts), 1)
        for d in out:
            d.decision_ms = ms
        return out

    def _tasks(self, texts, metadata) -> tuple[list, list]:
        """(metadata with each request's task, [(task, source, similarity)]): a task the
        metadata names is ``given``; otherwise, with task types, it is ``detected``."""
        found = [(m.get("task"), "given", None) if m and m.get("task") else (None, None, None)
                 for m in metadata]
        todo = [i for i, f in enumerate(found) if f[1] is None]
        if not self.tasks or not todo:
            return metadata, found
        metadata = list(metadata)
        if self._detector is None:  # shared by policies of the same task types
            self._detector = _detector(tuple(self.tasks.items()))
        for i, (task, sim) in zip(todo, self._detector.detect_batch([texts[i] for i in todo])):
            found[i] = (task, "detected", float(sim))
            if task is not None:
                metadata[i] = {**(metadata[i] or {}), "task": task}
        return metadata, found

    def _rank(self, model: str) -> int:
        return self.ladder.index(model) if model in self.ladder else -1

    def _stick(self, d: Decision) -> None:
        """The conversation mode: ``sticky`` keeps the conversation's model, ``escalate-only``
        keeps it when the learned choice is lower on the ladder."""
        before = self.memory.get(d.conversation)
        if before is None or before == d.route:
            return
        if self.conversation_mode == "sticky" or self._rank(before) > self._rank(d.route):
            d.route = d.model = before
            d.route_reason = d.reason = "sticky"
            d.sticky = True

    def capable(self, model: str, needs: Needs) -> str | None:
        """Why ``model`` cannot take a request with ``needs`` (None: it can)."""
        limits = self.limits.get(model)
        return None if limits is None else limits.lacks(needs)

    def _fit(self, d: Decision, needs: Needs) -> None:
        why = self.capable(d.route, needs)
        if why is None:
            return
        rungs = self.ladder
        up = rungs[rungs.index(d.route) + 1:] if d.route in rungs else rungs
        known = getattr(self.router, "models", None) or ()
        others = [m for m in (*up, *rungs, self.fallback, *known) if m and m != d.route]
        for m in dict.fromkeys(others):
            if self.capable(m, needs) is None:
                d.capability = f"{d.route}: {why}"
                d.route = d.model = m
                d.route_reason = d.reason = "capability"
                return
        raise NoCapableModelError(f"no model can take this request: {d.route}: {why}; "
                                  f"every other model lacks it too")

    def decide(self, conversation, metadata: Mapping | None = None, *,
               threshold: float | None = None) -> Decision:
        """The decision for one request (see :meth:`decide_batch`)."""
        return self.decide_batch([conversation], [metadata], threshold=threshold)[0]

    def _new(self, text: str, model: str, why: str, **kw) -> Decision:
        return Decision(uuid.uuid4().hex, hashlib.sha256(text.encode("utf-8", "replace"))
                        .hexdigest(), model, why, time=time.time(),
                        prompt=text, **kw)

    # ------------------------------------------------------------------ answering
    def cost(self, model: str, c: Completion) -> float | None:
        """Estimated USD of one call from its token counts, None for a model without a price."""
        return self._pricer(model, c)

    def estimate(self, model: str, c: Completion, text: str) -> tuple[float | None, bool]:
        """(USD, estimated) of one call: from its token counts, or, when the client gave none,
        the router's estimate for the routed ``text`` (ceil(characters / 4) input tokens, 256
        output tokens; estimated True). USD is None for a model without a price."""
        if c.input_tokens or c.output_tokens:
            return self._pricer(model, c), False
        guess = Completion(c.text, math.ceil(len(text) / 4), OUTPUT_TOKENS)
        return self._pricer(model, guess), True

    def start(self, messages, metadata: Mapping | None = None, *,
              validators: Sequence | None = None, threshold: float | None = None,
              params: Mapping | None = None) -> "Run":
        """Decide, and return the :class:`Run` that answers the request step by step.
        params: the request's OpenAI parameters (``tools``, ``response_format``,
        ``max_tokens``), for the models' limits."""
        t0 = time.perf_counter()
        needs = request_needs(messages, params)
        d = self.decide_batch([messages], [metadata], threshold=threshold, needs=[needs])[0]
        checks = self.validators if validators is None else tuple(validators)
        return Run(self, d, as_messages(messages), checks, t0, needs)

    def run(self, messages, client: Callable, metadata: Mapping | None = None, *,
            validators: Sequence | None = None, threshold: float | None = None,
            params: Mapping | None = None) -> Decision:
        """Decide, call ``client(model, messages) -> Completion | str``, validate, escalate
        and fall back; log the Decision (also when every model fails, then raise
        :class:`AllModelsFailedError`)."""
        run = self.start(messages, metadata, validators=validators, threshold=threshold,
                         params=params)
        while run.model is not None:
            try:
                c = as_completion(client(run.model, run.messages))
            except Exception as e:  # any provider error or timeout: next rung or fallback
                run.failed(e)
                continue
            run.answered(c)
        return run.finish(lambda m, ms: as_completion(client(m, ms)))

    async def arun(self, messages, client: Callable, metadata: Mapping | None = None, *,
                   validators: Sequence | None = None, threshold: float | None = None,
                   params: Mapping | None = None) -> Decision:
        """:meth:`run` with an async ``client(model, messages)`` (awaited). Quality sampling
        then needs a sampler with its own client (a ``BackgroundSampler``)."""
        if self.sampler is not None and getattr(self.sampler, "client", None) is None:
            raise PolicyError("arun samples off the request path: give the policy a "
                              "router_ml.loop.sampling.BackgroundSampler with a client")
        run = self.start(messages, metadata, validators=validators, threshold=threshold,
                         params=params)
        while run.model is not None:
            try:
                c = as_completion(await client(run.model, run.messages))
            except Exception as e:
                run.failed(e)
                continue
            run.answered(c)
        return run.finish()


class Run:
    """One request on its way up the ladder. ``model`` is the model to call next (None when
    done); report each call with :meth:`answered` or :meth:`failed`, then :meth:`finish`.

        run = policy.start(messages)
        while run.model is not None:
            try:
                c = client(run.model, run.messages)
            except Exception as e:
                run.failed(e)      # raises AllModelsFailedError when nothing is left
                continue
            run.answered(c)        # validates; may move run.model up a rung
        decision = run.finish()
    """

    def __init__(self, policy: Policy, decision: Decision, messages: list, checks: tuple,
                 t0: float, needs: Needs | None = None):
        self.policy, self.decision, self.messages, self.checks = policy, decision, messages, checks
        self.needs = needs or Needs()
        self._t0, self._tried, self._spent = t0, set(), []
        self._last: Completion | None = None
        self.model: str | None = decision.route
        breaker = policy.breaker
        if breaker is not None and not breaker.allow(decision.route):
            nxt = self._pick(self._after(decision.route, errors=True))
            if nxt is not None:
                self._tried.add(decision.route)
                decision.steps.append(Step(decision.route, nxt, "fallback",
                                           f"{CIRCUIT_OPEN}: {decision.route} failed "
                                           f"{breaker.failures} times in a row; skipped for "
                                           f"{breaker.cooldown:g} s"))
                decision.reason, self.model = "fallback", nxt

    def _after(self, model: str, *, errors: bool) -> list:
        ladder = self.policy.ladder
        rungs = ladder[ladder.index(model) + 1:] if model in ladder else ladder
        out = [m for m in rungs if m not in self._tried and m != model]
        fb = self.policy.fallback
        if errors and fb and fb not in self._tried and fb != model and fb not in out:
            out.append(fb)
        # a model that cannot take the request is no rung for it
        return [m for m in out if self.policy.capable(m, self.needs) is None]

    def _pick(self, candidates: list) -> str | None:
        """The first candidate whose circuit lets it through; the first one at all when every
        circuit is open (trying beats failing without a try)."""
        breaker = self.policy.breaker
        for m in candidates:
            if breaker is None or breaker.allow(m):
                return m
        return candidates[0] if candidates else None

    def failed(self, error: BaseException) -> None:
        """The call to ``model`` raised (a provider error or a timeout): move on to the next
        rung or the fallback model, or, when none is left, finish the Decision (logged) and
        raise :class:`AllModelsFailedError`."""
        d, model = self.decision, self.model
        self._tried.add(model)
        # an error that says it is not the model's fault (``counts`` False: the request's own
        # 4xx, a timeout the client shortened, an oversized answer) leaves the breaker alone
        if self.policy.breaker is not None and getattr(error, "counts", True):
            self.policy.breaker.failure(model)
        err = _error_text(error)
        nxt = self._pick(self._after(model, errors=True))
        if nxt is None:
            d.error, d.model = err, model
            d.reason = "fallback" if d.steps else d.reason
            self.model = None
            self.finish()
            raise AllModelsFailedError(f"request {d.request_id}: every model failed "
                                       f"({', '.join(sorted(self._tried))}); last error {err}",
                                       d) from error
        d.steps.append(Step(model, nxt, "fallback", err))
        d.error, d.reason, self.model = err, "fallback", nxt

    def answered(self, c: Completion | str) -> bool:
        """``model`` answered ``c``: check it. True when the request is done; False when the
        answer failed a validator and ``model`` moved one rung up."""
        c = as_completion(c)
        d, model = self.decision, self.model
        self._tried.add(model)
        if self.policy.breaker is not None:
            self.policy.breaker.success(model)
        usd, estimated = self.policy.estimate(model, c, d.prompt or "")
        self._spent.append(usd)
        d.cost_estimated = d.cost_estimated or estimated
        d.answer, d.model, self._last = c.text, model, c
        d.input_tokens += c.input_tokens
        d.output_tokens += c.output_tokens
        self.model = None
        if not self.checks:
            return True
        v = check_answer(self.checks, c.text)
        d.validator, d.validator_message = ("passed" if v.ok else "failed"), v.message
        if v.ok:
            return True
        nxt = self._pick(self._after(model, errors=False))
        if nxt is None or d.escalations >= self.policy.max_escalations:
            return True
        d.steps.append(Step(model, nxt, "escalated", v.message))
        d.reason, self.model = "escalated", nxt
        return False

    def broke(self, error: BaseException) -> None:
        """The answer of ``decision.model`` broke off after it began to stream (too late to move
        on): record the error; the breaker counts it as a failure."""
        self.decision.error = _error_text(error)
        if self.policy.breaker is not None and getattr(error, "counts", True):
            self.policy.breaker.failure(self.decision.model)

    def finish(self, call: Callable | None = None) -> Decision:
        """Costs and latency on the Decision, quality sampling (``call(model, messages) ->
        Completion`` for a sampler without its own client), the log. Returns the Decision."""
        d, p = self.decision, self.policy
        if d.steps:
            d.reason = d.steps[-1].kind
        known = [s for s in self._spent if s is not None]
        d.cost_usd = float(sum(known)) if known or not self._spent else None
        if self._last is not None and p.strongest:
            d.strongest_cost_usd = p.estimate(p.strongest, self._last, d.prompt or "")[0]
        d.latency_ms = (time.perf_counter() - self._t0) * 1000
        if (self._last is not None and p.sampler is not None and p.strongest
                and d.model != p.strongest):
            p.sampler.maybe_sample(d, self.messages, call, p.strongest,
                                   lambda m, c: p.estimate(m, c, d.prompt or "")[0])
        if p.memory is not None and d.conversation and d.error is None and self._last is not None:
            p.memory.set(d.conversation, d.model)
        if p.on_finish is not None:
            p.on_finish(d)
        if p.log is not None:
            p.log.write(d)
        return d


@functools.lru_cache(maxsize=8)
def _detector(tasks: tuple):
    """One TaskDetector per set of task types (its examples are encoded once per process)."""
    from router_ml.loop.tasks import TaskDetector

    return TaskDetector(dict(tasks))


def _error_text(error: BaseException) -> str:
    return redact(f"{type(error).__name__}: {str(error)[:300]}")


def _coverage(covered) -> float | None:
    return None if covered is None else float(bool(covered))


__all__ = [
    "AllModelsFailedError", "Completion", "ConversationMemory", "Decision", "JsonSchemaValid",
    "JsonValid", "LATENCY_CLASSES", "LiteLLMClient", "NoCapableModelError", "NoRefusal",
    "Policy", "PolicyConfig", "PolicyError", "Rule", "RuleConfigError", "Run", "Step",
    "ValidationResult", "check_answer", "conversation_id", "conversation_text", "load_rules",
    "parse_rules",
]
