"""`counterpoint worker --backend vllm` honours its settings from the command line and the TOML file: the
internal token, the bounded queue and the request deadline (it once built its app without them)."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port

TOKEN = "vllm-internal-s3cret"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, default_model_dir):
    path = tmp_path_factory.mktemp("vllm-settings")
    config = path / "worker.toml"
    config.write_text("max_waiting = 1\nrequest_deadline = 3.0\nretry_after = 7\n")
    port = free_port()
    log = open(path / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "counterpoint.server.cli", "worker", "--backend", "vllm",
                             "--config", str(config), "--internal-token", TOKEN, "--port", str(port),
                             "--model", str(default_model_dir), "--served-model-name", "SmolLM2",
                             "--max-model-len", "1024", "--threads", "1"],
                            env={**__import__("os").environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                                 "VLLM_CPU_KVCACHE_SPACE": "1"}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, (path / "worker.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the vLLM worker did not start"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def _generate(url: str, max_tokens: int, token: str | None = TOKEN, **extra) -> httpx.Response:
    headers = {"x-counterpoint-internal-token": token} if token else {}
    body = {"request_id": f"r{time.monotonic_ns()}", "model": "SmolLM2", "prompt": "Hello",
            "sampling": {"max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}, **extra}
    return httpx.post(f"{url}/generate", json=body, headers=headers, timeout=120)


def test_vllm_worker_needs_the_internal_token(guarded):
    assert _generate(guarded, 2, token=None).status_code == 401
    assert _generate(guarded, 2, token="wrong").status_code == 401
    assert httpx.get(f"{guarded}/info").status_code == 401
    r = _generate(guarded, 2)
    assert r.status_code == 200 and r.text.splitlines()[-1].startswith('{"type":"done"')


def test_vllm_worker_applies_the_deadline_and_the_queue_bound_from_toml(guarded):
    long = _generate(guarded, 1000)  # far past the 3 s deadline on this CPU
    assert '"status":504' in long.text.splitlines()[-1]
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = [r.status_code for r in pool.map(lambda _: _generate(guarded, 200), range(6))]
    refused = [c for c in codes if c == 429]
    assert refused and set(codes) <= {200, 429}  # max_waiting = 1: the rest are refused with 429
