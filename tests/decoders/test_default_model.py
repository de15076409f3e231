"""Methods on the embedded SmolLM2 equal their step-by-step references (no KV cache, float32)."""

from __future__ import annotations

import pytest
import torch

from .reference import NEG, apc, greedy_loop, last_logits, load, make_engine, run_method
from .test_reference import contrastive_reference, dola_reference

MESSAGES = [{"role": "user", "content": "I'm pretty sure it is Sydney. What is the capital of Australia?"}]
STEPS = 8


@pytest.fixture(scope="module")
def smol(default_model_dir):
    return load(default_model_dir)


@pytest.fixture(scope="module")
def engine(default_model_dir):
    return make_engine(default_model_dir)


@pytest.fixture(scope="module")
def render(tokenizer):
    return lambda m: list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True)["input_ids"])


def test_cfg(engine, smol, render):
    def score(v):
        cond, uncond = (torch.log_softmax(last_logits(smol, v[k]), -1) for k in ("c", "n"))
        return 1.5 * (cond - uncond) + uncond

    ids = render(MESSAGES)
    got, _ = run_method(engine, "cfg", {}, messages=MESSAGES, max_tokens=STEPS)
    assert got == greedy_loop({"c": list(ids), "n": ids[-1:]}, score, STEPS)


def test_dola_high(engine, smol, render):
    layers = list(range(15, 30, 2))  # 30 layers, tied embeddings: "high" = range(N//2, N, 2)

    def score(v):
        final, hs = last_logits(smol, v["o"], hidden=True)
        return dola_reference(final, {j: smol.lm_head(hs[j][0, -1]).float() for j in layers})

    got, report = run_method(engine, "dola", {"layers": "high"}, messages=MESSAGES, max_tokens=STEPS)
    assert report["candidate_layers"] == layers
    assert got == greedy_loop({"o": render(MESSAGES)}, score, STEPS)


def test_cd_layer(engine, smol, render):
    def score(v):
        e, hs = last_logits(smol, v["o"], hidden=True)
        a = smol.lm_head(smol.model.norm(hs[12][0, -1])).float()
        return (1.5 * torch.log_softmax(e, -1) - 0.5 * torch.log_softmax(a, -1)).masked_fill(~apc(e, 0.1), NEG)

    got, _ = run_method(engine, "cd", {"amateur": "layer:12"}, messages=MESSAGES, max_tokens=STEPS)
    assert got == greedy_loop({"o": render(MESSAGES)}, score, STEPS)


def test_lqcd(engine, smol, render):
    def score(v):
        n, lead = last_logits(smol, v["n"]), last_logits(smol, v["l"])
        return (2 * n - lead).masked_fill(~apc(n, 0.1), NEG)

    got, report = run_method(engine, "lqcd", {}, messages=MESSAGES, max_tokens=STEPS)
    neutral = [{"role": "user", "content": report["neutral_query"]}]
    assert report["neutral_query"] == "What is the capital of Australia?"
    assert got == greedy_loop({"n": render(neutral), "l": render(MESSAGES)}, score, STEPS)


def test_contrastive_search(engine, smol, render):
    got, _ = run_method(engine, "contrastive_search", {}, messages=MESSAGES, max_tokens=STEPS)
    assert got == contrastive_reference(smol, render(MESSAGES), 4, 0.6, STEPS)
