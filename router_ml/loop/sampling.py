"""Quality sampling: a share of the requests answered below the strongest model is sent to the
strongest one too, and a judge says which answer is better.

:class:`QualitySampler` does it inline, before the request's Decision is logged (the Python
loop). :class:`BackgroundSampler` does it off the request path: the draw happens on the
request, the strongest model's call and the judge run in a worker thread fed by a bounded
queue, and the verdict is written onto the already logged row
(:meth:`router_ml.loop.decision_log.DecisionLog.update`). A full queue drops the sample and
counts it (``dropped``); the request never waits for sampling.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time

from router_ml.errors import VerdictError

logger = logging.getLogger(__name__)


class QualitySampler:
    """Sends a share ``rate`` (default 3 %) of the requests answered below the strongest model
    to the strongest one too, and asks ``judge(messages, cheap_answer, strong_answer)`` which
    is better: it returns 1 (strong better), 0.5 (tie) or 0, or a dict with ``strong_better``,
    ``verdict`` and ``cost_usd`` (e.g. :class:`router_ml.loop.labeling.PairwiseJudge`). A failing
    call or judge is recorded on the Decision, never raised: a reply without a verdict
    (:class:`~router_ml.errors.VerdictError`) as ``judge = "unparsed: ..."``, anything else as
    ``"error: ..."``. seed: for a reproducible draw."""

    client = None  # no client of its own: it calls models through the request's client

    def __init__(self, judge, *, rate: float = 0.03, seed: int | None = None):
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"rate must be a fraction in [0, 1], got {rate!r}")
        self.judge, self.rate = judge, float(rate)
        self._rng, self._lock = random.Random(seed), threading.Lock()

    def draw(self) -> bool:
        """Whether this request is sampled (probability ``rate``)."""
        with self._lock:
            return self._rng.random() < self.rate

    def sample(self, answer: str, messages, call, strongest: str, cost) -> dict:
        """The sample of one request: {model, answer, strong_better, judge, cost_usd}.
        call(model, messages) -> Completion; cost(model, completion) -> USD or None."""
        s = {"model": strongest}
        try:
            c = call(strongest, messages)
            s["answer"], s["cost_usd"] = c.text, cost(strongest, c)
            v = self.judge(messages, answer or "", c.text)
            v = v if isinstance(v, dict) else {"strong_better": float(v)}
            s["strong_better"] = v.get("strong_better")
            s["judge"] = str(v.get("verdict", s["strong_better"]))
            if v.get("cost_usd") is not None:
                s["cost_usd"] = (s["cost_usd"] or 0.0) + v["cost_usd"]
        except VerdictError as e:
            s["judge"] = f"unparsed: {str(e)[:200]}"
        except Exception as e:  # sampling must never break the request it rides on
            s["judge"] = f"error: {type(e).__name__}: {str(e)[:200]}"
        return s

    def maybe_sample(self, decision, messages, call, strongest: str, cost) -> bool:
        """Draw; when drawn, sample now and put the result on ``decision.sample``."""
        if not self.draw():
            return False
        decision.sample = self.sample(decision.answer, messages, call, strongest, cost)
        return True


class BackgroundSampler:
    """Quality sampling off the request path. sampler: a :class:`QualitySampler` (its rate,
    draw and judge); client: ``client(model, messages) -> Completion | str``, called from the
    worker thread; log: the DecisionLog the verdicts go to (``update``); max_queue: samples
    waiting at most (an int >= 1; more are dropped and counted in ``dropped``)."""

    def __init__(self, sampler: QualitySampler, client, log, *, max_queue: int = 64):
        if int(max_queue) < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        self.sampler, self.client, self.log = sampler, client, log
        self.rate = sampler.rate
        self._queue: queue.Queue = queue.Queue(int(max_queue))
        self.dropped = self.done = 0
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="quality-sampler", daemon=True)
        self._worker.start()

    def maybe_sample(self, decision, messages, call, strongest: str, cost) -> bool:
        """Draw; when drawn, queue the sample (or drop it when the queue is full) and mark the
        Decision as sampled ({"model": strongest}) so its row says a verdict is coming."""
        if self._closed or not self.sampler.draw():
            return False
        try:
            self._queue.put_nowait((decision.request_id, decision.answer, list(messages),
                                    strongest, cost))
        except queue.Full:
            self.dropped += 1
            return False
        decision.sample = {"model": strongest}
        return True

    def _work(self) -> None:
        from router_ml.loop.clients import as_completion

        def call(m, ms):
            return as_completion(self.client(m, ms))

        while True:
            item = self._queue.get()
            if item is None:
                return
            request_id, answer, messages, strongest, cost = item
            s = self.sampler.sample(answer, messages, call, strongest, cost)
            self.log.update(request_id, {"sample_answer": s.get("answer"),
                                         "strong_better": s.get("strong_better"),
                                         "judge": s.get("judge"),
                                         "sample_cost_usd": s.get("cost_usd")})
            self.done += 1

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 30.0) -> int:
        """Stop taking samples and finish the queued ones for at most ``timeout`` seconds.
        Returns how many were left unjudged (their rows stay sampled, without a verdict)."""
        self._closed = True
        deadline, sentinel = time.monotonic() + timeout, False
        while self._worker.is_alive() and not sentinel:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                sentinel = True
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._worker.join(max(0.0, deadline - time.monotonic()))
        if not self._worker.is_alive():
            return 0
        return self._queue.qsize() - int(sentinel) + 1


__all__ = ["BackgroundSampler", "QualitySampler"]
