"""Security at the edges: API keys (option and file), the worker's internal token, clean error bodies."""

from __future__ import annotations

import json
import signal

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ThreadServer

from .engine_hooks import FAIL_IDS
from .helpers import CHAT, assert_clean_error, assert_still_serving, wait_kv_free

POISON = [1000, 1001, 1002]  # a prompt holding these ids breaks the forward (engine_hooks.fail_on_marker)

TOKEN = "internal-s3cret"


@pytest.fixture(scope="module")
def guarded_worker(tiny_llama_dir):
    """A worker that needs the internal token."""
    from counterpoint.server.config import Settings
    from counterpoint.server.worker.factory import build_worker_app
    mp = pytest.MonkeyPatch()
    mp.setenv("COUNTERPOINT_ENGINE_HOOK", "tests.reliability.engine_hooks:fail_on_marker")
    mp.setenv(FAIL_IDS, ",".join(map(str, POISON)))
    app = build_worker_app(Settings(model=str(tiny_llama_dir), served_model_name="tiny", kv_cache_gb=0.05,
                                    internal_token=TOKEN))
    mp.undo()
    with ThreadServer(app) as server:
        server.app = app
        yield server


def gateway(worker_url: str, **settings) -> TestClient:
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app
    return TestClient(create_app(Settings(worker_urls=[worker_url], **settings)), raise_server_exceptions=False)


def test_worker_refuses_requests_without_the_internal_token(guarded_worker):
    gen = {"request_id": "x", "model": "tiny", "prompt": "hi", "sampling": {"max_tokens": 2}}
    for headers in ({}, {"x-counterpoint-internal-token": "wrong"}):
        assert_clean_error(httpx.post(f"{guarded_worker.url}/generate", json=gen, headers=headers), 401)
        assert_clean_error(httpx.get(f"{guarded_worker.url}/info", headers=headers), 401)
    assert httpx.get(f"{guarded_worker.url}/health").status_code == 200  # liveness stays open
    r = httpx.post(f"{guarded_worker.url}/generate", json=gen, headers={"x-counterpoint-internal-token": TOKEN})
    assert r.status_code == 200 and json.loads(r.text.splitlines()[-1])["type"] == "done"


def test_gateway_sends_the_internal_token(guarded_worker):
    with gateway(guarded_worker.url, internal_token=TOKEN) as client:
        assert_still_serving(client)
    with gateway(guarded_worker.url) as client:  # no token: the worker never answers it, so none is ready
        err = assert_clean_error(client.post("/v1/chat/completions", json=CHAT), 503)
        assert err["code"] == "no_worker_ready"
        assert client.get("/health").status_code == 503


def test_api_key_and_key_file(tiny_worker, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nalpha-key\n\n  beta-key  \n")
    with gateway(tiny_worker.url, api_key="option-key", api_key_file=keys) as client:
        for key in ("option-key", "alpha-key", "beta-key"):
            r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
        for headers in ({}, {"Authorization": "Bearer # team keys"}, {"Authorization": "Bearer alpha"},
                        {"Authorization": "Basic alpha-key"}, {"Authorization": "Bearer "}):
            err = assert_clean_error(client.post("/v1/chat/completions", json=CHAT, headers=headers), 401)
            assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
        assert_clean_error(client.get("/v1/models"), 401)
        assert client.get("/health").status_code == 200
    keys.write_text("# nothing here yet\n")
    with pytest.raises(ValueError, match="holds no key"):
        gateway(tiny_worker.url, api_key_file=keys)


def test_worker_error_bodies_carry_no_internals(guarded_worker):
    h = {"x-counterpoint-internal-token": TOKEN}
    url = guarded_worker.url
    assert_clean_error(httpx.post(f"{url}/generate", content=b"{oops", headers={**h, "content-type":
                                                                                "application/json"}), 400)
    assert_clean_error(httpx.post(f"{url}/generate", json={"request_id": 5}, headers=h), 400)
    assert_clean_error(httpx.post(f"{url}/generate", json={"request_id": "x", "model": "other"}, headers=h), 404)
    assert_clean_error(httpx.get(f"{url}/nope"), 404)
    assert_clean_error(httpx.put(f"{url}/generate", headers=h), 405)
    engine = guarded_worker.app.state.worker.core
    # a step that fails (here: a poisoned prompt); the engine's own exception text must not reach the client
    r = httpx.post(f"{url}/generate", json={"request_id": "y", "model": "tiny", "prompt": POISON,
                                            "sampling": {"max_tokens": 3}}, headers=h)
    last = json.loads(r.text.splitlines()[-1])
    assert last["type"] == "error" and "secret" not in r.text and ".py" not in r.text
    wait_kv_free(engine)
    with gateway(url, internal_token=TOKEN) as client:
        assert_still_serving(client)


def test_gateway_crash_is_a_clean_500(tiny_worker):
    with gateway(tiny_worker.url) as client:
        async def explode(req):
            raise ValueError("secret at /srv/counterpoint/server/gateway/workers.py")
        client.app.state.pool.open = explode
        err = assert_clean_error(client.post("/v1/chat/completions", json=CHAT), 500)
        assert err["message"] == "internal server error"


def test_exposed_worker_needs_a_token(monkeypatch):
    from counterpoint.server import cli
    monkeypatch.delenv("COUNTERPOINT_INTERNAL_TOKEN", raising=False)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit, match="internal-token"):
            cli.main(["worker", "--host", "0.0.0.0", "--port", "1"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert cli.is_loopback("127.0.0.1") and cli.is_loopback("::1") and cli.is_loopback("localhost")
    assert not cli.is_loopback("0.0.0.0") and not cli.is_loopback("10.0.0.1")
