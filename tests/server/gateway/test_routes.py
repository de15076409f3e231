"""The OpenAI routes through a live gateway and a live worker on the tiny model."""

from __future__ import annotations

import json

import pytest

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8, "temperature": 0}


def sse(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_models_and_health(gateway_client):
    models = gateway_client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
    assert "plain" in models["data"][0]["methods"]
    assert gateway_client.get("/health").json()["status"] == "ok"


def test_chat_completion(gateway_client):
    r = gateway_client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert body["decoding"]["method"] == "plain"
    assert json.loads(r.headers["x-counterpoint-decoding"])["method"] == "plain"


def test_chat_stream_equals_non_stream(gateway_client):
    whole = gateway_client.post("/v1/chat/completions", json={**CHAT, "ignore_eos": True}).json()
    with gateway_client.stream("POST", "/v1/chat/completions",
                               json={**CHAT, "ignore_eos": True, "stream": True,
                                     "stream_options": {"include_usage": True}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[0]["decoding"]["method"] == "plain"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_completion_n_and_seed(gateway_client):
    req = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 6, "n": 3, "seed": 1, "temperature": 1.0}
    a = gateway_client.post("/v1/completions", json=req).json()
    b = gateway_client.post("/v1/completions", json=req).json()
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    assert len({c["text"] for c in a["choices"]}) > 1  # each choice draws its own sample
    assert 3 <= a["usage"]["completion_tokens"] <= 18


def test_completion_prompt_batch_and_token_ids(gateway_client, tokenizer):
    ids = tokenizer("The quick brown")["input_ids"]
    body = gateway_client.post("/v1/completions", json={"model": "tiny", "prompt": ["a b c", "d e f"],
                                                       "max_tokens": 3, "temperature": 0}).json()
    assert len(body["choices"]) == 2
    one = gateway_client.post("/v1/completions", json={"model": "tiny", "prompt": ids, "max_tokens": 3,
                                                      "temperature": 0}).json()
    two = gateway_client.post("/v1/completions", json={"model": "tiny", "prompt": "The quick brown",
                                                      "max_tokens": 3, "temperature": 0}).json()
    assert one["choices"][0]["text"] == two["choices"][0]["text"]


def test_prompt_scoring_with_echo(gateway_client):
    body = gateway_client.post("/v1/completions", json={"model": "tiny", "prompt": "The capital of France is Paris",
                                                       "max_tokens": 0, "echo": True, "logprobs": 1}).json()
    choice = body["choices"][0]
    assert choice["text"] == "The capital of France is Paris"
    lp = choice["logprobs"]
    assert lp["token_logprobs"][0] is None and all(x < 0 for x in lp["token_logprobs"][1:])
    assert "".join(lp["tokens"]) == choice["text"] and lp["text_offset"][0] == 0
    assert body["usage"]["completion_tokens"] == 0


def test_chat_logprobs(gateway_client):
    body = gateway_client.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 2}).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert content and all(len(c["top_logprobs"]) == 2 for c in content)


def test_stop_string(gateway_client):
    full = gateway_client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 12,
                                                       "temperature": 0, "ignore_eos": True}).json()
    text = full["choices"][0]["text"]
    stop = text[4:7]
    cut = gateway_client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 12,
                                                      "temperature": 0, "ignore_eos": True, "stop": stop}).json()
    assert cut["choices"][0]["text"] == text[:text.find(stop)] and cut["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("patch, status, param", [
    ({"model": "nope"}, 404, "model"),
    ({"temperature": -1}, 400, "temperature"),
    ({"temperature": "hot"}, 400, "temperature"),
    ({"max_tokens": 10**9}, 400, "max_tokens"),
    ({"messages": []}, 400, "messages"),
    ({"bogus_field": 1}, 400, "bogus_field"),
    ({"decoding": "nonsense"}, 400, "decoding.method"),
    ({"decoding": {"method": "plain", "alpha": 1}}, 400, "decoding"),
    ({"top_logprobs": 2}, 400, None),
    ({"n": 0}, 400, "n"),
    ({"stop": [""]}, 400, "stop"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
     400, "messages[0].content[0]"),
])
def test_bad_requests_get_openai_errors(gateway_client, patch, status, param):
    r = gateway_client.post("/v1/chat/completions", json={**CHAT, **patch})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param:
        assert err["param"] == param
    assert gateway_client.post("/v1/chat/completions", json=CHAT).status_code == 200  # still serving


def test_unknown_method_lists_supported(gateway_client):
    r = gateway_client.post("/v1/chat/completions", json={**CHAT, "decoding": {"method": "magic"}})
    assert r.status_code == 400 and "plain" in r.json()["error"]["message"]


def test_invalid_json_and_huge_body(gateway_client):
    r = gateway_client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = gateway_client.post("/v1/completions", content=b"x" * (9 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_metrics_exposed(gateway_client):
    gateway_client.post("/v1/chat/completions", json=CHAT)
    text = gateway_client.get("/metrics").text
    assert "counterpoint_requests_total" in text and "counterpoint_e2e_request_latency_seconds_bucket" in text


def test_api_key(tiny_worker):
    from fastapi.testclient import TestClient

    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app
    with TestClient(create_app(Settings(worker_urls=[tiny_worker.url], api_key="sekret"))) as client:
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sekret"})
        assert r.status_code == 200
        assert client.get("/health").status_code == 200  # health needs no key


def test_disconnect_mid_stream_frees_kv_blocks(tiny_gateway, tiny_worker):
    import time

    import httpx
    core = tiny_worker.app.state.worker.core
    with httpx.Client(base_url=tiny_gateway.url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions",
                           json={**CHAT, "max_tokens": 400, "ignore_eos": True, "stream": True}) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i > 6:
                    break  # leave mid-stream
    deadline = time.monotonic() + 10
    while core.stats.kv_cache_usage != 0.0 or core.stats.num_running:
        assert time.monotonic() < deadline, "blocks were not freed after the client left"
        time.sleep(0.05)


def test_text_offsets_follow_the_text_across_split_characters(gateway_client):
    prompt = "Café 東京 🙂 naïve text 🙂🙂 end"
    body = gateway_client.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 12,
                                                       "echo": True, "logprobs": 0, "temperature": 0,
                                                       "ignore_eos": True}).json()
    choice = body["choices"][0]
    text, lp = choice["text"], choice["logprobs"]
    assert text.startswith(prompt)
    offsets = lp["text_offset"]
    assert offsets == sorted(offsets) and offsets[0] == 0 and offsets[-1] <= len(text)
    for token, offset in zip(lp["tokens"], offsets):
        if "\ufffd" not in token:  # a whole-character token sits exactly where its text is
            assert text[offset:offset + len(token)] == token
    assert lp["token_logprobs"].count(None) == 1  # only the first prompt token has no logprob
    assert min(offsets[-12:]) >= len(prompt)  # the 12 generated tokens all sit after the echoed prompt
