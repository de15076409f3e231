"""The engine core: a process of its own whose main thread owns the backend and steps it.

A worker is two processes. The front (app.py: HTTP, tokenization, decoders' views) never runs the model;
the core loads the model, and its main thread loops: take the front's messages, step the backend, send the
step's outputs back. Why a process and its main thread: on these CPUs (MKL, GNU OpenMP) torch runs about 3x
slower per matmul while a second live thread of the same process has used OpenMP (`benchmarks/threads.py`
shows it), so the step loop must be the only thread of its process that computes; and no tokenization,
JSON or slow client can stall a step, nor a long step the HTTP API (vLLM's engine-core split, for the
same reasons).

Messages, one pickled tuple each over a pipe:
- front -> core: ("submit", [EngineRequest, ...]) all choices of one request; ("abort", group_id);
  ("stop", None).
- core -> front: ("ready", ModelInfo) once, or ("failed", message) if the model could not be loaded;
  then ("outputs", [StepOutput | GroupFailure, ...], EngineStats) after every step and after every batch
  of messages it handled.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection

from ..config import Settings
from .backend import Backend, EngineRequest, EngineStats, GroupFailure, StepOutput

log = logging.getLogger(__name__)

ENGINE_HOOK = "COUNTERPOINT_ENGINE_HOOK"  # "module:function" applied to the backend at start (fault-injection tests)


class GenerationFailed(RuntimeError):
    """A group ended with a GroupFailure; str() is its client-safe message."""


# ---- the core process -------------------------------------------------------------------------------

def core_main(settings: Settings, conn: Connection) -> None:
    """Entry point of the engine core process (spawned by `EngineClient.start`)."""
    if sys.platform == "linux":  # die with the front, however it ends
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when to stop
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from .factory import build_backend
    torch.set_num_threads(settings.threads or os.cpu_count() or 1)
    try:
        backend, info = build_backend(settings)
    except BaseException as exc:
        log.exception("the engine core could not start")
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    hook = os.environ.get(ENGINE_HOOK)
    if hook:  # tests: wrap the backend (slow or failing steps) inside the core process
        module, _, name = hook.partition(":")
        backend = getattr(importlib.import_module(module), name)(backend)
    conn.send(("ready", info))
    EngineCore(backend, conn).run()


class EngineCore:
    """The step loop: messages in between steps, outputs out after each step."""

    def __init__(self, backend: Backend, conn: Connection):
        self.backend = backend
        self.conn = conn

    def run(self) -> None:
        while True:
            handled, results = self._receive(block=not self.backend.has_work)
            if handled is None:
                return
            if self.backend.has_work:
                results += self._step()
            if handled or results:
                self.conn.send(("outputs", results, self.backend.stats()))

    def _receive(self, block: bool) -> tuple[int | None, list[StepOutput | GroupFailure]]:
        """Handle every waiting message (waiting for the first one when idle); None when told to stop."""
        handled, results = 0, []
        timeout = None if block else 0
        while self.conn.poll(timeout):
            timeout = 0
            kind, payload = self.conn.recv()
            handled += 1
            if kind == "stop":
                return None, results
            if kind == "abort":
                self.backend.abort(payload)
            elif kind == "submit":
                results += self._submit(payload)
        return handled, results

    def _submit(self, requests: list[EngineRequest]) -> list[GroupFailure]:
        for i, r in enumerate(requests):
            try:
                self.backend.submit(r)
            except Exception:  # one bad request must not stop the loop: fail all its choices
                log.exception("submitting %s failed", r.group_id)
                for done in requests[:i]:
                    self.backend.abort(done.group_id)
                return [GroupFailure(x.group_id, "the request could not be started") for x in requests]
        return []

    def _step(self) -> list[StepOutput | GroupFailure]:
        try:
            return self.backend.step()
        except Exception:  # isolate the groups that broke the step; the others go on
            log.exception("engine step failed; isolating the failing request")
            return self.backend.recover()


# ---- the front's handle on it -----------------------------------------------------------------------

class EngineClient:
    """The front's side: starts the core, sends requests and aborts, routes outputs to per-choice queues.

    A reader thread blocks on the pipe and hands each message to the event loop; a writer thread sends, so a
    large request never blocks the event loop while the core is busy stepping.
    """

    def __init__(self, process: mp.process.BaseProcess, conn: Connection, info):
        self.process = process
        self.conn = conn
        self.info = info  # the ModelInfo the core reported
        self.stats = EngineStats()  # the latest the core sent
        self.dead = False  # the core process exited
        self.stopping = False  # we asked it to
        self._queues: dict[str, asyncio.Queue] = {}
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def start(cls, settings: Settings, timeout: float = 1800.0) -> EngineClient:
        """Spawn the core and wait until its model is loaded (raises RuntimeError if it cannot start)."""
        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        process = ctx.Process(target=core_main, args=(settings, child), name="counterpoint-engine", daemon=True)
        process.start()
        child.close()
        waited = 0.0
        while not conn.poll(1.0):
            waited += 1.0
            if not process.is_alive() or waited > timeout:
                process.kill()
                raise RuntimeError(f"the engine core exited while starting (code {process.exitcode})")
        kind, payload = conn.recv()
        if kind != "ready":
            process.join(timeout=10)
            raise RuntimeError(f"the engine core could not start: {payload}")
        return cls(process, conn, payload)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start delivering to `loop` (the app's lifespan)."""
        self._loop = loop
        threading.Thread(target=self._read, name="engine-reader", daemon=True).start()
        threading.Thread(target=self._write, name="engine-writer", daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        if self._loop is None:  # never attached: no writer thread
            self.conn.send(("stop", None))
        else:
            self._outbox.put(("stop", None))
        self.process.join(timeout=15)
        if self.process.is_alive():
            self.process.kill()

    async def generate(self, requests: list[EngineRequest]) -> AsyncIterator[StepOutput]:
        """Run all choices of one request; yield their outputs until each finishes. Leaving early (client
        gone, deadline, a failure) aborts the choices still running, which frees their blocks."""
        queues: asyncio.Queue = asyncio.Queue()
        pending = {r.group_id for r in requests}
        for gid in pending:
            self._queues[gid] = queues
        if self.dead:
            raise GenerationFailed("the engine is not running")
        self._outbox.put(("submit", requests))
        try:
            while pending:
                item = await queues.get()
                if isinstance(item, GroupFailure):
                    raise GenerationFailed(item.message)
                yield item
                if item.finish_reason is not None:
                    pending.discard(item.group_id)
        finally:
            for gid in [r.group_id for r in requests]:
                self._queues.pop(gid, None)
            for gid in pending:
                self._outbox.put(("abort", gid))

    # ---- threads ----------------------------------------------------------------------------------

    def _write(self) -> None:
        while True:
            message = self._outbox.get()
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return
            if message[0] == "stop":
                return

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self._loop.call_soon_threadsafe(self._core_died)
                return
            self._loop.call_soon_threadsafe(self._deliver, message)

    def _deliver(self, message: tuple) -> None:
        _, results, self.stats = message
        for out in results:
            q = self._queues.get(out.group_id)
            if q is not None:
                q.put_nowait(out)

    def _core_died(self) -> None:
        if not self.dead and not self.stopping:
            log.error("the engine core exited (code %s)", self.process.exitcode)
        self.dead = True
        for gid, q in list(self._queues.items()):
            q.put_nowait(GroupFailure(gid, "the engine stopped"))
