"""Image extension with a column-sequential model: inpainting by replacement, then a sliding window.

`inpaint` runs Euler–Maruyama on the reverse SDE from t = 1 and, after every step to time s,
resets the known components to a fresh forward sample z_s = α_s z₀ + σ_s ξ of the given values
(the replacement method); at the end the known components are exactly the given ones. With a
column-sequential schedule (labels = column index, small softness) the known columns on the
left are nearly clean before the unknown ones become active, so the new columns are drawn
(almost) from the model's conditional given the old ones.

`extend_right` grows images of the model's width W to W + K columns: each round keeps the last
W − c columns as the known left part of a window and generates its c rightmost columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from diffspace.families.gaussian.process import GaussianDiffusion
from diffspace.families.gaussian.schedules import SoftConditioning
from diffspace.noise import Generator, gaussian_noise
from diffspace.samplers import euler_maruyama_step
from diffspace.sampling import SampleResult, time_grid
from diffspace.spaces import PixelBasis


def _check_process(process: Any) -> None:
    """ValueError unless the process keeps pixel columns as components (pixel basis)."""
    if not isinstance(process, GaussianDiffusion) or not isinstance(process.basis, PixelBasis):
        raise ValueError(
            "image extension keeps pixel columns fixed, so it needs a Gaussian process in the pixel basis "
            "(a column-sequential model such as the gud-mnist-columns preset)"
        )


def check_column_sequential(process: Any) -> None:
    """ValueError unless the model generates pixel columns left to right: a pixel basis and a soft schedule whose
    labels depend on the column alone and do not decrease along it (labels = "column")."""
    _check_process(process)
    schedule = process.schedule
    if not isinstance(schedule, SoftConditioning):
        raise ValueError("image extension needs a column-sequential model (process.schedule=soft with "
                         "labels=column, e.g. the gud-mnist-columns preset); this one noises all pixels alike")
    shift = schedule.shift
    by_column = shift[:1, :1, :]
    if not bool((shift == by_column).all()) or not bool((by_column[..., 1:] >= by_column[..., :-1]).all()):
        raise ValueError("image extension needs a column-sequential model (process.labels=column): this "
                         "model's soft schedule does not order components by column, left to right")


@torch.no_grad()
def inpaint(
    process: GaussianDiffusion,
    net: Callable[..., Tensor],
    known: Tensor,
    mask: Tensor,
    steps: int,
    generator: Generator = None,
    *,
    cond: dict[str, Any] | None = None,
    rho: float = 1.0,
) -> SampleResult:
    """Sample x with x[mask] = known[mask]: Euler–Maruyama z_s = z_t − h f̄ + g√h ξ, then
    z_s[mask] ← α_s z₀ + σ_s ξ′."""
    _check_process(process)
    if known.dim() != 4 or mask.shape != known.shape[1:]:
        raise ValueError(f"need known images (B, C, H, W) and a mask (C, H, W); got {tuple(known.shape)}, "
                         f"{tuple(mask.shape)}")
    batch, device, dtype = known.shape[0], process.device, process.prior.variance.dtype
    z0 = process.to_state(known.to(device, dtype))
    mask = mask.to(device, torch.bool)
    cond, softness = process.conditioning(cond, batch, device)
    z = process.prior_sample(tuple(z0.shape), generator, device)
    grid = time_grid(steps, rho, 0.0, device).to(dtype)

    def replace(z: Tensor, t: Tensor) -> Tensor:
        level = process.noise_level(t.expand(batch), softness)
        noisy = level.alpha * z0 + level.sigma * gaussian_noise(tuple(z0.shape), generator, device, dtype)
        return torch.where(mask, noisy, z)

    z = replace(z, grid[0])
    for i in range(steps):
        t, s = grid[i], grid[i + 1]
        z = replace(euler_maruyama_step(process, net, z, t, s, generator, cond)[0], s)
    z = torch.where(mask, z0, process.predict(net, z, grid[-1].expand(batch), cond).denoised)
    return SampleResult(process.from_state(z), steps + 1)


@dataclass
class Extension:
    """Extended images (B, C, H, W + K) and the network evaluations spent on them."""

    images: Tensor
    nfe: int


def extend_right(
    process: GaussianDiffusion,
    net: Callable[..., Tensor],
    images: Tensor,
    columns: int,
    steps: int,
    generator: Generator = None,
    *,
    chunk: int | None = None,
    cond: dict[str, Any] | None = None,
) -> Extension:
    """Append `columns` columns to images of the model's width W, c = `chunk` (default ⌈W/4⌉) per window."""
    check_column_sequential(process)
    channels, height, width = process.prior.shape
    if images.dim() != 4 or tuple(images.shape[1:3]) != (channels, height) or images.shape[-1] < width:
        raise ValueError(f"images to extend must be (B, {channels}, {height}, ≥ {width}); got {tuple(images.shape)}")
    chunk = -(-width // 4) if chunk is None else chunk
    if columns < 1 or not 1 <= chunk < width:
        raise ValueError(f"need columns ≥ 1 and 1 ≤ chunk < {width} (the model's width); got {columns}, {chunk}")
    dtype = process.prior.variance.dtype
    out, nfe = images.to(dtype).cpu(), 0
    while out.shape[-1] < images.shape[-1] + columns:
        c = min(chunk, images.shape[-1] + columns - out.shape[-1])
        window = torch.cat([out[..., out.shape[-1] - (width - c):], torch.zeros(*out.shape[:3], c, dtype=dtype)], -1)
        mask = torch.zeros(channels, height, width, dtype=torch.bool)
        mask[..., : width - c] = True
        result = inpaint(process, net, window, mask, steps, generator, cond=cond)
        out = torch.cat([out, result.samples.cpu()[..., width - c:]], dim=-1)
        nfe += result.nfe
    return Extension(out, nfe)
