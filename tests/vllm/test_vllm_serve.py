"""`counterpoint serve --backend vllm` end to end: the OpenAI API, /v1/models methods, 400s, streaming."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import free_port, start_serve


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    for attempt in range(3):  # ports are picked free but may be taken before serve binds them
        port = free_port()
        worker_port = next(p for p in iter(free_port, None) if p != port)
        try:
            proc = start_serve(["--backend", "vllm", "--served-model-name", "smol", "--worker-port", str(worker_port),
                                "--max-model-len", "1024", "--threads", "1"], port, log,
                               env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"})
            break
        except RuntimeError as exc:
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_models_say_which_methods_the_vllm_backend_runs(served):
    model = httpx.get(f"{served}/v1/models").json()["data"][0]
    assert model["id"] == "smol" and model["backend"] == "vllm"
    assert set(model["methods"]) == {"plain", "cfg", "lqcd", "overshadow"}


def test_chat_plain_and_cfg_stream_through_the_gateway(served):
    from openai import OpenAI
    client = OpenAI(base_url=f"{served}/v1", api_key="x")
    msgs = [{"role": "user", "content": "Say hello."}]
    r = client.chat.completions.create(model="smol", messages=msgs, max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(
        model="smol", messages=msgs, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
        extra_body={"decoding": {"method": "cfg", "negative_messages": [{"role": "user", "content": "Be rude."}]}}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and 0 < chunks[-1].usage.completion_tokens <= 8


def test_dola_answers_400_naming_the_torch_backend(served):
    r = httpx.post(f"{served}/v1/completions", json={"model": "smol", "prompt": "Hi", "decoding": "dola"})
    assert r.status_code == 400 and "--backend torch" in r.json()["error"]["message"]
