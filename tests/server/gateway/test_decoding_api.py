"""Decoding methods through the HTTP API: selection, validation, what the response reports."""

from __future__ import annotations

import json

import pytest

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "I think it is 5. What is 2 + 2, right?"}],
        "max_tokens": 6, "temperature": 0}


def post(client, body, path="/v1/chat/completions"):
    return client.post(path, json=body)


@pytest.mark.parametrize("decoding", ["cfg", {"method": "cfg", "guidance_scale": 2.0}, "dola",
                                      {"method": "dola", "layers": "low"}, {"method": "cd", "amateur": "layer:1"},
                                      "lqcd", {"method": "overshadow", "conditions": ["What is 2 + 2"]}])
def test_methods_run_and_report(gateway_client, decoding):
    r = post(gateway_client, {**CHAT, "decoding": decoding})
    assert r.status_code == 200, r.text
    body = r.json()
    method = decoding if isinstance(decoding, str) else decoding["method"]
    assert body["decoding"]["method"] == method
    assert json.loads(r.headers["x-counterpoint-decoding"])["method"] == method
    assert body["choices"][0]["message"]["content"] is not None


def test_resolved_parameters_and_decisions(gateway_client):
    body = post(gateway_client, {**CHAT, "decoding": "lqcd"}).json()
    assert body["decoding"]["params"] == {"alpha": 1.0, "beta": 0.1, "neutral_query": None}
    assert body["decoding"]["decided"]["neutral_query"] == "What is 2 + 2?"
    body = post(gateway_client, {**CHAT, "decoding": {"method": "dola", "layers": [0, 1]}}).json()
    assert body["decoding"]["decided"]["candidate_layers"] == [0, 1]
    assert sum(body["decoding"]["decided"]["chosen_layers"].values()) == body["usage"]["completion_tokens"]


@pytest.mark.parametrize("decoding, message", [
    ({"method": "cd"}, "amateur"),
    ({"method": "cd", "amateur": "layer:99"}, "out of range"),
    ({"method": "scmoe"}, "Mixture-of-Experts"),
    ({"method": "lol"}, "amateur"),
    ({"method": "cfg", "guidance_scale": -1}, "guidance_scale"),
    ({"method": "dola", "layers": "middle"}, "layers"),
    ({"method": "cd", "alpha": 2}, "alpha"),
    ({"method": "cfg", "unknown": 1}, "unknown"),
])
def test_method_model_mismatch_and_bad_params_are_400(gateway_client, decoding, message):
    r = post(gateway_client, {**CHAT, "decoding": decoding})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]


def test_models_list_methods_the_model_can_run(gateway_client):
    methods = gateway_client.get("/v1/models").json()["data"][0]["methods"]
    assert "cfg" in methods and "dola" in methods and "scmoe" not in methods and "lol" not in methods


def test_diagnostics(gateway_client):
    body = post(gateway_client, {**CHAT, "max_tokens": 8, "ignore_eos": True,
                                 "decoding": {"method": "cd", "amateur": "layer:0", "diagnostics": True}}).json()
    diag = body["choices"][0]["diagnostics"]
    assert diag["tokens"] == 8 and 0 <= diag["changed_tokens"] <= 8 and diag["mean_divergence"] > 0
    with gateway_client.stream("POST", "/v1/chat/completions",
                               json={**CHAT, "stream": True, "max_tokens": 4, "ignore_eos": True,
                                     "decoding": {"method": "cfg", "diagnostics": True}}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    flags = [c["choices"][0]["diagnostics"]["changed"] for c in chunks if c["choices"] and "diagnostics" in c["choices"][0]]
    assert sum(len(f) for f in flags) == 4


def test_streaming_n_and_stop_work_with_methods(gateway_client):
    body = post(gateway_client, {**CHAT, "n": 2, "temperature": 0.8, "seed": 3, "decoding": "cfg"}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    with gateway_client.stream("POST", "/v1/chat/completions",
                               json={**CHAT, "stream": True, "decoding": "dola"}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"


def test_prompt_scoring_returns_fused_logprobs(gateway_client):
    req = {"model": "tiny", "prompt": "The capital of France is Paris", "max_tokens": 0, "echo": True, "logprobs": 0}
    plain = post(gateway_client, req, "/v1/completions").json()["choices"][0]["logprobs"]["token_logprobs"]
    cd = post(gateway_client, {**req, "decoding": {"method": "cd", "amateur": "layer:1", "alpha": 1e-9}},
              "/v1/completions").json()["choices"][0]["logprobs"]["token_logprobs"]
    assert plain[0] is None and cd[0] is None and len(plain) == len(cd)
    assert all(abs(a - b) > 1e-4 for a, b in zip(plain[1:], cd[1:]))
    strict = post(gateway_client, {**req, "decoding": {"method": "cd", "amateur": "layer:1"}}, "/v1/completions")
    ruled_out = strict.json()["choices"][0]["logprobs"]["token_logprobs"][1:]
    assert "Infinity" not in strict.text and min(ruled_out) == -9999.0  # tokens outside APC, as finite JSON


def test_negative_messages_the_template_cannot_render_are_400(gateway_client):
    r = post(gateway_client, {**CHAT, "decoding": {"method": "cfg",
                                                   "negative_messages": [{"role": 5, "content": "x"}]}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "decoding" and "chat template" in r.json()["error"]["message"]
    assert post(gateway_client, CHAT).status_code == 200
