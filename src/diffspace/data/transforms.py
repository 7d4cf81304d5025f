"""The model-space convention for data, written down once.

Discrete images with L intensity levels (8-bit: L = 256, binarized: L = 2, the built-in digits:
L = 17) are integers k ∈ {0, …, L−1}; in model space they are the floats

    x = 2k/(L−1) − 1 ∈ [−1, 1],

and `to_levels` inverts this (round to the nearest level, clamp) for saving PNGs, computing
FID or counting blackout states. Continuous fields (grf, darcy pressure) are not mapped: their
model-space values are the raw real values, unscaled, so that known statistics (the power
spectrum of a Gaussian random field) hold exactly in model space.

Resizing to another resolution goes through `diffspace.resolution.resize` only: spectral
(Fourier truncation / zero padding) for function data, area averaging for images.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffspace.resolution import resize


def from_levels(k: Tensor, levels: int) -> Tensor:
    """Map integer levels to model space: x = 2k/(L−1) − 1, float32 in [−1, 1]."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    return k.to(torch.float32) * (2.0 / (levels - 1)) - 1.0


def to_levels(x: Tensor, levels: int) -> Tensor:
    """Map model-space values back to levels: k = clamp(round((x + 1)(L−1)/2), 0, L−1), int64."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    k = torch.round((x + 1.0) * ((levels - 1) / 2.0))
    return k.clamp_(0, levels - 1).to(torch.int64)


FUNCTION_DATA = ("grf", "darcy")


def resize_method(name: str, resize: str) -> str:
    """The resize method for data set `name`: `resize`, or for "auto" spectral on function data
    (grf, darcy: point values of functions) and area on images."""
    if resize != "auto":
        return resize
    return "spectral" if name in FUNCTION_DATA else "area"


def resize_images(x: Tensor, resolution: int, method: str) -> Tensor:
    """Resize model-space images (N, C, H, W) to resolution × resolution with
    `diffspace.resolution.resize`; values between levels are kept (to_levels rounds them)."""
    if tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    return resize(x, (resolution, resolution), method)
