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

import hashlib
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from router_ml.loop.clients import Completion, LiteLLMClient, Pricer, as_completion, redact
from router_ml.loop.rules import (
    LATENCY_CLASSES,
    PolicyConfig,
    PolicyError,
    Rule,
    RuleConfigError,
    load_rules,
    parse_rules,
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


class AllModelsFailedError(PolicyError):
    """Every model tried for a request failed; ``decision`` holds the attempts."""

    def __init__(self, message: str, decision: "Decision"):
        super().__init__(message)
        self.decision = decision


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
    ``failed`` or ``none`` (no validators)."""

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
    """

    def __init__(self, router=None, config: PolicyConfig | None = None, *, rules=None,
                 ladder=None, fallback=None, max_escalations=None, validators=(), prices=None,
                 sampler=None, log=None, breaker=None):
        config = config or PolicyConfig()
        self.router = router
        self.rules = tuple(config.rules if rules is None else rules)
        self.ladder = tuple(ladder or config.ladder or self._router_ladder(router))
        self.fallback = fallback if fallback is not None else config.fallback
        self.max_escalations = int(config.max_escalations if max_escalations is None
                                   else max_escalations)
        self.validators = tuple(validators)
        self.sampler, self.log, self.breaker = sampler, log, breaker
        self._pricer = Pricer(prices)
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
                     threshold: float | None = None) -> list:
        """Decisions for a batch (no model call): rules first, the rest in one router call.
        conversations: prompts (str) or OpenAI-style message lists; metadata: one dict
        (``task``, ``tags``, ``max_latency``) or None per request. threshold: a pair router's
        knob in [0, 1] for these requests only (the strong model when score >= threshold;
        None: the router's own)."""
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
                model, th = d.model, d.threshold
                if threshold is not None and d.threshold is not None:
                    th = threshold
                    model = self.router.strong_model if d.score >= th else self.router.weak_model
                out[i] = self._new(texts[i], model, "learned", score=float(d.score),
                                   threshold=None if th is None else float(th),
                                   qualities=getattr(d, "qualities", None) or None,
                                   coverage=_coverage(getattr(d, "covered", None)))
        ms = (time.perf_counter() - t0) * 1000 / max(len(texts), 1)
        for d in out:
            d.decision_ms = ms
        return out

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
              validators: Sequence | None = None, threshold: float | None = None) -> "Run":
        """Decide, and return the :class:`Run` that answers the request step by step."""
        t0 = time.perf_counter()
        d = self.decide(messages, metadata, threshold=threshold)
        checks = self.validators if validators is None else tuple(validators)
        return Run(self, d, as_messages(messages), checks, t0)

    def run(self, messages, client: Callable, metadata: Mapping | None = None, *,
            validators: Sequence | None = None, threshold: float | None = None) -> Decision:
        """Decide, call ``client(model, messages) -> Completion | str``, validate, escalate
        and fall back; log the Decision (also when every model fails, then raise
        :class:`AllModelsFailedError`)."""
        run = self.start(messages, metadata, validators=validators, threshold=threshold)
        while run.model is not None:
            try:
                c = as_completion(client(run.model, run.messages))
            except Exception as e:  # any provider error or timeout: next rung or fallback
                run.failed(e)
                continue
            run.answered(c)
        return run.finish(lambda m, ms: as_completion(client(m, ms)))

    async def arun(self, messages, client: Callable, metadata: Mapping | None = None, *,
                   validators: Sequence | None = None,
                   threshold: float | None = None) -> Decision:
        """:meth:`run` with an async ``client(model, messages)`` (awaited). Quality sampling
        then needs a sampler with its own client (a ``BackgroundSampler``)."""
        if self.sampler is not None and getattr(self.sampler, "client", None) is None:
            raise PolicyError("arun samples off the request path: give the policy a "
                              "router_ml.loop.sampling.BackgroundSampler with a client")
        run = self.start(messages, metadata, validators=validators, threshold=threshold)
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
                 t0: float):
        self.policy, self.decision, self.messages, self.checks = policy, decision, messages, checks
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
        return out

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
        if p.log is not None:
            p.log.write(d)
        return d


def _error_text(error: BaseException) -> str:
    return redact(f"{type(error).__name__}: {str(error)[:300]}")


def _coverage(covered) -> float | None:
    return None if covered is None else float(bool(covered))


__all__ = [
    "AllModelsFailedError", "Completion", "Decision", "JsonSchemaValid", "JsonValid",
    "LATENCY_CLASSES", "LiteLLMClient", "NoRefusal", "Policy", "PolicyConfig", "PolicyError",
    "Rule", "RuleConfigError", "Run", "Step", "ValidationResult", "check_answer",
    "conversation_text", "load_rules", "parse_rules",
]
