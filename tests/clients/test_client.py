"""The typed client, sync and async, against a live gateway on the tiny model."""

from __future__ import annotations

import asyncio

import pytest

from counterpoint.clients import decoding as dec
from counterpoint.clients.client import AsyncClient, Client, CounterpointError

HELLO = [{"role": "user", "content": "Hello!"}]


def test_sync_chat_and_stream_agree(tiny_gateway):
    with Client(tiny_gateway.url) as c:
        assert c.default_model() == "tiny"
        whole = c.chat(HELLO, max_tokens=6, temperature=0, ignore_eos=True, decoding=dec.plain())
        assert whole.id.startswith("chatcmpl-") and whole.decoding.method == "plain"
        assert whole.usage.completion_tokens == 6 and whole.choices[0].finish_reason == "length"
        chunks = list(c.chat_stream(HELLO, max_tokens=6, temperature=0, ignore_eos=True))
    assert chunks[0].decoding.method == "plain" and chunks[-1].usage.completion_tokens == 6
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == whole.text


def test_sync_completions(tiny_gateway):
    with Client(tiny_gateway.url) as c:
        whole = c.complete("Once upon", max_tokens=5, temperature=0, ignore_eos=True)
        parts = [ch.text for ch in c.complete_stream("Once upon", max_tokens=5, temperature=0, ignore_eos=True)]
    assert whole.text and "".join(parts) == whole.text


def test_errors_raise_with_the_server_fields(tiny_gateway):
    with Client(tiny_gateway.url) as c:
        with pytest.raises(CounterpointError) as err:
            c.chat(HELLO, model="nope")
        assert err.value.status == 404 and err.value.code == "model_not_found"
        with pytest.raises(CounterpointError) as err:
            list(c.chat_stream(HELLO, decoding={"method": "magic"}))
        assert err.value.status == 400 and err.value.param == "decoding.method"


def test_async_client(tiny_gateway):
    async def main():
        async with AsyncClient(tiny_gateway.url) as c:
            whole = await c.chat(HELLO, max_tokens=4, temperature=0, ignore_eos=True)
            streamed = [ch async for ch in c.chat_stream(HELLO, max_tokens=4, temperature=0, ignore_eos=True)]
            comp = await c.complete("abc", max_tokens=3, temperature=0)
            comp_parts = [ch.text async for ch in c.complete_stream("abc", max_tokens=3, temperature=0)]
            return whole, streamed, comp, comp_parts
    whole, streamed, comp, comp_parts = asyncio.run(main())
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == whole.text
    assert "".join(comp_parts) == comp.text


def test_experiment_and_feedback(ab_gateway):
    async def main():
        async with AsyncClient(ab_gateway.url) as c:
            r = await c.chat(HELLO, user="erin", max_tokens=2, decoding=dec.experiment("greedy-ab"))
            return r, await c.feedback(r.id, score=4.0, label="good")
    r, fb = asyncio.run(main())
    assert r.decoding.experiment == "greedy-ab" and r.decoding.arm in ("control", "treatment")
    assert fb["completion_id"] == r.id
    with Client(ab_gateway.url) as c, pytest.raises(CounterpointError) as err:
        c.feedback("chatcmpl-unknown", score=1)
    assert err.value.status == 404
