"""The outcome log: rows written by the background writer, feedback against them, nothing lost on close."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from counterpoint.server.outcomes import Outcome, OutcomeLog


def rows(path, table="completions") -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        conn.close()


def outcome(i: int, **kw) -> Outcome:
    return Outcome(id=f"c{i}", model="m", method="plain", latency=0.5, prompt_tokens=3, completion_tokens=4,
                   ttft=0.1, finish_reason="stop", **kw)


def test_rows_and_fields(tmp_path):
    log = OutcomeLog(str(tmp_path / "o.db"))
    log.record(outcome(1, experiment="e", arm="a", decoding={"method": "plain"}, diagnostics=[{"changed": 2}]))
    log.flush()
    (row,) = rows(tmp_path / "o.db")
    assert dict(row) | {"time": 0} == {"id": "c1", "time": 0, "model": "m", "experiment": "e", "arm": "a",
                                       "method": "plain", "prompt_tokens": 3, "completion_tokens": 4, "ttft": 0.1,
                                       "latency": 0.5, "finish_reason": "stop", "status": 200,
                                       "decoding": '{"method": "plain"}', "diagnostics": '[{"changed": 2}]'}
    log.close()


def test_close_drains_everything_queued(tmp_path):
    log = OutcomeLog(str(tmp_path / "o.db"), batch=7)
    writers = [threading.Thread(target=lambda k=k: [log.record(outcome(k * 1000 + i)) for i in range(500)])
               for k in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    log.close()  # no flush before: close alone must drain the queue
    assert len(rows(tmp_path / "o.db")) == 2000
    log.record(outcome(99999))  # after close (a straggler stream): written directly, not lost
    assert len(rows(tmp_path / "o.db")) == 2001


def test_feedback_found_and_unknown(tmp_path):
    async def main():
        log = OutcomeLog(str(tmp_path / "o.db"))
        log.record(outcome(1))  # still queued: feedback goes behind it, so the id is found
        assert await log.feedback("c1", 1.0, "good") is True
        assert await log.feedback("c1", 0.0, None) is True  # latest wins
        assert await log.feedback("nope", 1.0, None) is False
        log.close()
    asyncio.run(main())
    (fb,) = rows(tmp_path / "o.db", "feedback")
    assert (fb["completion_id"], fb["score"], fb["label"]) == ("c1", 0.0, None)


def test_postgres_url_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="PostgreSQL is not implemented"):
        OutcomeLog("postgresql://db/outcomes")
    log = OutcomeLog(f"sqlite:///{tmp_path}/sub/o.db")
    log.close()
    assert (tmp_path / "sub" / "o.db").exists()
