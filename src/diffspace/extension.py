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
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from diffspace.noise import gaussian_noise
from diffspace.processes.gaussian import GaussianDiffusion
from diffspace.samplers import SampleResult, euler_maruyama_step, time_grid
from diffspace.spaces import PixelBasis


def _check_process(process: Any) -> None:
    if not isinstance(process, GaussianDiffusion) or not isinstance(process.basis, PixelBasis):
        raise ValueError(
            "image extension keeps pixel columns fixed, so it needs a Gaussian process in the pixel basis "
            "(a column-sequential model such as the gud-mnist-columns preset)"
        )


@torch.no_grad()
def inpaint(
    process: GaussianDiffusion,
    net: Callable[..., Tensor],
    known: Tensor,
    mask: Tensor,
    steps: int,
    generator: torch.Generator | None = None,
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
        z = replace(euler_maruyama_step(process, net, z, t, s, generator, cond), s)
    z = torch.where(mask, z0, process.denoise(net, z, grid[-1].expand(batch), cond))
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
    generator: torch.Generator | None = None,
    *,
    chunk: int | None = None,
    cond: dict[str, Any] | None = None,
) -> Extension:
    """Append `columns` columns to images of the model's width W, c = `chunk` (default ⌈W/4⌉) per window."""
    _check_process(process)
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


def extend_run(
    run_dir: str | Path,
    out: str | Path,
    num: int,
    columns: int,
    steps: int | None = None,
    seed: int | None = None,
    ema: bool = True,
    data_dir: str | Path | None = None,
) -> tuple[Path, int]:
    """`diffspace sample --extend-right K`: sample `num` images of a run, extend them by K columns and
    save the grid (.png) or the model-space samples (.npz); returns (path, NFE: the sampler's per batch plus
    every extension window's)."""
    import numpy as np

    from diffspace.build import generate, load_run
    from diffspace.config import ConfigError
    from diffspace.images import save_grid

    out = Path(out)
    if out.suffix not in (".png", ".npz"):
        raise ConfigError(f"--out must end in .png (a grid) or .npz (raw samples); got {out}")
    cfg, built, step = load_run(run_dir, ema, data_dir)
    steps = cfg.sample.steps if steps is None else steps
    seed = cfg.sample.seed if seed is None else seed
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    model = built.model.to(device).eval()
    try:
        _check_process(model.process)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    shape = tuple(model.process.prior.shape)
    base, nfe = generate(model, shape, num, cfg.sample.sampler, steps, seed, cfg.sample.batch_size, device)
    generator = torch.Generator(device).manual_seed(seed + 1)
    extended = extend_right(model.process, model.net, base, columns, steps, generator)
    levels = built.dataset.info.levels
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_grid(extended.images, out, levels)
    else:
        np.savez(out, samples=extended.images.numpy(), levels=np.int64(levels or 0), step=np.int64(step))
    return out, nfe + extended.nfe
