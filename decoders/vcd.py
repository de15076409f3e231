"""vcd: Visual Contrastive Decoding (Leng et al. 2023, "Mitigating Object Hallucinations in Large
Vision-Language Models through Visual Contrastive Decoding").

Contrast view = the same prompt with the image's processed pixel tensor noised by forward diffusion
(1000 steps, sigmoid betas, t = noise_step, eps from the request's seed):
`fused = (1+alpha)*s_o - alpha*s_c`, masked outside APC(beta, s_o). Both views are rows of one forward.
"""

from __future__ import annotations

import random

import torch
from pydantic import Field

from .base import Decoder, DecodingError, Fused, MethodParams, View, contrast, params_column
from .images import diffusion_noise


class VCDParams(MethodParams):
    alpha: float = Field(1.0, ge=0.0, le=10.0)
    beta: float = Field(0.1, gt=0.0, le=1.0)
    noise_step: int = Field(500, ge=0, le=999)


class ImageContrast(Decoder):
    """Base of the methods whose contrast view changes the image: vision models only, an image required."""

    @classmethod
    def supports(cls, model_info) -> bool:
        return bool(getattr(model_info, "is_vision", False))

    def image_seed(self) -> int:
        """Checks that the request can run the method; the seed of its random image change."""
        if not getattr(self.ctx.model_info, "is_vision", False):
            raise DecodingError(f"{self.name} needs a vision-language model; this model reads text only")
        if self.ctx.media is None:
            raise DecodingError(f"{self.name} needs an image in the messages (an image_url content part)")
        return self.ctx.seed if self.ctx.seed is not None else random.randrange(2**31)


class VCD(ImageContrast):
    name = "vcd"
    needs = frozenset({"views", "images"})
    Params = VCDParams

    def setup(self) -> None:
        seed = self.image_seed()
        pixels = self.ctx.media.pixels
        self.noised = pixels.replace(diffusion_noise(pixels.pixel_values, self.params.noise_step, seed))
        self.decided = {"noise_seed": seed}

    def views(self) -> list[View]:
        return [View("original", self.ctx.prompt_ids), View("noised", self.ctx.prompt_ids, images=self.noised)]

    @classmethod
    def fuse(cls, decoders: list[Decoder], logits: dict[str, torch.Tensor]) -> Fused:
        original, noised = logits["original"], logits["noised"]  # [G, V]
        alpha, beta = params_column(decoders, "alpha", original), params_column(decoders, "beta", original)
        return Fused(contrast(original, noised, alpha, beta), noised)
