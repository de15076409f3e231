"""Fuzzing the gateway's OpenAPI schema with hypothesis: no request, valid or mangled, gets a 5xx.

Bodies come from the request schemas the gateway publishes (hypothesis-jsonschema), half of them pinned to the
served model with a small max_tokens so they reach the worker and generate, and some with one field replaced
by arbitrary JSON. Bounded: a fixed number of examples, derandomized so CI sees the same ones.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from .helpers import assert_clean_error, assert_still_serving, wait_kv_free

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=10)
ENDPOINTS = {"/v1/chat/completions": "ChatCompletionRequest", "/v1/completions": "CompletionRequest"}


def _spec() -> dict:
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app
    return create_app(Settings(worker_urls=[])).openapi()


SPEC = _spec()


def bodies(name: str) -> st.SearchStrategy:
    schema = SPEC["components"]["schemas"][name]
    anything = from_schema({**schema, "components": SPEC["components"]})
    small = {"type": "integer", "minimum": 0, "maximum": 4}
    props = {**schema["properties"], "model": {"const": "tiny"}, "max_tokens": small, "min_tokens": small,
             "n": {"type": "integer", "minimum": 1, "maximum": 2}}
    if "max_completion_tokens" in props:
        props["max_completion_tokens"] = small
    served = from_schema({**schema, "properties": props, "components": SPEC["components"],
                          "required": sorted({*schema.get("required", []), "model", "max_tokens"})})
    mangled = st.tuples(served, st.sampled_from(sorted(props)), JSON).map(lambda t: {**t[0], t[1]: t[2]})
    return st.one_of(anything, served, mangled)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_clean_error(response)
    elif response.headers["content-type"].startswith("text/event-stream"):
        data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert data, response.text
        for item in data[:-1]:
            assert "server_error" not in item, item
        assert data[-1] == "[DONE]" or json.loads(data[-1])["error"]["type"] != "server_error"
    else:
        assert response.json()["choices"]


@pytest.fixture(scope="module")
def client(tiny_gateway):
    with httpx.Client(base_url=tiny_gateway.url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_schema_fuzz_never_5xx(client, tiny_worker, path):
    @FUZZ
    @given(body=bodies(ENDPOINTS[path]))
    def run(body):
        check(client.post(path, content=json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass"),
                          headers={"content-type": "application/json"}))
    run()
    wait_kv_free(tiny_worker.app.state.worker.core)
    assert_still_serving(client)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_raw_bytes_never_5xx(client, tiny_worker, path):
    @FUZZ
    @given(body=st.binary(max_size=256) | JSON.map(lambda v: json.dumps(v).encode()))
    def run(body):
        check(client.post(path, content=body, headers={"content-type": "application/json"}))
    run()
    assert_still_serving(client)
