"""Every request limit is configurable: a gateway with small limits refuses what a default one accepts."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from .helpers import CHAT, assert_clean_error, assert_still_serving

SMALL = {"max_messages": 2, "max_content_parts": 1, "max_tokens_cap": 8, "max_n": 2, "max_stop": 1,
         "max_stop_length": 3, "max_stop_token_ids": 1, "max_prompts": 2, "max_image_bytes": 2000,
         "max_image_pixels": 100}


def png(width: int, height: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def with_image(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]


@pytest.fixture(scope="module")
def small(tiny_worker):
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app
    with TestClient(create_app(Settings(worker_urls=[tiny_worker.url], **SMALL))) as client:
        yield client


@pytest.mark.parametrize("patch, path, needle", [
    ({"messages": CHAT["messages"] * 3}, "/v1/chat/completions", "at most 2 messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 2}]}, "/v1/chat/completions",
     "at most 1 content parts"),
    ({"max_tokens": 9}, "/v1/chat/completions", "at most 8"),
    ({"max_completion_tokens": 9}, "/v1/chat/completions", "at most 8"),
    ({"min_tokens": 9}, "/v1/chat/completions", "at most 8"),
    ({"n": 3}, "/v1/chat/completions", "at most 2"),
    ({"stop": ["a", "b"]}, "/v1/chat/completions", "at most 1 stop"),
    ({"stop": "abcd"}, "/v1/chat/completions", "1 to 3 characters"),
    ({"stop_token_ids": [1, 2]}, "/v1/chat/completions", "at most 1 stop_token_ids"),
    ({"prompt": ["a", "b", "c"], "messages": None}, "/v1/completions", "at most 2 prompts"),
    ({"messages": with_image(png(20, 20))}, "/v1/chat/completions", "at most 100 are allowed"),
    ({"messages": with_image("data:image/png;base64," + base64.b64encode(bytes(3000)).decode())}, "/v1/chat/completions", "larger than 2000 bytes"),
])
def test_configured_limits_refuse(small, gateway_client, patch, path, needle):
    body = {k: v for k, v in {**CHAT, **patch}.items() if v is not None}
    err = assert_clean_error(small.post(path, json=body), 400)
    assert needle in err["message"]
    if "messages" not in patch and "prompt" not in patch:  # the default limits accept the same request
        assert gateway_client.post(path, json=body).status_code == 200


def test_within_limits_is_served(small):
    assert_still_serving(small)
    r = small.post("/v1/chat/completions", json={**CHAT, "max_tokens": 8, "n": 2, "stop": "abc"})
    assert r.status_code == 200 and len(r.json()["choices"]) == 2
    err = assert_clean_error(small.post("/v1/chat/completions", json={**CHAT, "messages": with_image(png(5, 5))}),
                             400)  # a valid, small image reaches the model check: this one has no vision
    assert "does not accept images" in err["message"]


def test_worker_settings_travel_to_workers_started_by_serve(monkeypatch):
    from counterpoint.server.config import Settings, worker_env
    env = worker_env(Settings(max_waiting=7, request_deadline=12.5, internal_token="tok", max_tokens_cap=99), {})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seen = Settings()  # what the worker process reads
    assert (seen.max_waiting, seen.request_deadline, seen.internal_token, seen.max_tokens_cap) == (7, 12.5, "tok", 99)
