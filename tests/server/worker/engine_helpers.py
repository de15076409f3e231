"""Driving an Engine directly (no HTTP) in tests."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from counterpoint.decoders import RequestContext
from counterpoint.decoders.plain import Plain
from counterpoint.server.worker.torch.engine import Engine, EngineConfig
from counterpoint.server.worker.torch.scheduler import SchedulerConfig
from counterpoint.server.worker_protocol import SamplingParams


def make_engine(model_dir, kv_cache_bytes: int = 8 << 20, max_num_seqs: int = 64, block_size: int = 16,
                max_num_batched_tokens: int = 4096) -> Engine:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return Engine(model, tokenizer, EngineConfig(block_size=block_size, kv_cache_bytes=kv_cache_bytes,
                                                 scheduler=SchedulerConfig(max_num_seqs=max_num_seqs,
                                                                           max_num_batched_tokens=max_num_batched_tokens)))


def plain(ids: list[int]) -> Plain:
    return Plain(Plain.Params(), RequestContext(prompt_ids=list(ids), model_info=None))


def run_all(engine: Engine, requests: list[tuple[object, SamplingParams]], max_steps: int = 10_000) -> dict:
    """Add (decoder, sampling) pairs, step until all finish; returns group id -> dict of results."""
    results = {}
    for i, (decoder, sampling) in enumerate(requests):
        engine.add(f"r{i}", 0, decoder, sampling)
        results[f"r{i}"] = {"token_ids": [], "text": "", "finish_reason": None, "logprobs": [],
                            "prompt_logprobs": None}
    for _ in range(max_steps):
        if not engine.has_work:
            break
        for out in engine.step():
            r = results[out.group_id]
            r["token_ids"] += out.token_ids
            r["text"] += out.text
            r["logprobs"] += out.logprobs or []
            r["prompt_logprobs"] = r["prompt_logprobs"] or out.prompt_logprobs
            r["finish_reason"] = out.finish_reason
    return results


def hf_greedy(model_dir, ids: list[int], max_new_tokens: int) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.generation_config.eos_token_id = None  # run the full length, like ignore_eos
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()
