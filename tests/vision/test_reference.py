"""vcd, ritual and lqcd with an image through the engine equal a step-by-step no-cache reference (methods.md)."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import ImageOps
from transformers import AutoProcessor

from tests.decoders.reference import NEG, apc, greedy_loop

from .conftest import make_image
from .helpers import (
    image_message,
    last_logits,
    load,
    make_decoder,
    make_engine,
    model_info,
    request,
    request_media,
    run,
)

QUESTION = "What is in the picture?"


IMAGE_TOKENS = {"tiny_llava_dir": 25, "tiny_idefics3_dir": 9}


@pytest.fixture(scope="module", params=list(IMAGE_TOKENS))
def model_dir(request):
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def llava(model_dir):  # the reference model: a separate copy with transformers' own attention
    return load(model_dir[1])


@pytest.fixture(scope="module")
def engine(model_dir):
    return make_engine(model_dir[1])


@pytest.fixture(scope="module")
def processor(model_dir):
    return AutoProcessor.from_pretrained(model_dir[1])


def encode(processor, messages, images):
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    out = processor(text=[text], images=images, return_tensors="pt", add_special_tokens=False)
    return out["input_ids"][0].tolist(), {k: v for k, v in out.items() if k.startswith("pixel")}


def vcd_noise(x0: torch.Tensor, t: int, seed: int) -> torch.Tensor:
    """VCD's forward diffusion, restated from methods.md."""
    betas = [1 / (1 + math.exp(-(-6 + 12 * i / 999))) * (5e-3 - 1e-5) + 1e-5 for i in range(1000)]
    abar = math.prod(1 - b for b in betas[:t + 1])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps


def test_plain_with_image_matches_transformers(engine, llava, processor, model_dir):
    image = make_image(1)
    got, _, ids = run(*engine, request(image_message(QUESTION), [image]))
    ref_ids, pixels = encode(processor, image_message(QUESTION), [image])
    assert ids == ref_ids and ids.count(engine[1].image_token_id) == IMAGE_TOKENS[model_dir[0]]
    assert got == greedy_loop({"o": ref_ids}, lambda v: last_logits(llava, v["o"], pixels), 10)
    other, _, _ = run(*engine, request(image_message(QUESTION), [make_image(2)]))
    assert other != got  # the image matters to this tiny model


@pytest.mark.parametrize("params", [{}, {"alpha": 0.5, "beta": 0.2, "noise_step": 900}])
def test_vcd(engine, llava, processor, params):
    image, seed = make_image(3), 1234
    ids, pixels = encode(processor, image_message(QUESTION), [image])
    alpha, beta, t = params.get("alpha", 1.0), params.get("beta", 0.1), params.get("noise_step", 500)
    noised = {**pixels, "pixel_values": vcd_noise(pixels["pixel_values"], t, seed)}

    def score(v):
        o, c = last_logits(llava, v["o"], pixels), last_logits(llava, v["c"], noised)
        return ((1 + alpha) * o - alpha * c).masked_fill(~apc(o, beta), NEG)

    got, decoder, _ = run(*engine, request(image_message(QUESTION), [image], "vcd", params, seed=seed))
    assert got == greedy_loop({"o": list(ids), "c": list(ids)}, score, 10)
    assert decoder.report()["noise_seed"] == seed
    assert got != run(*engine, request(image_message(QUESTION), [image]))[0]  # the contrast changes the output


@pytest.mark.parametrize("name, flip", [("horizontal_flip", ImageOps.mirror), ("vertical_flip", ImageOps.flip)])
def test_ritual_named_transform(engine, llava, processor, name, flip):
    image = make_image(5)
    ids, pixels = encode(processor, image_message(QUESTION), [image])
    _, flipped = encode(processor, image_message(QUESTION), [flip(image)])

    def score(v):
        o, t = last_logits(llava, v["o"], pixels), last_logits(llava, v["t"], flipped)
        return (o + 3.0 * t).masked_fill(~apc(o, 0.1), NEG)  # added, not subtracted

    got, decoder, _ = run(*engine, request(image_message(QUESTION), [image], "ritual", {"transform": name}))
    assert got == greedy_loop({"o": list(ids), "t": list(ids)}, score, 10)
    assert decoder.report()["transform"] == name


