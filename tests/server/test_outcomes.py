"""The outcome log: rows written by the background writer, feedback against them, nothing lost on close."""

from __future__ import annotations

import asyncio
import threading

import pytest

from counterpoint.server.outcomes import COLUMNS, Database, Outcome, OutcomeLog

from .pg import running_postgres


@pytest.fixture(scope="module")
def postgres_url():
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request, tmp_path):
    """A fresh, empty outcome store of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "o.db")
    url = request.getfixturevalue("postgres_url")
    db = Database(url)
    db.run("DROP TABLE IF EXISTS feedback")
    db.run("DROP TABLE IF EXISTS completions")
    db.close()
    return url


def rows(url, table="completions") -> list[dict]:
    db = Database(str(url))
    try:
        names = list(COLUMNS) if table == "completions" else ["completion_id", "time", "score", "label"]
        return [dict(zip(names, r)) for r in db.run(f"SELECT {', '.join(names)} FROM {table}")]
    finally:
        db.close()


def outcome(i: int, **kw) -> Outcome:
    return Outcome(id=f"c{i}", model="m", method="plain", latency=0.5, prompt_tokens=3, completion_tokens=4,
                   ttft=0.1, finish_reason="stop", **kw)


def test_rows_and_fields(log_url):
    log = OutcomeLog(log_url)
    log.record(outcome(1, experiment="e", arm="a", decoding={"method": "plain"}, diagnostics=[{"changed": 2}]))
    log.flush()
    (row,) = rows(log_url)
    assert row | {"time": 0} == {"id": "c1", "time": 0, "model": "m", "experiment": "e", "arm": "a",
                                       "method": "plain", "prompt_tokens": 3, "completion_tokens": 4, "ttft": 0.1,
                                       "latency": 0.5, "finish_reason": "stop", "status": 200,
                                       "decoding": '{"method": "plain"}', "diagnostics": '[{"changed": 2}]'}
    log.close()


def test_close_drains_everything_queued(log_url):
    log = OutcomeLog(log_url, batch=7)
    writers = [threading.Thread(target=lambda k=k: [log.record(outcome(k * 1000 + i)) for i in range(500)])
               for k in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    log.close()  # no flush before: close alone must drain the queue
    assert len(rows(log_url)) == 2000
    log.record(outcome(99999))  # after close (a straggler stream): written directly, not lost
    assert len(rows(log_url)) == 2001


def test_feedback_found_and_unknown(log_url):
    async def main():
        log = OutcomeLog(log_url)
        log.record(outcome(1))  # still queued: feedback goes behind it, so the id is found
        assert await log.feedback("c1", 1.0, "good") is True
        assert await log.feedback("c1", 0.0, None) is True  # latest wins
        assert await log.feedback("nope", 1.0, None) is False
        log.close()
    asyncio.run(main())
    (fb,) = rows(log_url, "feedback")
    assert (fb["completion_id"], fb["score"], fb["label"]) == ("c1", 0.0, None)


def test_sqlite_url(tmp_path):
    log = OutcomeLog(f"sqlite:///{tmp_path}/sub/o.db")
    log.close()
    assert (tmp_path / "sub" / "o.db").exists()
