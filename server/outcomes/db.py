"""One connection to the outcome store: SQLite (a path or `sqlite:///path`) or PostgreSQL (`postgresql://...`).

The SQL is written once with `?` placeholders and upserts that both databases understand
(`ON CONFLICT ... DO UPDATE`); this adapter swaps the placeholders and the transaction idiom.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    id TEXT PRIMARY KEY, time {float} NOT NULL, model TEXT NOT NULL, experiment TEXT, arm TEXT,
    method TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    ttft {float}, latency {float} NOT NULL, finish_reason TEXT, status INTEGER NOT NULL,
    decoding TEXT, diagnostics TEXT);
CREATE TABLE IF NOT EXISTS feedback (
    completion_id TEXT PRIMARY KEY REFERENCES completions(id), time {float} NOT NULL, score {float}, label TEXT);
CREATE INDEX IF NOT EXISTS completions_experiment ON completions(experiment, arm)
"""


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)


class Database:
    """A DB-API connection with `run(sql, params)` and `transaction()` for either backend."""

    def __init__(self, url: str, create: bool = True):
        self.is_postgres = is_postgres(url)
        if self.is_postgres:
            try:
                import psycopg
            except ImportError as exc:
                raise ValueError("outcome_log: a PostgreSQL URL needs `pip install 'counterpoint[postgres]'`") from exc
            self.conn: Any = psycopg.connect(url, autocommit=True)
        else:
            path = sqlite_path(url)
            if not create and not path.exists():
                raise FileNotFoundError(f"no outcome log at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)  # explicit BEGIN
            self.conn.execute("PRAGMA journal_mode=WAL")
        if create:
            for statement in SCHEMA.format(float="DOUBLE PRECISION" if self.is_postgres else "REAL").split(";"):
                self.run(statement)

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cur = self.conn.execute(sql.replace("?", "%s") if self.is_postgres else sql, params)
        return cur.fetchall() if cur.description else []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.is_postgres:
            with self.conn.transaction():
                yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
