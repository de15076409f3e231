"""Faults, with a real `counterpoint serve` on the tiny model: a worker killed mid-stream is restarted and its
requests end with a clear error; the gateway answers 503 meanwhile; SIGTERM drains in-flight streams and
exits 0. Waits are bounded; nothing here measures speed.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time

import httpx
import psutil
import pytest

from tests.conftest import free_port, start_serve

from .helpers import CHAT, assert_clean_error, assert_still_serving

LONG = {**CHAT, "max_tokens": 450, "ignore_eos": True}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama_dir):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = start_serve(["--model", str(tiny_llama_dir), "--served-model-name", "tiny", "--worker-port",
                        str(free_port()), "--threads", "1", "--kv-cache-gb", "0.05", "--shutdown-grace", "30"],
                       port, log, timeout=180)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield proc, client, log
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def worker_process(proc) -> psutil.Process:
    children = [c for c in psutil.Process(proc.pid).children() if "worker" in c.cmdline()]
    assert len(children) == 1, children
    return children[0]


def data_lines(response: httpx.Response):
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line[6:]


def test_worker_killed_mid_stream_is_restarted(served):
    proc, client, _ = served
    victim = worker_process(proc)
    worker_url = f"http://127.0.0.1:{victim.cmdline()[victim.cmdline().index('--port') + 1]}"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with client.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as r:
            lines = data_lines(r)
            first = json.loads(next(lines))
            assert first["choices"][0]["delta"]["role"] == "assistant"
            whole = pool.submit(client.post, "/v1/chat/completions", json=LONG)  # a second request in flight
            time.sleep(0.2)
            victim.kill()  # SIGKILL: no cleanup in the worker
            rest = list(lines)
        assert rest and rest[-1] != "[DONE]"
        err = json.loads(rest[-1])["error"]
        assert err["message"] and err["type"] and "Traceback" not in rest[-1]
        assert_clean_error(whole.result(timeout=60), 502)
    victim.wait(timeout=10)
    err = assert_clean_error(client.post("/v1/chat/completions", json=CHAT), 503)  # no worker ready yet
    assert err["code"] == "no_worker_ready"
    assert client.get("/health").status_code == 503
    deadline = time.monotonic() + 180
    while client.post("/v1/chat/completions", json=CHAT).status_code != 200:  # the supervisor restarts it
        assert time.monotonic() < deadline, "the worker was not restarted"
        time.sleep(0.5)
    assert worker_process(proc).pid != victim.pid
    assert_still_serving(client)
    assert httpx.get(f"{worker_url}/health").json()["kv_cache_usage"] == 0.0


def test_sigterm_drains_in_flight_streams_then_exits_cleanly(served):
    proc, client, log = served
    workers = [worker_process(proc)]
    with client.stream("POST", "/v1/chat/completions",
                       json={**LONG, "stream": True, "stream_options": {"include_usage": True}}) as r:
        lines = data_lines(r)
        next(lines)
        proc.send_signal(signal.SIGTERM)  # while the stream has most of its tokens to go
        rest = list(lines)
    assert len(rest) > 100 and rest[-1] == "[DONE]"  # most tokens came after the signal, none were cut
    assert json.loads(rest[-2])["usage"]["completion_tokens"] == LONG["max_tokens"]
    assert json.loads(rest[-3])["choices"][0]["finish_reason"] == "length"
    assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive  # the workers were stopped too
