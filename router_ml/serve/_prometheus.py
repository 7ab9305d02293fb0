"""The endpoint's Prometheus metrics (``GET /metrics``), counted from each request's Decision.

========================================= ==========================================================
metric                                    meaning
========================================= ==========================================================
router_ml_decisions_total{model}          requests decided, by first choice (rule or router)
router_ml_decision_seconds                histogram of the time to decide (rules + router), seconds
router_ml_responses_total{model,reason}   requests answered, by the model that answered and why
                                          (rule, learned, escalated, fallback)
router_ml_escalations_total{model}        answers of ``model`` that failed a validator and moved up
router_ml_validator_failures_total{model} answers of ``model`` that failed a validator
router_ml_fallbacks_total{model}          requests moved off ``model`` by an error, a timeout or
                                          its open circuit
router_ml_upstream_errors_total{model}    calls to ``model`` that failed (timeouts included)
router_ml_timeouts_total{model}           calls to ``model`` that timed out
router_ml_failed_requests_total           requests every model failed (the client got a 502)
router_ml_circuit_state{model}            0 closed, 1 open, 2 half-open (models that have failed)
router_ml_circuit_opened_total{model}     times the circuit of ``model`` opened
router_ml_samples_dropped_total           quality samples dropped because the queue was full
========================================= ==========================================================
"""

from __future__ import annotations

from router_ml.loop.breaker import STATE_VALUES
from router_ml.loop.policy import CIRCUIT_OPEN


def _is_timeout(message: str) -> bool:
    kind, _, text = message.partition(":")
    return "Timeout" in kind or text.strip().startswith("upstream timeout")


class Metrics:
    """A registry with the endpoint's metrics; ``observe(decision)`` after each request."""

    def __init__(self, breaker=None, sampler=None):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = r = CollectorRegistry()
        by_model = ["model"]
        self.decisions = Counter("router_ml_decisions", "Requests decided, by first choice",
                                 by_model, registry=r)
        self.latency = Histogram("router_ml_decision_seconds", "Time to decide one request "
                                 "(rules + router; no upstream call)", registry=r,
                                 buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
                                          5e-2, 0.1, 0.25, 1.0))
        self.responses = Counter("router_ml_responses", "Requests answered, by model and reason",
                                 ["model", "reason"], registry=r)
        self.escalations = Counter("router_ml_escalations", "Answers that failed a validator "
                                   "and moved up the ladder", by_model, registry=r)
        self.validator_failures = Counter("router_ml_validator_failures", "Answers that failed "
                                          "a validator", by_model, registry=r)
        self.fallbacks = Counter("router_ml_fallbacks", "Requests moved off a model by an error, "
                                 "a timeout or an open circuit", by_model, registry=r)
        self.upstream_errors = Counter("router_ml_upstream_errors", "Upstream calls that failed",
                                       by_model, registry=r)
        self.timeouts = Counter("router_ml_timeouts", "Upstream calls that timed out", by_model,
                                registry=r)
        self.failed = Counter("router_ml_failed_requests", "Requests every model failed",
                              registry=r)
        r.register(_StateCollector(breaker, sampler))

    def observe(self, d, *, failed: bool = False) -> None:
        """Count one finished request's Decision (``failed``: every model failed)."""
        self.decisions.labels(model=d.route).inc()
        self.latency.observe(d.decision_ms / 1000)
        for s in d.steps:
            if s.kind == "escalated":
                self.escalations.labels(model=s.from_model).inc()
                self.validator_failures.labels(model=s.from_model).inc()
            else:
                self.fallbacks.labels(model=s.from_model).inc()
                if not s.message.startswith(CIRCUIT_OPEN):
                    self._error(s.from_model, s.message)
        if failed:
            self.failed.inc()
            self._error(d.model, d.error or "")
        else:
            self.responses.labels(model=d.model, reason=d.reason).inc()
            if d.validator == "failed":
                self.validator_failures.labels(model=d.model).inc()

    def _error(self, model: str, message: str) -> None:
        self.upstream_errors.labels(model=model).inc()
        if _is_timeout(message):
            self.timeouts.labels(model=model).inc()

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _StateCollector:
    """Circuit states and sampling drops, read when /metrics is scraped."""

    def __init__(self, breaker, sampler):
        self.breaker, self.sampler = breaker, sampler

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = GaugeMetricFamily("router_ml_circuit_state", "Circuit per model: 0 closed, "
                                  "1 open, 2 half-open", labels=["model"])
        opened = CounterMetricFamily("router_ml_circuit_opened", "Times a model's circuit "
                                     "opened", labels=["model"])
        if self.breaker is not None:
            for model, s in self.breaker.states().items():
                state.add_metric([model], STATE_VALUES[s])
            for model, n in sorted(self.breaker.opened.items()):
                opened.add_metric([model], n)
        dropped = CounterMetricFamily("router_ml_samples_dropped", "Quality samples dropped: "
                                      "the queue was full")
        dropped.add_metric([], getattr(self.sampler, "dropped", 0))
        return [state, opened, dropped]


__all__ = ["Metrics"]
