"""Checks shared by the reliability tests: clean errors, still serving, KV cache back to zero."""

from __future__ import annotations

import json
import re
import time

import httpx

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4, "temperature": 0}
# What must never appear in an error body: traces, source files, absolute paths of this machine.
LEAKS = re.compile(r"Traceback|File \"|\.py\b|/work/|/usr/|/tmp/|site-packages|line \d+")


def assert_clean_error(response: httpx.Response, status: int | None = None) -> dict:
    """An OpenAI-shaped error with no internals in it; returns the `error` object."""
    if status is not None:
        assert response.status_code == status, response.text
    assert 400 <= response.status_code < 600, response.text
    body = response.json()
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
    assert set(err) == {"message", "type", "param", "code"}
    assert not LEAKS.search(json.dumps(body)), body
    return err


def assert_still_serving(client: httpx.Client, path: str = "/v1/chat/completions") -> None:
    """A normal request still gets a correct answer."""
    r = client.post(path, json=CHAT)
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] in ("stop", "length") and isinstance(choice["message"]["content"], str)
    assert 1 <= body["usage"]["completion_tokens"] <= CHAT["max_tokens"]


def wait_kv_free(core, timeout: float = 15.0) -> None:
    """The worker's KV cache is back to zero usage and it holds no request (bounded wait). `core` is the
    worker app's `state.worker.core`, whose stats the engine core sends after every change."""
    deadline = time.monotonic() + timeout
    while core.stats.kv_cache_usage != 0.0 or core.stats.num_running or core.stats.num_waiting:
        assert time.monotonic() < deadline, f"KV cache still in use: {core.stats.kv_cache_usage:.3f}"
        time.sleep(0.05)


def metric(text: str, name: str) -> float:
    """The value of an unlabelled Prometheus sample in `text`."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")
