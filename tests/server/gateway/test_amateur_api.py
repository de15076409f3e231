"""A worker serving an expert with an amateur (`--amateur`): cd and lol through the HTTP API."""

from __future__ import annotations

import httpx
import pytest

from ...conftest import ThreadServer


@pytest.fixture(scope="module")
def client(tiny_deep_dir, tiny_amateur_dir):
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app
    from counterpoint.server.worker.factory import build_worker_app
    worker = build_worker_app(Settings(model=str(tiny_deep_dir), amateur=str(tiny_amateur_dir),
                                       served_model_name="expert", kv_cache_gb=0.05))
    with ThreadServer(worker) as w, ThreadServer(create_app(Settings(worker_urls=[w.url]))) as g:
        with httpx.Client(base_url=g.url, timeout=60) as c:
            yield c


def test_models_list_amateur_methods(client):
    model = client.get("/v1/models").json()["data"][0]
    assert model["amateur"] == "tiny-amateur0" and {"cd", "lol"} <= set(model["methods"])


@pytest.mark.parametrize("decoding", ["cd", {"method": "cd", "amateur": "tiny-amateur0", "beta": 1.0}, "lol",
                                      {"method": "lol", "refocus": "Be truthful.", "weight": 0.2}])
def test_amateur_methods_generate(client, decoding):
    r = client.post("/v1/chat/completions", json={"model": "expert", "messages": [{"role": "user", "content": "Hi"}],
                                                  "max_tokens": 5, "temperature": 0, "ignore_eos": True,
                                                  "decoding": decoding})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 5
    assert r.json()["decoding"]["decided"]["amateur"] == "tiny-amateur0"


def test_unknown_amateur_is_400(client):
    r = client.post("/v1/completions", json={"model": "expert", "prompt": "x", "decoding": {"method": "cd",
                                                                                         "amateur": "other"}})
    assert r.status_code == 400 and "tiny-amateur0" in r.json()["error"]["message"]
