"""Vision-language models on the worker: the processor, image bytes -> pixel tensors, prompts with images.

The gateway sends images as bytes (base64 in `GenerateRequest.images`) and chat messages whose content
lists hold `{"type": "image"}` placeholders in order. `VisionProcessor` renders the messages with the
processor's chat template, expands each placeholder into the model's image tokens, and turns the images into
the model's pixel inputs (`ImageInputs`). The model runner concatenates the inputs of the rows it prefills.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import APIError
from ..worker_protocol import GenerateRequest

# Processor outputs that are per-image model inputs.
_IMAGE_KEYS = ("pixel_values", "image_sizes", "pixel_attention_mask")


@dataclass
class ImageInputs:
    """One view's images as model inputs: tensors keyed by forward argument, images stacked on dim 0."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. pixel_values [N, C, H, W]

    @property
    def pixel_values(self) -> torch.Tensor:
        return self.tensors["pixel_values"]

    def replace(self, pixel_values: torch.Tensor) -> ImageInputs:
        return ImageInputs({**self.tensors, "pixel_values": pixel_values})


def concat(inputs: list[ImageInputs], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The forward kwargs for the images of several rows, in packed-row order (the model's image tokens are
    filled in that order). Idefics3-style inputs `[1, images, C, H, W]` become one batch row of all images."""
    per_row = inputs[0].pixel_values.dim() == 5
    out = {}
    for key in inputs[0].tensors:
        parts = [i.tensors[key].flatten(0, 1) if per_row else i.tensors[key] for i in inputs]
        t = torch.cat(parts, dim=0)
        t = t[None] if per_row else t
        out[key] = t.to(device, dtype) if t.is_floating_point() else t.to(device)
    return out


def is_vision_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def decode_image(data: str, part: str) -> Image.Image:
    """base64 image file -> RGB PIL image; a 400 naming the part when it is not an image."""
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
        return image.convert("RGB")
    except Exception as exc:  # PIL raises many types for broken files
        raise APIError(400, f"the image could not be decoded: {exc}", part) from exc


class VisionProcessor:
    """A Hugging Face processor (image processor + tokenizer + chat template) and the image token it places."""

    def __init__(self, processor: Any, image_token_id: int):
        self.processor = processor
        self.image_token_id = image_token_id

    @classmethod
    def load(cls, path: str | Path, config: Any) -> VisionProcessor:
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained(path)
        token_id = getattr(config, "image_token_id", None)
        if token_id is None:
            token_id = config.image_token_index
        return cls(processor, token_id)

    def pixels(self, images: list[Image.Image]) -> ImageInputs:
        """Images -> model inputs, without text (for transformed copies of the request's images)."""
        out = self.processor.image_processor(images, return_tensors="pt")
        return ImageInputs({k: v for k, v in out.items() if k in _IMAGE_KEYS})

    def encode(self, messages: list[dict], images: list[Image.Image], add_generation_prompt: bool
               ) -> tuple[list[int], ImageInputs | None]:
        """Chat messages with image placeholders -> prompt ids (image tokens expanded) and image inputs."""
        text = self.processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  tokenize=False)
        kwargs = {"images": images} if images else {}
        out = self.processor(text=[text], return_tensors="pt", add_special_tokens=False, **kwargs)
        ids = out["input_ids"][0].tolist()
        pixels = ImageInputs({k: v for k, v in out.items() if k in _IMAGE_KEYS}) if images else None
        return ids, pixels

    def first_image_token(self, ids: list[int]) -> int | None:
        return ids.index(self.image_token_id) if self.image_token_id in ids else None


@dataclass
class Media:
    """A chat request's images as decoders see them (through `RequestContext`)."""

    images: list[Image.Image]  # the decoded images, in order of appearance
    pixels: ImageInputs  # the processor's output for them (the original view's image inputs)
    vision: VisionProcessor

    def process(self, images: list[Image.Image]) -> ImageInputs:
        return self.vision.pixels(images)

    def tokenize(self, messages: list[dict], add_generation_prompt: bool) -> list[int]:
        """Another view's messages (lqcd, cfg, ...) rendered like the request's: its placeholders take the
        request's images in order."""
        count = sum(1 for m in messages if isinstance(m.get("content"), list)
                    for p in m["content"] if p.get("type") == "image")
        return self.vision.encode(messages, self.images[:count], add_generation_prompt)[0]


def request_media(req: GenerateRequest, vision: VisionProcessor | None, model: str
                  ) -> tuple[list[int], Media] | None:
    """Prompt ids and media for a chat request with images; None for a request without images."""
    if not req.images:
        return None
    if vision is None:
        raise APIError(400, f"model {model!r} does not accept images", req.images[0].part)
    images = [decode_image(i.data, i.part) for i in req.images]
    try:
        ids, pixels = vision.encode(req.messages or [], images, req.add_generation_prompt)
    except APIError:
        raise
    except Exception as exc:
        raise APIError(400, f"the images could not be processed: {exc}", req.images[0].part) from exc
    if ids.count(vision.image_token_id) == 0:
        raise APIError(400, "the chat template placed no image tokens", req.images[0].part)
    return ids, Media(images, pixels, vision)
