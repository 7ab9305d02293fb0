"""A circuit breaker per model: a model that keeps failing is skipped for a cool-down period.

States, as gateways ship them (Envoy's outlier detection: 5 consecutive errors, 30 s
ejection): **closed** (calls go through), **open** (after ``failures`` consecutive provider
errors or timeouts; the policy skips the model for ``cooldown`` seconds) and **half_open**
(the cool-down is over: one request may try the model; its success closes the circuit, its
failure opens it for another cool-down). A validator failure is an answer, so it counts as a
success here. Thread-safe. Written here rather than taken from a library (pybreaker wraps
the call itself, and its async support needs tornado) because the policy asks the breaker
*which* model to call before calling it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}  # the /metrics gauge's encoding


class CircuitBreaker:
    """failures: consecutive provider errors or timeouts that open a model's circuit (an int
    >= 1, default 5); cooldown: seconds an open circuit stays open (> 0, default 30).
    clock: a monotonic clock in seconds (for tests). ``opened[model]`` counts openings."""

    def __init__(self, failures: int = 5, cooldown: float = 30.0, *, clock=time.monotonic):
        if int(failures) < 1:
            raise ValueError(f"failures must be an integer >= 1, got {failures!r}")
        if not float(cooldown) > 0:
            raise ValueError(f"cooldown must be a positive number of seconds, got {cooldown!r}")
        self.failures, self.cooldown, self.clock = int(failures), float(cooldown), clock
        self._fails: Counter = Counter()
        self._opened_at: dict[str, float] = {}
        self._trial_at: dict[str, float] = {}
        self.opened: Counter = Counter()
        self._lock = threading.Lock()

    def _state(self, model: str, now: float) -> str:
        at = self._opened_at.get(model)
        if at is None:
            return CLOSED
        return OPEN if now - at < self.cooldown else HALF_OPEN

    def state(self, model: str) -> str:
        """``closed``, ``open`` or ``half_open``."""
        with self._lock:
            return self._state(model, self.clock())

    def states(self) -> dict[str, str]:
        """The state of every model the breaker has seen fail."""
        with self._lock:
            now = self.clock()
            return {m: self._state(m, now) for m in sorted(set(self._fails) | set(self._opened_at))}

    def allow(self, model: str) -> bool:
        """Whether a request may call ``model`` now. In half_open one caller gets True (the
        trial); others get False until it reports, or until a cool-down has passed."""
        with self._lock:
            now = self.clock()
            state = self._state(model, now)
            if state == CLOSED:
                return True
            if state == OPEN:
                return False
            trial = self._trial_at.get(model)
            if trial is not None and now - trial < self.cooldown:
                return False
            self._trial_at[model] = now
            return True

    def success(self, model: str) -> None:
        with self._lock:
            self._fails.pop(model, None)
            self._opened_at.pop(model, None)
            self._trial_at.pop(model, None)

    def failure(self, model: str) -> None:
        with self._lock:
            now = self.clock()
            self._fails[model] += 1
            half_open = self._state(model, now) == HALF_OPEN
            if half_open or (model not in self._opened_at and self._fails[model] >= self.failures):
                self._opened_at[model] = now
                self._trial_at.pop(model, None)
                self.opened[model] += 1


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "STATE_VALUES", "CircuitBreaker"]
