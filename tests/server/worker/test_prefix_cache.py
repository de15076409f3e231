"""Prefix caching across requests on the tiny Llama: a second request with the same long system prompt
takes those blocks from the cache (fewer tokens computed) and its output equals an engine without a cache."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from counterpoint.server.worker.torch.engine import Engine, EngineConfig
from counterpoint.server.worker_protocol import SamplingParams

from .engine_helpers import plain, run_all

SYSTEM = "You are a careful assistant who answers in full sentences and checks every fact twice. " * 3


def engine(model_dir, caching: bool) -> Engine:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return Engine(model, AutoTokenizer.from_pretrained(model_dir),
                  EngineConfig(kv_cache_bytes=8 << 20, enable_prefix_caching=caching))


def test_a_shared_system_prompt_is_computed_once(tiny_llama_dir, tokenizer):
    prompts = [tokenizer(SYSTEM + q)["input_ids"] for q in ("Where is Paris?", "Who wrote Hamlet?")]
    greedy = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    cached, uncached = engine(tiny_llama_dir, True), engine(tiny_llama_dir, False)
    for ids in prompts:
        got = run_all(cached, [(plain(ids), greedy)])["r0"]["token_ids"]
        assert got == run_all(uncached, [(plain(ids), greedy)])["r0"]["token_ids"]
    common = len(tokenizer(SYSTEM)["input_ids"]) - 1
    assert cached.block_manager.num_cached_tokens == (common // 16) * 16  # every full block of the shared part
    assert uncached.block_manager.num_cached_tokens == 0
    assert cached.block_manager.usage == 0.0  # cached blocks count as free
    again = run_all(cached, [(plain(prompts[0]), greedy)])["r0"]["token_ids"]  # a repeat: all but the last block
    assert again == run_all(uncached, [(plain(prompts[0]), greedy)])["r0"]["token_ids"]
    assert cached.block_manager.num_cached_tokens > (common // 16) * 16
