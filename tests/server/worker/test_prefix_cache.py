"""Prefix caching across requests on the tiny Llama: a second request with the same long system prompt
takes those blocks from the cache (fewer tokens computed) and its output equals an engine without a cache."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from counterpoint.decoders import REGISTRY, RequestContext
from counterpoint.server.worker.factory import model_info
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


@pytest.mark.parametrize("method", ["plain", "cd", "contrastive_search"])
def test_a_request_that_reads_every_prompt_position_ignores_the_cache(tiny_deep_dir, tiny_amateur_dir, method):
    """Prompt scoring needs the logits of every prompt position of every view (the amateur's too), contrastive
    search their hidden states: after the same prompt was cached, both must equal an engine without a cache."""
    results = []
    for caching in (True, False):
        model = AutoModelForCausalLM.from_pretrained(tiny_deep_dir, dtype=torch.float32)
        amateur = AutoModelForCausalLM.from_pretrained(tiny_amateur_dir, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(tiny_deep_dir)
        engine = Engine(model, tok, EngineConfig(kv_cache_bytes=8 << 20, enable_prefix_caching=caching),
                        amateur=amateur)
        ids = tok(SYSTEM + "Where is Paris?")["input_ids"]
        info = model_info(engine, "tiny", "amateur")
        run_all(engine, [(plain(ids), SamplingParams(temperature=0.0, max_tokens=2))])  # caches the prompt's blocks
        cls = REGISTRY[method]
        decoder = cls(cls.Params(), RequestContext(list(ids), info, prompt=SYSTEM))
        results.append(run_all(engine, [(decoder, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True,
                                                                 prompt_logprobs=1))])["r0"])
        if caching:
            assert engine.block_manager.block_of  # the first request left its prompt blocks in the cache
    cached, uncached = results
    assert cached["token_ids"] == uncached["token_ids"]
    assert len(cached["prompt_logprobs"]) == len(ids)
    scores = [[p.logprob or 0.0 for p in r["prompt_logprobs"]] for r in results]
    assert scores[0] == pytest.approx(scores[1], abs=1e-5)
