"""What the playground page relies on, without a browser: the page and its files are served without a key under a
strict Content-Security-Policy, `GET /v1/methods` gives every method's own parameter schema behind the key, and
streamed diagnostics name the original view's own choice of every token."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from counterpoint.decoders import REGISTRY
from counterpoint.server.gateway.playground import ASSETS

from tests.conftest import ThreadServer

KEY = "test-key"
EXPERIMENTS = {"contrast-ab": {"arms": [{"name": "plain", "decoding": "plain"},
                                        {"name": "dola", "weight": 2, "decoding": {"method": "dola", "alpha": 0.2}}]}}
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def client(tiny_worker):
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app
    app = create_app(Settings(worker_urls=[tiny_worker.url], api_key=KEY, experiments=EXPERIMENTS))
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/playground", "/playground/app.js", "/playground/style.css"])
def test_page_and_files_need_no_key_and_carry_a_strict_csp(client, path):
    r = client.get(path)
    assert r.status_code == 200
    csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'" and "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_home_links_to_the_playground_and_the_page_has_no_inline_code(client):
    assert 'href="/playground"' in client.get("/").text
    for name in ASSETS:
        if name.endswith(".html"):
            text = client.get("/" if name == "home.html" else f"/playground/{name}").text
            assert "<style" not in text and "style=" not in text and not re.search(r"\son\w+=", text)  # handlers
            assert all('src="' in line for line in text.splitlines() if "<script" in line)
    assert client.get("/playground/missing.js").status_code == 404
    assert client.get("/playground/..%2Fplayground.py").status_code == 404


def test_methods_give_each_parameter_schema_the_experiments_and_feedback(client):
    assert client.get("/v1/methods").status_code == 401
    body = client.get("/v1/methods", headers=AUTH).json()
    by_id = {m["id"]: m for m in body["data"]}
    assert set(by_id) == set(REGISTRY)
    for name, cls in REGISTRY.items():
        assert by_id[name]["parameters"] == cls.Params.model_json_schema()
        assert by_id[name]["description"].startswith(name)  # each module's docstring opens with its name
    assert by_id["dola"]["parameters"]["properties"]["alpha"]["maximum"] == 1.0
    assert body["experiments"] == [{"id": "contrast-ab", "arms": [
        {"name": "plain", "weight": 1.0, "decoding": "plain"},
        {"name": "dola", "weight": 2.0, "decoding": {"method": "dola", "alpha": 0.2}}]}]
    assert body["feedback"] is False  # no outcome log configured


def _stream(client, decoding):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me a story about the sea."}],
            "max_tokens": 12, "temperature": 0, "stream": True, "decoding": decoding}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
        assert r.status_code == 200
        chunks = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:") and "[DONE]" not in line]
    return [c["choices"][0] for c in chunks if c["choices"]]


def test_streamed_diagnostics_name_the_original_views_own_choice(client, tokenizer):
    choices = [c for c in _stream(client, {"method": "dola", "diagnostics": True}) if "diagnostics" in c]
    diags = [c["diagnostics"] for c in choices]
    assert sum(len(d["changed"]) for d in diags) == 12  # every generated token, even one whose text comes later
    num_changed = 0
    for choice, d in zip(choices, diags):
        assert len(d["own_token_ids"]) == len(d["own_tokens"]) == len(d["changed"]) == len(d["divergence"])
        assert d["own_tokens"] == [tokenizer.decode([t]) for t in d["own_token_ids"]]
        text = choice["delta"].get("content", "")
        for changed, own in zip(d["changed"], d["own_tokens"]):
            num_changed += changed
            if len(d["changed"]) == 1 and text:
                assert (own != text) == changed  # kept tokens are the original view's own choice
    assert num_changed > 0  # dola on the tiny 2-layer model really changes tokens
    plain = _stream(client, {"method": "plain", "diagnostics": True})
    assert plain and not any("diagnostics" in c for c in plain)  # no contrast view, nothing to report
