"""Chat requests with images through the gateway and a live worker: data URLs in, text out, 400s that name the part."""

from __future__ import annotations

import base64

import pytest

from .conftest import data_url, make_image


def chat(model: str, url: str | None, text: str = "Describe the picture.", **extra) -> dict:
    content = ([{"type": "image_url", "image_url": {"url": url}}] if url else []) + [{"type": "text", "text": text}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 6,
            "temperature": 0, "ignore_eos": True, **extra}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_data_url_in_text_out(vision_client, fmt):
    r = vision_client.post("/v1/chat/completions", json=chat("tiny-llava", data_url(make_image(1), fmt)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] == 6
    text_only = vision_client.post("/v1/chat/completions", json=chat("tiny-llava", None)).json()
    assert body["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + 25  # image tokens count


def test_the_image_changes_the_answer_and_methods_run(vision_client):
    answers = {}
    for seed in (1, 2):
        r = vision_client.post("/v1/chat/completions", json=chat("tiny-llava", data_url(make_image(seed)), max_tokens=10))
        answers[seed] = r.json()["choices"][0]["message"]["content"]
    assert answers[1] != answers[2]
    for decoding in ({"method": "vcd", "noise_step": 700}, {"method": "ritual", "transform": "rotation"},
                     {"method": "lqcd", "neutral_query": "Describe it."}):
        r = vision_client.post("/v1/chat/completions", json=chat("tiny-llava", data_url(make_image(1)), seed=3,
                                                                 decoding=decoding, stream=False))
        assert r.status_code == 200, r.text
        assert r.json()["decoding"]["method"] == decoding["method"]
    r = vision_client.post("/v1/chat/completions", json=chat("tiny-llava", data_url(make_image(1)), seed=3,
                                                             decoding="ritual"))
    assert r.json()["decoding"]["decided"]["transform"] in {"horizontal_flip", "vertical_flip", "rotation",
                                                            "color_jitter", "gaussian_blur", "random_resized_crop"}


def test_streaming_with_an_image(vision_client):
    with vision_client.stream("POST", "/v1/chat/completions",
                              json=chat("tiny-llava", data_url(make_image(4)), stream=True, decoding="vcd")) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]" and len(lines) >= 3


def test_models_list_vision_methods_only_where_they_run(vision_client):
    models = {m["id"]: m for m in vision_client.get("/v1/models").json()["data"]}
    assert {"vcd", "ritual", "lqcd", "plain"} <= set(models["tiny-llava"]["methods"])
    assert models["tiny-llava"]["vision"] is True
    assert not {"vcd", "ritual"} & set(models["tiny"]["methods"]) and models["tiny"]["vision"] is False


GIF = "data:image/gif;base64," + base64.b64encode(b"GIF89a\x01\x00\x01\x00").decode()


@pytest.mark.parametrize("url, words", [
    ("data:image/png;base64,not-base64!!", "base64"),
    ("data:image/png;base64," + base64.b64encode(b"this is no picture").decode(), "could not be read"),
    (GIF, "unsupported or corrupt"),
    ("data:image/png;base64" + "AAAA", "data:image/...;base64 URL"),
    ("ftp://example.com/cat.png", "must be an http(s) URL"),
    ("http://127.0.0.1:9/cat.png", "may not fetch from"),
    ("http://169.254.169.254/latest/meta-data", "may not fetch from"),
    ("http://[::1]/cat.png", "may not fetch from"),
    ("http://10.0.0.8/cat.png", "may not fetch from"),
])
def test_bad_images_get_400_naming_the_part(vision_client, url, words):
    body = chat("tiny-llava", None)
    body["messages"] = [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                                     {"type": "image_url", "image_url": {"url": url}}]}]
    r = vision_client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "messages[1].content[1]" and words in err["message"], err


@pytest.mark.parametrize("model, decoding, url, words", [
    ("tiny", None, data_url(make_image(1)), "does not accept images"),
    ("tiny", "vcd", None, "vision-language model"),
    ("tiny", "ritual", None, "vision-language model"),
    ("tiny-llava", "vcd", None, "needs an image"),
    ("tiny-llava", "ritual", None, "needs an image"),
    ("tiny-llava", {"method": "ritual", "transform": "sepia"}, data_url(make_image(1)), "transform"),
    ("tiny-llava", {"method": "vcd", "noise_step": 1000}, data_url(make_image(1)), "noise_step"),
])
def test_method_model_mismatch_is_400(vision_client, model, decoding, url, words):
    extra = {"decoding": decoding} if decoding else {}
    r = vision_client.post("/v1/chat/completions", json=chat(model, url, **extra))
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"] + str(r.json()["error"]["param"])
    assert vision_client.post("/v1/chat/completions", json=chat("tiny-llava", data_url(make_image(1)))).status_code == 200


def test_missing_image_url_is_400(vision_client):
    body = chat("tiny-llava", None)
    body["messages"][0]["content"].insert(0, {"type": "image_url", "image_url": {}})
    r = vision_client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content[0]"
