"""Image helpers for the visual contrast methods: forward-diffusion noise (vcd) and PIL transforms (ritual).

Everything is seeded so a request's seed reproduces its contrast image.
"""

from __future__ import annotations

import math
import random

import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

TRANSFORMS = ("horizontal_flip", "vertical_flip", "rotation", "color_jitter", "gaussian_blur", "random_resized_crop")


def diffusion_noise(x0: torch.Tensor, noise_step: int, seed: int) -> torch.Tensor:
    """VCD's forward diffusion: `x_t = sqrt(abar[t])*x_0 + sqrt(1-abar[t])*eps`, 1000 steps, sigmoid betas."""
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5  # [1000]
    abar = torch.cumprod(1 - betas, dim=0)  # [1000]
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float32)  # like x0
    a = abar[noise_step].item()
    return (math.sqrt(a) * x0.float() + math.sqrt(1 - a) * eps).to(x0.dtype)


def pick_transform(name: str, rng: random.Random) -> str:
    return rng.choice(TRANSFORMS) if name == "random" else name


def transform(image: Image.Image, name: str, rng: random.Random) -> Image.Image:
    """One of RITUAL's six transforms, its random parameters drawn from `rng`."""
    if name == "horizontal_flip":
        return ImageOps.mirror(image)
    if name == "vertical_flip":
        return ImageOps.flip(image)
    if name == "rotation":
        return image.rotate(rng.uniform(-180.0, 180.0))
    if name == "color_jitter":
        return _color_jitter(image, rng)
    if name == "gaussian_blur":  # kernel 13 covers about +-3 sigma for sigma 1.5-2.0
        return image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(1.5, 2.0)))
    if name == "random_resized_crop":
        return _random_resized_crop(image, rng)
    raise ValueError(f"unknown transform {name!r}")


def _color_jitter(image: Image.Image, rng: random.Random) -> Image.Image:
    """brightness, contrast, saturation factors in [0, 2] (jitter 1.0) and a hue shift in [-0.5, 0.5]."""
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(rng.uniform(0.0, 2.0))
    shift = round(rng.uniform(-0.5, 0.5) * 255)
    h, s, v = image.convert("HSV").split()
    h = h.point(lambda x: (x + shift) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _random_resized_crop(image: Image.Image, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
                         ) -> Image.Image:
    """torchvision's RandomResizedCrop: a random area and aspect ratio, resized back to the image's size
    (the processor then brings it to the model's input size)."""
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return image.resize((w, h), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    return image.copy()
