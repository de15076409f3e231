"""Watching one request's worker events on their way to the client: metrics, then one outcome log row.

`Observation.watch` wraps each worker stream without changing it. When the last stream of the request
ends (finished, failed or abandoned by the client), the observation is finished once: Prometheus metrics
are updated and the outcome is queued for the log. Nothing here waits on the disk.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import contextmanager

from ..errors import APIError
from ..outcomes import Outcome, OutcomeLog
from ..worker_protocol import DecodingSpec, WorkerEvent
from . import metrics


class Observation:
    def __init__(self, request_id: str, model: str, log: OutcomeLog | None):
        self.started = time.monotonic()
        self.outcome = Outcome(id=request_id, model=model, method="plain", latency=0.0, finish_reason="cancelled")
        self.log = log
        self.num_open = 0
        self.last_token: dict[tuple[int, int], float] = {}  # (stream, choice) -> time of its last token
        self.diagnostics: dict[int, object] = {}
        self.num_streamed = 0  # generated tokens seen in deltas: the count when no `done` arrives (cancelled)
        self.num_done = 0
        self.is_finished = False
        metrics.IN_FLIGHT.inc()

    def resolved(self, spec: DecodingSpec) -> None:
        o = self.outcome
        o.method, o.experiment, o.arm, o.decoding = spec.method, spec.experiment, spec.arm, spec.model_dump()

    @contextmanager
    def failures(self):
        """Errors raised before streaming (400, 404, 429, 503 ...) end the observation with their status."""
        try:
            yield self
        except Exception as exc:
            self.outcome.status = exc.status if isinstance(exc, APIError) else 500
            self.outcome.finish_reason = "error"
            self.finish()
            raise

    def watch(self, events: AsyncIterator[WorkerEvent], stream: int = 0) -> AsyncIterator[WorkerEvent]:
        """Wrap stream number `stream`; counted as open from now, so no early stream finishes the request."""
        self.num_open += 1
        return self._watch(events, stream)

    async def _watch(self, events: AsyncIterator[WorkerEvent], stream: int) -> AsyncIterator[WorkerEvent]:
        try:
            async for ev in events:
                self._see(ev, stream)
                yield ev
        finally:
            self.num_open -= 1
            if self.num_open == 0:
                self.finish()

    def _see(self, ev: WorkerEvent, stream: int) -> None:
        now, o, method = time.monotonic(), self.outcome, self.outcome.method
        if ev.type == "start":
            o.prompt_tokens += ev.prompt_tokens
        elif ev.type == "delta":
            if ev.token_ids:
                self.num_streamed += len(ev.token_ids)
                key = (stream, ev.index)
                if o.ttft is None:
                    o.ttft = now - self.started
                    metrics.TTFT.labels(method).observe(o.ttft)
                elif key in self.last_token:
                    metrics.INTER_TOKEN.labels(method).observe(now - self.last_token[key])
                self.last_token[key] = now
            if ev.finish_reason:
                o.finish_reason = ev.finish_reason
            if getattr(ev, "diagnostics", None) is not None:
                self.diagnostics[ev.index] = ev.diagnostics
        elif ev.type == "done":
            self.num_done += 1
            o.completion_tokens += ev.completion_tokens
            if ev.decoding is not None:
                o.decoding = ev.decoding.model_dump()
        elif ev.type == "error":
            o.status, o.finish_reason = ev.status, "error"

    def finish(self) -> None:
        if self.is_finished:
            return
        self.is_finished = True
        o = self.outcome
        o.latency = time.monotonic() - self.started
        if self.num_done == 0:
            o.completion_tokens = self.num_streamed
        o.diagnostics = self.diagnostics or (o.decoding or {}).get("params", {}).get("diagnostics")
        metrics.IN_FLIGHT.dec()
        metrics.REQUESTS.labels(o.model, o.method, o.arm or "", str(o.status)).inc()
        if o.status == 200:
            metrics.E2E.labels(o.method).observe(o.latency)
            metrics.PROMPT_TOKENS.labels(o.model).inc(o.prompt_tokens)
            metrics.GENERATION_TOKENS.labels(o.model).inc(o.completion_tokens)
        if self.log is not None:
            self.log.record(o)
