"""A table of hand-made bad requests: each gets a clean OpenAI-style 4xx, and the server keeps serving."""

from __future__ import annotations

import base64
import json

import pytest

from .helpers import CHAT, assert_clean_error, assert_still_serving, wait_kv_free

MSG = CHAT["messages"]
COMP = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 4}


def chat(**patch) -> dict:
    return {**CHAT, **patch}


def image(url) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def raw(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


B64_NOT_IMAGE = "data:image/png;base64," + base64.b64encode(b"definitely not a png").decode()

CASES = [  # (id, method, path, json body or raw bytes, expected status, expected param or None)
    # wrong types
    ("temperature-string", "POST", "/v1/chat/completions", chat(temperature="hot"), 400, "temperature"),
    ("max-tokens-string", "POST", "/v1/chat/completions", chat(max_tokens="ten"), 400, "max_tokens"),
    ("messages-string", "POST", "/v1/chat/completions", chat(messages="hi"), 400, "messages"),
    ("content-number", "POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), 400, None),
    ("message-number", "POST", "/v1/chat/completions", chat(messages=[5]), 400, "messages[0]"),
    ("unknown-role", "POST", "/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "x"}]), 400, None),
    ("model-number", "POST", "/v1/chat/completions", chat(model=5), 400, "model"),
    ("n-fraction", "POST", "/v1/chat/completions", chat(n=1.5), 400, "n"),
    ("stop-number", "POST", "/v1/chat/completions", chat(stop=5), 400, None),
    ("decoding-number", "POST", "/v1/chat/completions", chat(decoding=7), 400, None),
    ("body-array", "POST", "/v1/chat/completions", [], 400, None),
    ("body-null", "POST", "/v1/chat/completions", raw("null"), 400, None),
    ("body-string", "POST", "/v1/completions", raw('"prompt"'), 400, None),
    ("not-json", "POST", "/v1/chat/completions", raw("{model: tiny"), 400, None),
    ("deep-nesting", "POST", "/v1/chat/completions", raw("[" * 100_000), 400, None),
    ("text-part-without-text", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), 400, "messages[0].content[0]"),
    # huge numbers
    ("max-tokens-huge", "POST", "/v1/chat/completions", chat(max_tokens=10**30), 400, "max_tokens"),
    ("max-tokens-inf", "POST", "/v1/chat/completions", raw(json.dumps(chat())[:-1] + ', "max_tokens": 1e400}'),
     400, "max_tokens"),
    ("max-completion-tokens-huge", "POST", "/v1/chat/completions", chat(max_completion_tokens=10**9), 400,
     "max_completion_tokens"),
    ("n-huge", "POST", "/v1/chat/completions", chat(n=10**9), 400, "n"),
    ("seed-huge", "POST", "/v1/chat/completions", chat(seed=2**70), 400, "seed"),
    ("top-k-huge", "POST", "/v1/chat/completions", chat(top_k=10**20), 400, "top_k"),
    ("temperature-huge", "POST", "/v1/chat/completions", chat(temperature=1e308), 400, "temperature"),
    ("min-tokens-huge", "POST", "/v1/chat/completions", chat(min_tokens=10**12), 400, "min_tokens"),
    ("top-logprobs-huge", "POST", "/v1/chat/completions", chat(logprobs=True, top_logprobs=10**6), 400,
     "top_logprobs"),
    ("logprobs-huge", "POST", "/v1/completions", {**COMP, "logprobs": 10**6}, 400, "logprobs"),
    ("token-id-outside-vocab", "POST", "/v1/completions", {**COMP, "prompt": [1, 2, 10**9]}, 400, "prompt"),
    ("prompt-past-context", "POST", "/v1/completions", {**COMP, "prompt": [42] * 600}, 400, "max_tokens"),
    ("max-tokens-past-context", "POST", "/v1/chat/completions", chat(max_tokens=510), 400, "max_tokens"),
    ("long-text-prompt", "POST", "/v1/completions", {**COMP, "prompt": "word " * 40_000}, 400, "max_tokens"),
    ("too-many-messages", "POST", "/v1/chat/completions", chat(messages=MSG * 513), 400, "messages"),
    ("too-many-parts", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}] * 65}]), 400, None),
    ("too-many-stops", "POST", "/v1/chat/completions", chat(stop=[str(i) for i in range(17)]), 400, "stop"),
    ("stop-too-long", "POST", "/v1/chat/completions", chat(stop=["x" * 300]), 400, "stop"),
    ("too-many-stop-ids", "POST", "/v1/chat/completions", chat(stop_token_ids=list(range(65))), 400,
     "stop_token_ids"),
    ("too-many-prompts", "POST", "/v1/completions", {**COMP, "prompt": ["a"] * 65}, 400, "prompt"),
    # NaN and infinities (Python's JSON reader accepts these literals)
    ("temperature-nan", "POST", "/v1/chat/completions", raw(json.dumps(chat())[:-1] + ', "temperature": NaN}'),
     400, "temperature"),
    ("top-p-infinity", "POST", "/v1/chat/completions", raw(json.dumps(chat())[:-1] + ', "top_p": Infinity}'),
     400, "top_p"),
    ("penalty-minus-infinity", "POST", "/v1/chat/completions",
     raw(json.dumps(chat())[:-1] + ', "repetition_penalty": -Infinity}'), 400, "repetition_penalty"),
    ("decoding-param-nan", "POST", "/v1/chat/completions",
     raw(json.dumps(chat())[:-1] + ', "decoding": {"method": "plain", "alpha": NaN}}'), 400, None),
    # empty things
    ("empty-messages", "POST", "/v1/chat/completions", chat(messages=[]), 400, "messages"),
    ("empty-message-object", "POST", "/v1/chat/completions", chat(messages=[{}]), 400, None),
    ("empty-prompt", "POST", "/v1/completions", {**COMP, "prompt": ""}, 400, "prompt"),
    ("empty-prompt-list", "POST", "/v1/completions", {**COMP, "prompt": []}, 400, "prompt"),
    ("empty-token-list-in-batch", "POST", "/v1/completions", {**COMP, "prompt": [[]]}, 400, "prompt"),
    ("empty-body", "POST", "/v1/chat/completions", raw(""), 400, None),
    ("empty-stop-string", "POST", "/v1/chat/completions", chat(stop=[""]), 400, "stop"),
    # invalid UTF-8 and odd unicode
    ("invalid-utf8", "POST", "/v1/chat/completions",
     b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}', 400, None),
    ("lone-surrogate", "POST", "/v1/chat/completions",
     raw('{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "a\\ud800b"}]}'), 400, None),
    # images
    ("image-bad-base64", "POST", "/v1/chat/completions", chat(messages=image("data:image/png;base64,!!!!")), 400,
     "messages[0].content[1]"),
    ("image-not-an-image", "POST", "/v1/chat/completions", chat(messages=image(B64_NOT_IMAGE)), 400, None),
    ("image-not-image-mime", "POST", "/v1/chat/completions", chat(messages=image("data:text/plain;base64,aGk=")),
     400, None),
    ("image-url-number", "POST", "/v1/chat/completions", chat(messages=image(5)), 400, None),
    ("image-without-url", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), 400, None),
    ("image-part-without-image", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), 400, None),
    ("image-file-url", "POST", "/v1/chat/completions", chat(messages=image("file:///etc/passwd")), 400, None),
    # unknown methods and paths
    ("put-chat", "PUT", "/v1/chat/completions", chat(), 405, None),
    ("get-completions", "GET", "/v1/completions", None, 405, None),
    ("delete-models", "DELETE", "/v1/models", None, 405, None),
    ("unknown-path", "POST", "/v1/engines/tiny/completions", chat(), 404, None),
    ("unknown-decoding-method", "POST", "/v1/chat/completions", chat(decoding={"method": "magic"}), 400,
     "decoding.method"),
    ("unknown-experiment", "POST", "/v1/chat/completions", chat(decoding={"experiment": "nope"}), 400,
     "decoding.experiment"),
    ("unknown-model", "POST", "/v1/chat/completions", chat(model="gpt-9"), 404, "model"),
    ("unknown-field", "POST", "/v1/chat/completions", chat(functions=[]), 400, "functions"),
    # negative numbers
    ("negative-temperature", "POST", "/v1/chat/completions", chat(temperature=-0.5), 400, "temperature"),
    ("negative-top-p", "POST", "/v1/chat/completions", chat(top_p=-1), 400, "top_p"),
    ("negative-max-tokens", "POST", "/v1/chat/completions", chat(max_tokens=-1), 400, "max_tokens"),
    ("negative-n", "POST", "/v1/chat/completions", chat(n=-1), 400, "n"),
    ("negative-top-k", "POST", "/v1/chat/completions", chat(top_k=-2), 400, "top_k"),
    ("negative-min-tokens", "POST", "/v1/chat/completions", chat(min_tokens=-1), 400, "min_tokens"),
    ("negative-logprobs", "POST", "/v1/completions", {**COMP, "logprobs": -1}, 400, "logprobs"),
    ("negative-stop-id", "POST", "/v1/chat/completions", chat(stop_token_ids=[-1]), 400, "stop_token_ids"),
    ("negative-prompt-id", "POST", "/v1/completions", {**COMP, "prompt": [1, -5]}, 400, "prompt"),
    ("negative-seed", "POST", "/v1/chat/completions", chat(seed=-1), 400, "seed"),
    ("zero-repetition-penalty", "POST", "/v1/chat/completions", chat(repetition_penalty=0), 400,
     "repetition_penalty"),
    ("tiny-repetition-penalty", "POST", "/v1/chat/completions", chat(repetition_penalty=1e-300), 400,
     "repetition_penalty"),
]


@pytest.mark.parametrize("method, path, body, status, param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request(gateway_client, tiny_worker, method, path, body, status, param):
    if isinstance(body, bytes):
        r = gateway_client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        r = gateway_client.request(method, path, json=body)
    if status is None:  # either refused cleanly or answered: never a 5xx
        assert r.status_code == 200 or assert_clean_error(r)["type"] == "invalid_request_error", r.text
    else:
        err = assert_clean_error(r, status)
        if param is not None:
            assert err["param"] == param, err
    assert_still_serving(gateway_client)
    wait_kv_free(tiny_worker.app.state.worker.core)


def test_oversized_bodies_get_413(gateway_client, tiny_worker):
    big = b'{"model": "tiny", "prompt": "' + b"x" * (9 << 20) + b'"}'
    assert_clean_error(gateway_client.post("/v1/completions", content=big,
                                           headers={"content-type": "application/json"}), 413)

    def chunks():  # no Content-Length: counted while reading
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(10):
            yield b"y" * (1 << 20)
        yield b'"}'
    assert_clean_error(gateway_client.post("/v1/completions", content=chunks(),
                                           headers={"content-type": "application/json"}), 413)
    assert_still_serving(gateway_client)
