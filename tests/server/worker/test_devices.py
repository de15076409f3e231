"""Every tensor the engine and the decoders create lands on the model's device.

The model stays on the CPU while torch's default device is "meta": a tensor created without `device=`
(which on a GPU would land on the CPU beside CUDA tensors) becomes a meta tensor, and the first op that
mixes it with the model's tensors, or reads its value, raises. Every method runs with sampling, penalties,
logprobs, prompt scoring and diagnostics on.
"""

from __future__ import annotations

import pytest
import torch

from counterpoint.decoders import REGISTRY, RequestContext
from counterpoint.server.worker.factory import model_info
from counterpoint.server.worker_protocol import SamplingParams

from tests.decoders.reference import make_engine

PROMPT = "The old town by the river, with a market in the square, was busy that morning"
METHODS = [("plain", {}), ("cfg", {"negative_prompt": "A dull text"}), ("lqcd", {}), ("dola", {"layers": "low"}),
           ("cd", {"amateur": "layer:3"}), ("contrastive_search", {}),
           ("overshadow", {"conditions": ["by the river", "in the square"], "threshold": 100.0})]
SAMPLING = [dict(temperature=0.0, logprobs=2, repetition_penalty=1.3, min_tokens=2),
            dict(temperature=0.8, top_p=0.9, top_k=8, seed=3, prompt_logprobs=1)]


@pytest.fixture()
def meta_default():
    torch.set_default_device("meta")
    yield
    torch.set_default_device(None)


@pytest.fixture(scope="module")
def engines(tiny_deep_dir, tiny_amateur_dir, tiny_moe_dir):
    return {"deep": make_engine(tiny_deep_dir), "amateur": make_engine(tiny_deep_dir, tiny_amateur_dir),
            "moe": make_engine(tiny_moe_dir)}


def run(engine, method: str, params: dict, sampling: dict) -> list[int]:
    tok = engine.tokenizer
    info = model_info(engine, "tiny", "amateur" if engine.amateur is not None else None)
    cls = REGISTRY[method]
    ctx = RequestContext(tok(PROMPT)["input_ids"], info, prompt=PROMPT, tokenize=lambda x: tok(x)["input_ids"])
    engine.add("g", 0, cls(cls.Params(**params), ctx), SamplingParams(max_tokens=4, ignore_eos=True, **sampling),
               diagnostics=True)
    tokens = []
    while engine.has_work:
        tokens += [t for out in engine.step() for t in out.token_ids]
    return tokens


@pytest.mark.parametrize("sampling", SAMPLING)
def test_every_method_creates_its_tensors_on_the_models_device(engines, meta_default, sampling):
    runs = [(engines["deep"], m, p) for m, p in METHODS] + [(engines["amateur"], "cd", {}),
                                                             (engines["amateur"], "lol", {}), (engines["moe"], "scmoe", {})]
    for engine, method, params in runs:
        assert len(run(engine, method, params, sampling)) == 4, method
