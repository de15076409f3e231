"""Runs the engine on its own thread and bridges it to asyncio.

Requests and aborts enter through a thread-safe inbox that the engine thread drains before each step
(blocking when idle); each step's outputs go back to the event loop in one `call_soon_threadsafe`, where
they land in one asyncio queue per group.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .torch.engine import Engine, StepOutput

log = logging.getLogger(__name__)


@dataclass
class EngineFailure:
    message: str  # written by us (never an exception's text), so it is safe to show the client


class GenerationFailed(RuntimeError):
    """A group ended with an EngineFailure; str() is its client-safe message."""


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._queues: dict[str, asyncio.Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._inbox.put(lambda: None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def num_running(self) -> int:
        return len(self.engine.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.engine.scheduler.waiting)

    async def generate(self, group_id: str, add: Callable[[Engine], object]) -> AsyncIterator[StepOutput]:
        """Queue a group (`add` runs on the engine thread) and yield its outputs until it finishes.

        Leaving the iteration early (client disconnect, cancellation) aborts the group and frees its blocks.
        """
        q: asyncio.Queue = asyncio.Queue()
        self._queues[group_id] = q
        self._inbox.put(lambda: self._add(group_id, add))
        finished = False
        try:
            while True:
                item = await q.get()
                if isinstance(item, EngineFailure):
                    raise GenerationFailed(item.message)
                yield item
                if item.finish_reason is not None:
                    finished = True
                    return
        finally:
            self._queues.pop(group_id, None)
            if not finished:
                self._inbox.put(lambda: self.engine.abort(group_id))

    # ---- engine thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._drain(block=not self.engine.has_work)
            if self._stopped.is_set() or not self.engine.has_work:
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # a broken step must not kill the worker: fail what was running
                log.exception("engine step failed")
                self._fail_all(f"engine error: {type(exc).__name__}")
                continue
            if outputs:
                self._loop.call_soon_threadsafe(self._deliver, outputs)

    def _add(self, group_id: str, add: Callable[[Engine], object]) -> None:
        try:
            add(self.engine)
        except Exception as exc:
            log.exception("adding %s failed", group_id)
            self._loop.call_soon_threadsafe(self._deliver_failure, group_id,
                                            f"the request could not be started ({type(exc).__name__})")

    def _drain(self, block: bool) -> None:
        try:
            task = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                task()
            except Exception:
                log.exception("engine request failed")
            try:
                task = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _fail_all(self, message: str) -> None:
        for group_id in list(self.engine.groups):
            self.engine.abort(group_id)
            self._loop.call_soon_threadsafe(self._deliver_failure, group_id, message)

    # ---- event loop -----------------------------------------------------------------------------

    def _deliver(self, outputs: list[StepOutput]) -> None:
        for out in outputs:
            q = self._queues.get(out.group_id)
            if q is not None:
                q.put_nowait(out)

    def _deliver_failure(self, group_id: str, message: str) -> None:
        q = self._queues.get(group_id)
        if q is not None:
            q.put_nowait(EngineFailure(message))
