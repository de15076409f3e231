"""Failover through a live gateway in front of two real worker processes on the tiny model.

A worker is killed (SIGKILL) or frozen (SIGSTOP) with streams in flight: every request either completes on
the other worker or ends with a clear error event, the gateway keeps serving, and the worker is used again
once it is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from counterpoint.server.config import Settings
from counterpoint.server.gateway.app import create_app
from counterpoint.server.gateway.workers import WorkerPool

from tests.conftest import ThreadServer, free_port

LONG = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 400,
        "temperature": 0, "ignore_eos": True, "stream": True}
SHORT = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0}


class WorkerProc:
    """`counterpoint worker` on the tiny model as a real subprocess on a fixed loopback port."""

    def __init__(self, model_dir, log_dir, name: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{name}.log"
        self.args = [sys.executable, "-m", "counterpoint.server.cli", "worker", "--model", str(model_dir),
                     "--port", str(self.port), "--served-model-name", "tiny", "--threads", "1",
                     "--kv-cache-gb", "0.05"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("worker did not become ready")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test froze it
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def workers(tiny_llama_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("workers")
    procs = [WorkerProc(tiny_llama_dir, log_dir, "a"), WorkerProc(tiny_llama_dir, log_dir, "b")]
    try:
        for w in procs:
            w.start()
        yield procs
    finally:
        for w in procs:
            w.kill()


def gateway(workers, **pool_args):
    pool = WorkerPool([w.url for w in workers], **pool_args)
    server = ThreadServer(create_app(Settings(worker_urls=[w.url for w in workers]), pool=pool))
    server.pool = pool
    return server


def wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


async def stream_one(client: httpx.AsyncClient, started: asyncio.Event | None = None) -> dict:
    """One streamed chat request; how it ended: completed ([DONE] after finish_reason) or an error event."""
    result = {"text": "", "finish": None, "error": None, "done": False, "status": None}
    async with client.stream("POST", "/v1/chat/completions", json=LONG) as r:
        result["status"] = r.status_code
        if r.status_code != 200:
            result["error"] = json.loads(await r.aread())["error"]
            return result
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                result["done"] = True
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                result["error"] = chunk["error"]
                continue
            if started is not None:
                started.set()
            for choice in chunk["choices"]:
                result["text"] += choice["delta"].get("content", "")
                result["finish"] = choice["finish_reason"] or result["finish"]
    return result


def assert_completed_or_clean_error(results: list[dict]) -> tuple[int, int]:
    completed = errored = 0
    for res in results:
        if res["done"]:
            assert res["finish"] == "length" and res["error"] is None, res
            completed += 1
        else:
            assert res["error"] is not None and res["error"]["message"], res
            assert res["error"]["type"] == "server_error" or res["status"] == 503, res
            errored += 1
    return completed, errored


async def streams_with_fault(url: str, fault, num: int = 6) -> list[dict]:
    """Start `num` long streams, call `fault()` once every one of them has streamed, collect the endings."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120.0)) as client:
        events = [asyncio.Event() for _ in range(num)]
        tasks = [asyncio.create_task(stream_one(client, e)) for e in events]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 120)
        fault()
        return await asyncio.wait_for(asyncio.gather(*tasks), 120)  # a hang fails here


def post_short(url: str, num: int = 4) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/completions", json=SHORT) for _ in range(num)))
    return asyncio.run(run())


def test_killed_worker_fails_over_and_is_readmitted(workers):
    a = workers[0]
    with gateway(workers, health_interval=0.3, health_timeout=1.0) as gw:
        wait_until(lambda: all(w.healthy for w in gw.pool.workers))
        results = asyncio.run(streams_with_fault(gw.url, a.kill))
        completed, errored = assert_completed_or_clean_error(results)
        assert completed >= 1 and errored >= 1  # the streams on b finished, those on a ended cleanly
        assert all(r.status_code == 200 for r in post_short(gw.url))  # the gateway keeps serving
        wait_until(lambda: not gw.pool.by_url[a.url].healthy)
        assert httpx.get(f"{gw.url}/health").json()["status"] == "ok"

        a.start()  # same port: the health loop must readmit it
        wait_until(lambda: gw.pool.by_url[a.url].healthy)
        served = gw.pool.by_url[a.url].served
        assert all(r.status_code == 200 for r in post_short(gw.url, num=6))
        assert gw.pool.by_url[a.url].served > served  # least-outstanding sends it traffic again


def test_retry_on_another_worker_when_nothing_was_streamed(workers):
    a = workers[0]
    with gateway(workers, health_interval=3600) as gw:  # only the start-up check: a stays "healthy"
        wait_until(lambda: all(w.healthy for w in gw.pool.workers))
        a.kill()
        responses: list[httpx.Response] = []
        while gw.pool.by_url[a.url].served == 0 and len(responses) < 60:  # ties are broken at random
            responses += post_short(gw.url, num=3)
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        assert gw.pool.by_url[a.url].served >= 1  # tried on a first, then retried on b
        assert not gw.pool.by_url[a.url].healthy
        results = asyncio.run(streams_with_fault(gw.url, lambda: None, num=2))
        assert [r["done"] for r in results] == [True, True]
    a.start()


def test_frozen_worker_ends_its_streams_with_an_error_and_comes_back(workers):
    a = workers[0]
    with gateway(workers, health_interval=0.3, health_timeout=1.0, abort_after=3) as gw:
        wait_until(lambda: all(w.healthy for w in gw.pool.workers))
        try:
            results = asyncio.run(streams_with_fault(gw.url, lambda: os.kill(a.proc.pid, signal.SIGSTOP)))
            completed, errored = assert_completed_or_clean_error(results)
            assert completed >= 1 and errored >= 1
            assert all("stopped answering" in r["error"]["message"] for r in results if r["error"])
            assert all(r.status_code == 200 for r in post_short(gw.url))
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        wait_until(lambda: gw.pool.by_url[a.url].healthy)
        assert all(r.status_code == 200 for r in post_short(gw.url, num=6))
