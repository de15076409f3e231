"""The engine on a tiny random Llama: exactness against transformers, batching, views, limits."""

from __future__ import annotations

import pytest
import torch

from counterpoint.decoders import View
from counterpoint.decoders.plain import Plain
from counterpoint.server.worker_protocol import SamplingParams

from .engine_helpers import hf_greedy, make_engine, plain, run_all

PROMPTS = ["Hello there, how are you?", "The quick brown fox", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
           "Once upon a time in a land far away, there lived a"]


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return make_engine(tiny_llama_dir)


def greedy(max_tokens: int = 24, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


def test_greedy_equals_transformers_generate(engine, tiny_llama_dir, tokenizer):
    for prompt in PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        got = run_all(engine, [(plain(ids), greedy())])["r0"]
        assert got["token_ids"] == hf_greedy(tiny_llama_dir, ids, 24)
        assert got["finish_reason"] == "length"


def test_batched_requests_equal_each_alone(engine, tokenizer):
    reqs = [(plain(tokenizer(p)["input_ids"]), greedy()) for p in PROMPTS * 2]
    alone = [run_all(engine, [r])["r0"]["token_ids"] for r in reqs[:len(PROMPTS)]]
    together = run_all(engine, reqs)
    assert [together[f"r{i}"]["token_ids"] for i in range(len(reqs))] == alone * 2
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_requests_join_a_running_batch(engine, tokenizer):
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    alone = [run_all(engine, [(plain(i), greedy())])["r0"]["token_ids"] for i in ids]
    engine.add("a", 0, plain(ids[0]), greedy())
    outputs = {"a": [], "b": []}
    for step in range(200):
        if step == 5:  # b joins while a is decoding: prefill and decode rows in one forward
            engine.add("b", 0, plain(ids[1]), greedy())
        if not engine.has_work:
            break
        for out in engine.step():
            outputs[out.group_id] += out.token_ids
    assert outputs["a"] == alone[0] and outputs["b"] == alone[1]


class TwoViews(Plain):
    """A test decoder: the original view plus a contrast view with a longer prompt; fuses to the original."""

    name = "two_views"

    def views(self) -> list[View]:
        return [View("original", self.ctx.prompt_ids), View("contrast", self.ctx.prompt_ids + [42, 43])]


def test_two_view_group_runs_as_two_rows_of_one_forward(engine, tokenizer, monkeypatch):
    ids = tokenizer(" ".join(["word"] * 40))["input_ids"]  # > 2 blocks: the views share a prefix
    expected = run_all(engine, [(plain(ids), greedy(8))])["r0"]["token_ids"]
    rows_per_forward, tables = [], []
    original_run = engine.runner.run

    def spy(seqs, *args):
        rows_per_forward.append([s.view for s in seqs])
        tables.append([list(s.block_table) for s in seqs])
        return original_run(seqs, *args)

    monkeypatch.setattr(engine.runner, "run", spy)
    got = run_all(engine, [(TwoViews(Plain.Params(), plain(ids).ctx), greedy(8))])["r0"]
    assert got["token_ids"] == expected
    assert all(views == ["original", "contrast"] for views in rows_per_forward)
    assert len(rows_per_forward) == 8  # one forward per token, both views in it
    shared = len(ids) // 16
    assert tables[0][0][:shared] == tables[0][1][:shared]  # the common prefix blocks are shared
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_abort_frees_blocks(engine, tokenizer):
    engine.add("x", 0, plain(tokenizer(PROMPTS[0])["input_ids"]), greedy(100))
    engine.step()
    engine.step()
    assert engine.block_manager.num_free_blocks < engine.block_manager.num_blocks
    engine.abort("x")
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert not engine.has_work


def test_admission_is_limited_by_kv_memory_and_preempts(tiny_llama_dir, tokenizer):
    small = make_engine(tiny_llama_dir, kv_cache_bytes=12 * 2 * 2 * 16 * 2 * 16 * 4)  # 12 blocks of 16 tokens
    assert small.block_manager.num_blocks == 12
    ids = tokenizer(PROMPTS[0])["input_ids"]
    alone = run_all(small, [(plain(ids), greedy(60))])["r0"]["token_ids"]
    results = run_all(small, [(plain(ids), greedy(60)) for _ in range(4)])  # 4 x 5 blocks > 12
    assert all(r["token_ids"] == alone for r in results.values())
    assert small.scheduler.num_preemptions > 0
    assert small.block_manager.num_free_blocks == 12


def test_max_tokens_zero_scores_the_prompt(engine, tiny_llama_dir, tokenizer):
    ids = tokenizer(PROMPTS[3])["input_ids"]
    got = run_all(engine, [(plain(ids), SamplingParams(max_tokens=0, prompt_logprobs=2))])["r0"]
    assert got["token_ids"] == [] and got["finish_reason"] == "length"
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    expected = [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
    plps = got["prompt_logprobs"]
    assert plps[0].logprob is None and [p.token_id for p in plps] == ids
    assert [p.logprob for p in plps[1:]] == pytest.approx(expected, abs=1e-4)
    assert len(plps[1].top) == 2


def test_seed_makes_sampling_reproducible(engine, tokenizer):
    ids = tokenizer(PROMPTS[1])["input_ids"]
    sp = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_tokens=16, seed=7, ignore_eos=True)
    a = run_all(engine, [(plain(ids), sp)])["r0"]["token_ids"]
    b = run_all(engine, [(plain(ids), greedy()), (plain(ids), sp)])["r1"]["token_ids"]  # other rows beside it
    c = run_all(engine, [(plain(ids), sp.model_copy(update={"seed": 8}))])["r0"]["token_ids"]
    assert a == b and a != c


def test_stop_strings_and_stop_token_ids(engine, tokenizer):
    ids = tokenizer(PROMPTS[2])["input_ids"]
    full = run_all(engine, [(plain(ids), greedy(20))])["r0"]
    text = full["text"]
    stop = text[5:8]
    cut = run_all(engine, [(plain(ids), greedy(20, stop=[stop]))])["r0"]
    assert cut["finish_reason"] == "stop" and cut["text"] == text[:text.find(stop)]
    stop_id = full["token_ids"][3]
    by_id = run_all(engine, [(plain(ids), greedy(20, stop_token_ids=[stop_id]))])["r0"]
    assert by_id["finish_reason"] == "stop"
    assert by_id["token_ids"] == full["token_ids"][:full["token_ids"].index(stop_id)]


def test_min_tokens_suppresses_eos(engine, tokenizer):
    ids = tokenizer(PROMPTS[0])["input_ids"]
    eos = next(iter(engine.eos_token_ids))
    sp = SamplingParams(temperature=0.0, max_tokens=5, min_tokens=5, stop_token_ids=[eos])
    got = run_all(engine, [(plain(ids), sp)])["r0"]
    assert len(got["token_ids"]) == 5 and eos not in got["token_ids"]


def test_logprobs_of_the_chosen_token(engine, tokenizer):
    ids = tokenizer(PROMPTS[0])["input_ids"]
    got = run_all(engine, [(plain(ids), greedy(4, logprobs=3))])["r0"]
    for tok, lp in zip(got["token_ids"], got["logprobs"]):
        assert lp.token_id == tok and len(lp.top) == 3
        assert lp.top[0].token_id == tok and lp.top[0].logprob == pytest.approx(lp.logprob)
