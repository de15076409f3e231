"""`counterpoint serve --workers 2` (one container's worth): the gateway spreads requests over both workers,
and the workers do not outlive `serve` when it is stopped with SIGTERM (as `docker stop` does)."""

from __future__ import annotations

import signal
import time

import httpx

from tests.conftest import free_port, start_serve


def test_two_workers_behind_serve_and_gone_after_sigterm(tiny_llama_dir, tmp_path):
    port, worker_port = free_port(), free_port()
    proc = start_serve(["--model", str(tiny_llama_dir), "--served-model-name", "tiny", "--workers", "2",
                        "--worker-port", str(worker_port), "--threads", "1", "--kv-cache-gb", "0.05"],
                       port, tmp_path / "serve.log")
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
        urls = [w["url"] for w in health["workers"]]
        assert len(urls) == 2 and all(w["healthy"] for w in health["workers"])
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60,
                       json={"model": "tiny", "prompt": "Hi", "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    alive = urls
    while alive and time.monotonic() < deadline:
        alive = [u for u in alive if _answers(u)]
        time.sleep(0.5)
    assert alive == [], (tmp_path / "serve.log").read_text()[-2000:]


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=1)
        return True
    except httpx.HTTPError:
        return False
