"""Experiments, the outcome log and /v1/feedback through a live gateway and the tiny worker."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time

import httpx

from counterpoint.server.experiments import Experiment, choose_arm
from counterpoint.server.worker_protocol import WorkerEvent
from tests.conftest import ThreadServer

from .conftest import EXPERIMENTS, ab_settings

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4, "temperature": 0}


def logged(server) -> dict[str, sqlite3.Row]:
    server.app.state.outcomes.flush()
    conn = sqlite3.connect(server.log_path)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: r for r in conn.execute("SELECT * FROM completions")}
    finally:
        conn.close()


def test_experiment_arm_named_in_response_and_log(ab_gateway, ab_client):
    expected = choose_arm("greedy-ab", Experiment(**EXPERIMENTS["greedy-ab"]), "carol").name
    bodies = [ab_client.post("/v1/chat/completions", json={**CHAT, "user": "carol",
                                                          "decoding": {"experiment": "greedy-ab"}}) for _ in range(3)]
    for r in bodies:
        assert r.status_code == 200, r.text
        assert r.json()["decoding"] | {"params": {}} == {"method": "plain", "params": {}, "experiment": "greedy-ab",
                                                         "arm": expected, "diagnostics": False, "decided": {}}
        assert json.loads(r.headers["x-counterpoint-decoding"])["arm"] == expected
    row = logged(ab_gateway)[bodies[0].json()["id"]]
    assert (row["experiment"], row["arm"], row["method"], row["status"]) == ("greedy-ab", expected, "plain", 200)
    usage = bodies[0].json()["usage"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert row["finish_reason"] in ("stop", "length") and 0 < row["ttft"] <= row["latency"]


def test_streamed_completion_is_logged(ab_gateway, ab_client):
    req = {"model": "tiny", "prompt": "Once", "max_tokens": 5, "temperature": 0, "ignore_eos": True, "stream": True,
           "decoding": {"experiment": "greedy-ab"}}
    with ab_client.stream("POST", "/v1/completions", json=req) as r:
        lines = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    assert lines[0]["decoding"]["experiment"] == "greedy-ab" and lines[0]["decoding"]["arm"] in ("control", "treatment")
    row = logged(ab_gateway)[lines[0]["id"]]
    assert row["completion_tokens"] == 5 and row["finish_reason"] == "length"


def test_multi_prompt_completion_is_one_row_with_all_tokens(ab_gateway, ab_client):
    body = ab_client.post("/v1/completions", json={"model": "tiny", "prompt": ["a b", "c d", "e f"], "max_tokens": 3,
                                                   "temperature": 0, "ignore_eos": True}).json()
    row = logged(ab_gateway)[body["id"]]
    assert row["completion_tokens"] == 9 == body["usage"]["completion_tokens"]
    assert row["prompt_tokens"] == body["usage"]["prompt_tokens"] and row["experiment"] is None


def test_unknown_experiment_is_400_and_counted(ab_gateway, ab_client):
    r = ab_client.post("/v1/chat/completions", json={**CHAT, "decoding": {"experiment": "nope"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "decoding.experiment"
    assert [row for row in logged(ab_gateway).values() if row["status"] == 400]


def test_feedback(ab_client):
    cid = ab_client.post("/v1/chat/completions", json=CHAT).json()["id"]
    ok = ab_client.post("/v1/feedback", json={"completion_id": cid, "score": 1, "label": "helpful"})
    assert ok.status_code == 200 and ok.json()["completion_id"] == cid
    missing = ab_client.post("/v1/feedback", json={"completion_id": "chatcmpl-nope", "score": 1})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "completion_not_found"
    empty = ab_client.post("/v1/feedback", json={"completion_id": cid})
    assert empty.status_code == 400 and empty.json()["error"]["message"]


def test_feedback_without_a_log_is_501(gateway_client):
    r = gateway_client.post("/v1/feedback", json={"completion_id": "x", "score": 1})
    assert r.status_code == 501 and "outcome_log" in r.json()["error"]["message"]


class GatedPool:
    """A worker pool whose answers stop after the first token until `gate` opens (shutdown has begun)."""

    def __init__(self):
        self.gate, self.num_open = threading.Event(), 0
        self.workers = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def open(self, req):
        self.num_open += 1
        return self._events(req)

    async def _events(self, req):
        yield WorkerEvent(type="start", prompt_tokens=3, decoding=req.decoding)
        yield WorkerEvent(type="delta", text="a", token_ids=[1])
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        for _ in range(9):
            yield WorkerEvent(type="delta", text="b", token_ids=[2])
        yield WorkerEvent(type="delta", finish_reason="length")
        yield WorkerEvent(type="done", prompt_tokens=3, completion_tokens=10)


def test_shutdown_with_requests_in_flight_loses_nothing(tmp_path):
    from counterpoint.server.gateway.app import create_app
    pool = GatedPool()
    app = create_app(ab_settings("http://unused", tmp_path / "o.db"), pool=pool)
    server = ThreadServer(app).__enter__()
    ids, first_tokens = [], threading.Barrier(4 + 1)

    def client(i: int) -> None:
        req = {**CHAT, "stream": True, "user": f"u{i}", "decoding": {"experiment": "greedy-ab"}}
        with httpx.Client(base_url=server.url, timeout=60) as c, c.stream("POST", "/v1/chat/completions",
                                                                          json=req) as r:
            lines = r.iter_lines()
            ids.append(json.loads(next(lines)[6:])["id"])
            first_tokens.wait(timeout=60)
            list(lines)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    first_tokens.wait(timeout=60)  # four streams are open and held at their first token
    stopper = threading.Thread(target=server.__exit__, args=(None, None, None))
    stopper.start()  # graceful shutdown begins while the requests are in flight ...
    for _ in range(600):  # uvicorn closes its listening socket first: then shutdown has surely begun
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        except OSError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the gateway never stopped listening")
    pool.gate.set()  # ... and only then may they finish
    stopper.join(timeout=60)
    for t in threads:
        t.join(timeout=60)
    conn = sqlite3.connect(tmp_path / "o.db")
    stored = {row[0]: row[1:] for row in conn.execute("SELECT id, completion_tokens, finish_reason FROM completions")}
    conn.close()
    assert len(ids) == 4 and pool.num_open == 4
    assert {stored[i] for i in ids} == {(10, "length")}


def test_client_leaving_mid_stream_is_logged_as_cancelled(tmp_path):
    from counterpoint.server.gateway.app import create_app
    pool = GatedPool()  # the gate stays shut: the answer never gets past its first token
    app = create_app(ab_settings("http://unused", tmp_path / "o.db"), pool=pool)
    with ThreadServer(app) as server:
        with httpx.Client(base_url=server.url, timeout=60) as c, c.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
            cid = json.loads(next(r.iter_lines())[6:])["id"]
        row = None
        for _ in range(200):  # the gateway notices the disconnect on its next receive
            app.state.outcomes.flush()
            conn = sqlite3.connect(tmp_path / "o.db")
            row = conn.execute("SELECT finish_reason, completion_tokens FROM completions WHERE id = ?",
                               (cid,)).fetchone()
            conn.close()
            if row:
                break
            time.sleep(0.05)
        pool.gate.set()
    assert row == ("cancelled", 1)
