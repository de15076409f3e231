"""Overload on loopback: a bounded worker queue (429 + Retry-After), a per-request deadline (504), and a storm
of clients that disconnect mid-stream. Bounded counts and times; afterwards the KV cache is back to zero and a
normal request is answered.

The engine here is the tiny model with a fixed pause in every step, so a request's length in steps decides
whether it is still running, not the machine's speed.
"""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest

from tests.conftest import ThreadServer

from .helpers import CHAT, assert_clean_error, assert_still_serving, metric, wait_kv_free

MAX_WAITING = 2
DEADLINE = 2.0


@pytest.fixture(scope="module")
def slow(tiny_llama_dir):
    """A worker (one row per step, two may wait, 2 s deadline) with a pause per step, and a gateway before it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("COUNTERPOINT_ENGINE_HOOK", "tests.reliability.engine_hooks:slow_steps")
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app
    from counterpoint.server.worker.factory import build_worker_app
    settings = Settings(model=str(tiny_llama_dir), served_model_name="tiny", kv_cache_gb=0.05, max_num_seqs=1,
                        max_waiting=MAX_WAITING, request_deadline=DEADLINE, retry_after=3)
    worker_app = build_worker_app(settings)
    mp.undo()
    engine = worker_app.state.worker.core
    with ThreadServer(worker_app) as worker, \
            ThreadServer(create_app(Settings(worker_urls=[worker.url], retry_after=3))) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=60) as client:
        yield client, engine, worker.url


def _long(max_tokens: int, stream: bool = False) -> dict:
    return {**CHAT, "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}


def test_queue_full_gets_429_with_retry_after(slow):
    client, engine, _ = slow

    def one(_):
        return client.post("/v1/chat/completions", json=_long(16))
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(one, range(10)))
    refused = [r for r in responses if r.status_code == 429]
    served = [r for r in responses if r.status_code == 200]
    assert len(refused) + len(served) == 10, [r.status_code for r in responses]
    assert refused and len(served) >= MAX_WAITING  # at least as many as may wait were taken
    for r in refused:
        err = assert_clean_error(r, 429)
        assert err["type"] == "rate_limit_error" and err["code"] == "queue_full"
        assert r.headers["retry-after"] == "3"
    for r in served:
        assert r.json()["usage"]["completion_tokens"] == 16
    wait_kv_free(engine)
    assert_still_serving(client)


def test_deadline_ends_request_and_frees_blocks(slow):
    client, engine, worker_url = slow
    r = client.post("/v1/chat/completions", json=_long(400))  # >= 400 * 0.02 s, far past the 2 s deadline
    err = assert_clean_error(r, 504)
    assert "deadline" in err["message"]
    with client.stream("POST", "/v1/chat/completions", json=_long(400, stream=True)) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["error"]["type"] == "timeout_error"  # the stream ends with a clear error
    wait_kv_free(engine)
    assert metric(httpx.get(f"{worker_url}/metrics").text, "counterpoint_worker_kv_cache_usage_ratio") == 0.0
    assert_still_serving(client)


def test_disconnect_storm_frees_every_block(slow):
    """Twenty clients start streams and leave at once or after a few chunks; the engine lets go of all."""
    client, engine, worker_url = slow
    url = str(client.base_url)

    def leave(i: int) -> int:
        with httpx.Client(base_url=url, timeout=30) as c, \
                c.stream("POST", "/v1/chat/completions", json=_long(300, stream=True)) as r:
            if r.status_code != 200:
                return r.status_code
            for j, _ in enumerate(r.iter_lines()):
                if j >= i % 4:  # leave after 0 to 3 lines
                    break
            return 200
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(leave, range(20)))
    assert set(codes) <= {200, 429} and 200 in codes
    wait_kv_free(engine)
    assert metric(httpx.get(f"{worker_url}/metrics").text, "counterpoint_worker_kv_cache_usage_ratio") == 0.0
    assert_still_serving(client)
