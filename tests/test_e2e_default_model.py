"""End to end: a real `counterpoint serve` subprocess on the embedded SmolLM2, driven by the openai SDK."""

from __future__ import annotations

import concurrent.futures

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from .conftest import free_port, start_serve

MODEL = "SmolLM2-135M-Instruct"
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers.",
             "Explain photosynthesis in one sentence.", "Who wrote Hamlet?", "What is 12 times 12?",
             "Name a famous painter.", "Give me a tip for learning Python."]


@pytest.fixture(scope="module")
def server(tmp_path_factory, default_model_dir):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = start_serve(["--worker-port", str(free_port()), "--threads", "2"], port, log)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused")


def test_models_list(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_greedy_equals_transformers_generate(client, default_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    for question in QUESTIONS[:3]:
        messages = [{"role": "user", "content": question}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
        with torch.no_grad():
            ref = model.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False)[0, len(ids):].tolist()
        ref_text = tokenizer.decode(ref, skip_special_tokens=True)
        resp = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=48)
        assert resp.choices[0].message.content == ref_text
        ended_on_eos = ref[-1] == tokenizer.eos_token_id
        assert resp.choices[0].finish_reason == ("stop" if ended_on_eos else "length")
        assert resp.usage.completion_tokens == len(ref)


def _stream(client, question: str) -> str:
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                            temperature=0, max_tokens=40, stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_eight_concurrent_streams_each_equal_alone(client):
    alone = [_stream(client, q) for q in QUESTIONS]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: _stream(client, q), QUESTIONS))
    assert together == alone


def test_sdk_completions_and_usage(client):
    resp = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert resp.choices[0].text and resp.usage.completion_tokens <= 5
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 4


def test_sdk_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                       extra_body={"decoding": "unknown"})
    assert "plain" in str(err.value)
