"""The outcome log: one row per completion, and the feedback stored against it.

Writes never happen on the request path. `record` puts the row on a queue and returns; one writer thread
owns the SQLite connection and commits in batches. `close` (the gateway's lifespan shutdown) drains the
queue before it returns, so a clean shutdown loses nothing. Feedback goes through the same queue, after
the completion it refers to, and its caller awaits the answer (found or not).

Backends: SQLite (a path, or a `sqlite:///path` URL). A `postgresql://` URL, for several gateways sharing
one log, is not implemented yet and is refused at startup with a clear message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    id TEXT PRIMARY KEY, time REAL NOT NULL, model TEXT NOT NULL, experiment TEXT, arm TEXT,
    method TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    ttft REAL, latency REAL NOT NULL, finish_reason TEXT, status INTEGER NOT NULL,
    decoding TEXT, diagnostics TEXT);
CREATE TABLE IF NOT EXISTS feedback (
    completion_id TEXT PRIMARY KEY REFERENCES completions(id), time REAL NOT NULL, score REAL, label TEXT);
CREATE INDEX IF NOT EXISTS completions_experiment ON completions(experiment, arm);
"""


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
_INSERT = f"INSERT OR REPLACE INTO completions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def sqlite_path(url: str) -> Path:
    if url.startswith(("postgres://", "postgresql://")):
        raise ValueError("outcome_log: PostgreSQL is not implemented yet; use a SQLite path")
    return Path(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)


def connect(url: str) -> sqlite3.Connection:
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


class OutcomeLog:
    """A background writer in front of one SQLite file."""

    def __init__(self, url: str, batch: int = 256):
        self.url = url
        self.batch = batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._conn = connect(url)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="outcome-log", daemon=True)
        self._thread.start()

    def record(self, outcome: Outcome) -> None:
        """Queue one row; never blocks on the disk."""
        if self._closed:  # a stream that outlived shutdown: still keep it
            log.warning("outcome %s recorded after close; writing it directly", outcome.id)
            with connect(self.url) as conn:
                conn.execute(_INSERT, outcome.row())
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
        self._conn.close()

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
        with self._conn:  # one transaction per batch
            for kind, payload, done in items:
                if kind == "completion":
                    self._conn.execute(_INSERT, payload)
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
        if self._conn.execute("SELECT 1 FROM completions WHERE id = ?", payload[:1]).fetchone() is None:
            return False
        self._conn.execute("INSERT OR REPLACE INTO feedback (completion_id, time, score, label) VALUES (?, ?, ?, ?)",
                           payload)
        return True
