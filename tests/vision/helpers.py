"""Driving an engine with image requests, and the no-cache float32 reference forward of a vision model."""

from __future__ import annotations

import base64
import io

import torch
from counterpoint.decoders import REGISTRY
from counterpoint.server.worker.torch.engine import Engine, EngineConfig
from counterpoint.server.worker.factory import model_info
from counterpoint.server.worker.inputs import make_decoder
from counterpoint.server.worker.vision import VisionProcessor, request_media
from counterpoint.server.worker_protocol import DecodingSpec, GenerateRequest, ImageInput, SamplingParams
from transformers import AutoModelForImageTextToText, AutoProcessor


def load(path) -> torch.nn.Module:
    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()


def make_engine(path) -> tuple[Engine, VisionProcessor]:
    processor = AutoProcessor.from_pretrained(path)
    engine = Engine(load(path), processor.tokenizer, EngineConfig(kv_cache_bytes=16 << 20))
    return engine, VisionProcessor.load(path, engine.model.config)


def image_message(text: str, n_images: int = 1, system: str | None = None) -> list[dict]:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]


def png_b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def request(messages: list[dict], images: list, method: str = "plain", params: dict | None = None,
            max_tokens: int = 10, seed: int | None = None) -> GenerateRequest:
    parts = [ImageInput(part=f"messages[0].content[{j}]", data=png_b64(im)) for j, im in enumerate(images)]
    return GenerateRequest(request_id="r", model="tiny", messages=messages, images=parts,
                           sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, seed=seed),
                           decoding=DecodingSpec(method=method, params=params or {}))


def run(engine: Engine, vision: VisionProcessor, req: GenerateRequest, group: str = "g"):
    """Greedy tokens through the engine, the decoder, and the prompt ids."""
    ids, media = request_media(req, vision, "tiny")
    info = model_info(engine, "tiny")
    info.is_vision = True
    decoder = make_decoder(req, ids, engine.tokenizer, info, 0, media)
    engine.add(group, 0, decoder, req.sampling)
    tokens = []
    while engine.has_work:
        for out in engine.step():
            tokens += out.token_ids
    return tokens, decoder, ids


def methods_of(cls_names: list[str]) -> list[type]:
    return [REGISTRY[n] for n in cls_names]


@torch.no_grad()
def last_logits(model, ids: list[int], pixels: dict[str, torch.Tensor]) -> torch.Tensor:
    """A full forward from scratch (no cache), float32: logits at the last position."""
    return model(input_ids=torch.tensor([ids]), use_cache=False, **pixels).logits[0, -1].float()
