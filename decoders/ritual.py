"""ritual: Random Image Transformations as a Universal Anti-hallucination Lever (Woo et al. 2024).

Contrast view = the image transformed before the processor by one of six PIL transforms (horizontal flip,
vertical flip, rotation, colour jitter, Gaussian blur, random resized crop), chosen by `transform` or, for
"random", uniformly with the request's seed. The transformed view is ADDED, not subtracted:
`fused = s_o + alpha_pos*s_T`, masked outside APC(beta, s_o). Both views are rows of one forward.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import Field

from .base import NEG_INF, Decoder, Fused, MethodParams, View, params_column, plausible
from .images import pick_transform, transform
from .vcd import ImageContrast

TransformName = Literal["random", "horizontal_flip", "vertical_flip", "rotation", "color_jitter", "gaussian_blur",
                        "random_resized_crop"]


class RitualParams(MethodParams):
    alpha_pos: float = Field(3.0, ge=0.0, le=10.0)
    beta: float = Field(0.1, gt=0.0, le=1.0)
    transform: TransformName = "random"


class Ritual(ImageContrast):
    name = "ritual"
    needs = frozenset({"views", "images"})
    Params = RitualParams

    def setup(self) -> None:
        seed = self.image_seed()
        rng = random.Random(seed)
        chosen = pick_transform(self.params.transform, rng)
        media = self.ctx.media
        self.transformed = media.process([transform(im, chosen, rng) for im in media.images])
        self.decided = {"transform": chosen, "transform_seed": seed}

    def views(self) -> list[View]:
        return [View("original", self.ctx.prompt_ids),
                View("transformed", self.ctx.prompt_ids, images=self.transformed)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        original, transformed = logits["original"], logits["transformed"]  # [G, V]
        alpha, beta = params_column(decoders, "alpha_pos", original), params_column(decoders, "beta", original)
        fused = original + alpha * transformed  # [G, V]
        return Fused(fused.masked_fill(~plausible(original, beta), NEG_INF), transformed)
