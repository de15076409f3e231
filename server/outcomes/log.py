"""The outcome log: one row per completion, and the feedback stored against it.

Writes never happen on the request path. `record` puts the row on a queue and returns; one writer thread
owns the database connection and commits in batches. `close` (the gateway's lifespan shutdown) drains the
queue before it returns, so a clean shutdown loses nothing. Feedback goes through the same queue, after
the completion it refers to, and its caller awaits the answer (found or not).

Backends (see `db`): SQLite, a path or `sqlite:///path`; PostgreSQL, a `postgresql://` URL, when several
gateways share one log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

from .db import Database

log = logging.getLogger(__name__)

@dataclass
class Outcome:
    """One completion as the log stores it."""

    id: str  # the response id clients see (chatcmpl-..., cmpl-...)
    model: str
    method: str
    latency: float  # seconds from request to the last event
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None  # seconds to the first generated token; None if none came
    finish_reason: str | None = None  # of the last choice to finish; "cancelled" if the client left
    status: int = 200  # HTTP status, or the error event's status
    experiment: str | None = None
    arm: str | None = None
    decoding: dict[str, Any] | None = None  # the resolved decoding, including what the method reported
    diagnostics: Any = None  # per-choice contrast diagnostics, when the request asked for them
    time: float = field(default_factory=time.time)  # unix seconds when the request arrived

    def row(self) -> tuple:
        d = asdict(self)
        d["decoding"] = json.dumps(d["decoding"]) if d["decoding"] is not None else None
        d["diagnostics"] = json.dumps(d["diagnostics"]) if d["diagnostics"] is not None else None
        return tuple(d[c] for c in COLUMNS)


COLUMNS = ("id", "time", "model", "experiment", "arm", "method", "prompt_tokens", "completion_tokens", "ttft",
           "latency", "finish_reason", "status", "decoding", "diagnostics")
_INSERT = (f"INSERT INTO completions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
           "ON CONFLICT (id) DO NOTHING")
_FEEDBACK = ("INSERT INTO feedback (completion_id, time, score, label) VALUES (?, ?, ?, ?) ON CONFLICT (completion_id) "
             "DO UPDATE SET time = excluded.time, score = excluded.score, label = excluded.label")


class OutcomeLog:
    """A background writer in front of one database."""

    def __init__(self, url: str, batch: int = 256):
        self.url = url
        self.batch = batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._db = Database(url)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="outcome-log", daemon=True)
        self._thread.start()

    def record(self, outcome: Outcome) -> None:
        """Queue one row; never blocks on the disk."""
        if self._closed:  # a stream that outlived shutdown: still keep it
            log.warning("outcome %s recorded after close; writing it directly", outcome.id)
            db = Database(self.url)
            try:
                db.run(_INSERT, outcome.row())
            finally:
                db.close()
            return
        self._queue.put(("completion", outcome.row(), None))

    async def feedback(self, completion_id: str, score: float | None, label: str | None) -> bool:
        """Store feedback (latest wins); False if no completion has that id."""
        done: Future = Future()
        self._queue.put(("feedback", (completion_id, time.time(), score, label), done))
        return await asyncio.wrap_future(done)

    def flush(self) -> None:
        """Block until everything queued so far is committed (tests, shutdown)."""
        done: Future = Future()
        self._queue.put(("flush", None, done))
        done.result(timeout=60)

    def close(self) -> None:
        if self._closed:
            return
        self._queue.put(("stop", None, None))
        self._thread.join(timeout=60)
        self._closed = True
        self._db.close()

    # ---- writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                stop = self._write(items)
            except Exception as exc:
                log.exception("outcome log write failed (%d items dropped)", len(items))
                for _, _, done in items:
                    if done is not None and not done.done():
                        done.set_exception(exc)
                stop = any(kind == "stop" for kind, _, _ in items)
            if stop:
                return

    def _write(self, items: list[tuple[str, Any, Future | None]]) -> bool:
        stop, answers = False, []
        with self._db.transaction():  # one transaction per batch
            for kind, payload, done in items:
                if kind == "completion":
                    self._db.run(_INSERT, payload)
                elif kind == "feedback":
                    answers.append((done, self._store_feedback(payload)))
                elif kind == "flush":
                    answers.append((done, True))
                else:
                    stop = True
        for done, value in answers:
            done.set_result(value)
        return stop

    def _store_feedback(self, payload: tuple) -> bool:
        if not self._db.run("SELECT 1 FROM completions WHERE id = ?", payload[:1]):
            return False
        self._db.run(_FEEDBACK, payload)
        return True
