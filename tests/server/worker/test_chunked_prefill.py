"""Chunked prefill on the tiny Llama: a long prompt computed over several steps gives exactly the output it
gets in one piece, for one view and for two views sharing a prefix, while other streams keep decoding."""

from __future__ import annotations

import pytest

from counterpoint.decoders import RequestContext
from counterpoint.decoders.cfg import CFG
from counterpoint.server.worker_protocol import SamplingParams

from .engine_helpers import hf_greedy, make_engine, plain, run_all

LONG = "The history of the town goes back many centuries, " * 12


@pytest.fixture(scope="module")
def chunked(tiny_llama_dir):
    return make_engine(tiny_llama_dir, max_num_batched_tokens=32)


def greedy(n: int = 12) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)


def cfg(ids: list[int], negative: list[int]) -> CFG:
    ctx = RequestContext(prompt_ids=ids, model_info=None, prompt="x", tokenize=lambda _: negative)
    return CFG(CFG.Params(guidance_scale=8.0, negative_prompt="x"), ctx)


def test_a_chunked_prompt_equals_generate(chunked, tiny_llama_dir, tokenizer):
    ids = tokenizer(LONG)["input_ids"]
    assert len(ids) > 3 * 32  # several chunks
    assert run_all(chunked, [(plain(ids), greedy())])["r0"]["token_ids"] == hf_greedy(tiny_llama_dir, ids, 12)


def test_chunks_never_stall_a_decoding_stream(chunked, tokenizer):
    short, long = tokenizer("Hello there")["input_ids"], tokenizer(LONG)["input_ids"]
    alone = run_all(chunked, [(plain(short), greedy(30))])["r0"]["token_ids"]
    chunked.add("short", 0, plain(short), greedy(30))
    for _ in range(3):
        chunked.step()
    chunked.add("long", 0, plain(long), greedy())
    tokens, steps_without_short = {"short": [], "long": []}, 0
    while chunked.has_work:
        outs = {o.group_id: o for o in chunked.step()}
        steps_without_short += "short" not in outs and "short" in chunked.groups
        for gid, o in outs.items():
            tokens[gid] += o.token_ids
    assert steps_without_short == 0  # the short stream got a token in every step while the long prompt ran
    assert tokens["short"] == alone[3:]


def test_two_views_sharing_a_prefix_chunk_exactly(tiny_llama_dir, tokenizer):
    ids = tokenizer(LONG + "Q: where?")["input_ids"]
    negative = tokenizer(LONG + "Numbers: 7 7 7 7 7 7")["input_ids"]  # shares its first blocks with the prompt
    whole = make_engine(tiny_llama_dir)
    expected = run_all(whole, [(cfg(ids, negative), greedy())])["r0"]["token_ids"]
    got = run_all(make_engine(tiny_llama_dir, max_num_batched_tokens=24), [(cfg(ids, negative), greedy())])
    assert got["r0"]["token_ids"] == expected
    assert expected != run_all(whole, [(plain(ids), greedy())])["r0"]["token_ids"]  # the contrast matters here