def test_ritual_random_is_seeded(engine):
    req = request(image_message(QUESTION), [make_image(6)], "ritual", {"alpha_pos": 1.0}, seed=7)
    first, d1, _ = run(*engine, req)
    again, d2, _ = run(*engine, req)
    assert first == again and d1.report() == d2.report()
    seen = {run(*engine, request(image_message(QUESTION), [make_image(6)], "ritual", seed=s))[1].report()["transform"]
            for s in range(12)}
    assert len(seen) >= 3  # the seed picks among the six transforms


def test_lqcd_with_image(engine, llava, processor):
    leading = "I'm pretty sure this is a cat. What animal is in the picture, right?"
    neutral = "What animal is in the picture?"
    image = make_image(8)
    lead_ids, pixels = encode(processor, image_message(leading), [image])
    neutral_ids, _ = encode(processor, image_message(neutral), [image])

    def score(v):
        n, lead = last_logits(llava, v["n"], pixels), last_logits(llava, v["l"], pixels)
        return (2.0 * n - 1.0 * lead).masked_fill(~apc(n, 0.1), NEG)

    got, decoder, _ = run(*engine, request(image_message(leading), [image], "lqcd", {"neutral_query": neutral}))
    assert got == greedy_loop({"n": neutral_ids, "l": lead_ids}, score, 10)
    assert decoder.report()["changed"] is True


def test_views_are_rows_of_one_forward_and_share_the_text_prefix(engine):
    eng, vision = engine
    system = "You are a careful assistant who describes pictures. " * 4  # > 2 cache blocks before the image
    forwards = []
    original_run = eng.runner.run

    def spy(seqs, *args, **kwargs):
        forwards.append([(s.view, s.num_computed_tokens, s.num_new_tokens, list(s.block_table)) for s in seqs])
        return original_run(seqs, *args, **kwargs)

    eng.runner.run = spy
    try:
        _, _, ids = run(eng, vision, request(image_message(QUESTION, system=system), [make_image(9)], "vcd",
                                             max_tokens=3, seed=1))
    finally:
        del eng.runner.run
    first_image = ids.index(vision.image_token_id)
    bs = eng.config.block_size
    (o_view, o_done, o_new, o_blocks), (c_view, c_done, c_new, c_blocks) = forwards[0]
    assert (o_view, c_view) == ("original", "noised")  # two rows of the first forward
    assert o_done == 0 and o_new == len(ids)
    assert c_done == (first_image // bs) * bs > 0 and c_new == len(ids) - c_done  # shared text not recomputed
    shared = first_image // bs
    assert c_blocks[:shared] == o_blocks[:shared] and not set(c_blocks[shared:]) & set(o_blocks[shared:])
    assert all([v for v, *_ in f] == ["original", "noised"] for f in forwards)  # every step: one forward


def test_two_images_and_a_batch_of_requests(engine, llava, processor):
    """Several images in one prompt, and several image requests prefilled in one forward, stay in order."""
    eng, vision = engine
    msgs = image_message("Compare the two pictures.", n_images=2)
    images = [make_image(10), make_image(11)]
    ids, pixels = encode(processor, msgs, images)
    ref = greedy_loop({"o": ids}, lambda v: last_logits(llava, v["o"], pixels), 6)
    reqs = [request(msgs, images, max_tokens=6), request(image_message(QUESTION), [make_image(12)], max_tokens=6)]
    info = model_info(eng, "tiny")
    info.is_vision = True
    for k, r in enumerate(reqs):
        rid, media = request_media(r, vision, "tiny")
        eng.add(f"b{k}", 0, make_decoder(r, rid, eng.tokenizer, info, 0, media), r.sampling)
    out = {"b0": [], "b1": []}
    while eng.has_work:
        for o in eng.step():
            out[o.group_id] += o.token_ids
    assert out["b0"] == ref
    single, _, _ = run(eng, vision, reqs[1])
    assert out["b1"] == single
