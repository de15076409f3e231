"""Independent step-by-step references: full forwards with no KV cache, one request, float32, greedy.

Each reference recomputes every view from scratch at every step and applies the formula of methods.md in a
few plain lines; the engine's output must equal it token for token.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from counterpoint.decoders import REGISTRY, RequestContext
from counterpoint.server.worker.torch.engine import Engine, EngineConfig
from counterpoint.server.worker.factory import model_info
from counterpoint.server.worker_protocol import SamplingParams

NEG = -float("inf")


def load(path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def make_engine(model_dir, amateur_dir=None) -> Engine:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    amateur = load(amateur_dir) if amateur_dir else None
    return Engine(load(model_dir), tokenizer, EngineConfig(kv_cache_bytes=16 << 20), amateur=amateur)


def run_method(engine: Engine, method: str, params: dict, prompt: str | None = None,
               messages: list[dict] | None = None, max_tokens: int = 12, **sampling) -> tuple[list[int], dict]:
    """Greedy tokens of one request through the engine, and what the method reported."""
    tok = engine.tokenizer

    def tokenize(x):
        if isinstance(x, str):
            return tok(x)["input_ids"]
        return list(tok.apply_chat_template(x, add_generation_prompt=True, tokenize=True)["input_ids"])

    ids = tokenize(messages if messages is not None else prompt)
    info = model_info(engine, "tiny", "amateur" if engine.amateur is not None else None)
    cls = REGISTRY[method]
    decoder = cls(cls.Params(**params), RequestContext(ids, info, messages=messages, prompt=prompt, tokenize=tokenize))
    sp = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **sampling)
    engine.add("ref", 0, decoder, sp)
    tokens = []
    while engine.has_work:
        for out in engine.step():
            tokens += out.token_ids
    return tokens, decoder.report()


@torch.no_grad()
def last_logits(model, ids: list[int], hidden: bool = False):
    out = model(torch.tensor([ids]), output_hidden_states=hidden)
    return (out.logits[0, -1].float(), out.hidden_states) if hidden else out.logits[0, -1].float()


def apc(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    lp = torch.log_softmax(logits, -1)
    return lp >= torch.log(torch.tensor(alpha)) + lp.max()


def greedy_loop(views: dict[str, list[int]], score: Callable[[dict[str, list[int]]], torch.Tensor],
                steps: int) -> list[int]:
    """Each step: score every view from scratch, take the argmax, append it to every view."""
    out = []
    for _ in range(steps):
        token = int(score(views).argmax())
        out.append(token)
        for ids in views.values():
            ids.append(token)
    return out
