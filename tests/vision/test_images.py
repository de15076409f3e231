"""decoders/images.py: the six RITUAL transforms and VCD's forward diffusion."""

from __future__ import annotations

import random

import pytest
import torch
from counterpoint.decoders.images import TRANSFORMS, diffusion_noise, pick_transform, transform
from PIL import ImageChops

from .conftest import make_image


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_changes_the_image_reproducibly(name):
    image = make_image(2)
    once = transform(image, name, random.Random(5))
    again = transform(image, name, random.Random(5))
    assert once.size == image.size and once.mode == "RGB"
    assert ImageChops.difference(once, again).getbbox() is None  # same seed, same picture
    assert ImageChops.difference(once, image).getbbox() is not None  # it did change


def test_random_choice_is_seeded_and_covers_all():
    assert pick_transform("gaussian_blur", random.Random(0)) == "gaussian_blur"
    picks = [pick_transform("random", random.Random(s)) for s in range(200)]
    assert set(picks) == set(TRANSFORMS)
    assert picks == [pick_transform("random", random.Random(s)) for s in range(200)]


def test_diffusion_noise_follows_the_schedule():
    x0 = torch.randn(1, 3, 30, 30, generator=torch.Generator().manual_seed(0))
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, 0)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
    for t in (0, 500, 999):
        expected = abar[t].sqrt().float() * x0 + (1 - abar[t]).sqrt().float() * eps
        assert torch.allclose(diffusion_noise(x0, t, seed=9), expected, atol=1e-5)
    assert torch.equal(diffusion_noise(x0, 500, 3), diffusion_noise(x0, 500, 3))
    assert not torch.equal(diffusion_noise(x0, 500, 3), diffusion_noise(x0, 500, 4))
    assert diffusion_noise(x0, 999, 1).sub(x0).abs().mean() > 0.9  # nearly pure noise at the last step
