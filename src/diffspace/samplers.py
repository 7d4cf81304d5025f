"""Samplers: plain functions with one signature. Those here serve every process with the
continuous-state interface below (Gaussian and multivariate diffusions); `SAMPLERS` also holds
the Blackout samplers (`diffspace.blackout_samplers`, same signature), and
`diffspace.processes.SAMPLERS_BY_KIND` says which fit which process kind.

    sampler(process, net, shape, steps, generator=None, *, callback=None, cond=None,
            rho=1.0, t_end=0.0, denoise=True) -> SampleResult

They integrate from t = 1 (state z ~ process.prior_sample) down to t_end on the grid
t_i = t_end + (1 − t_end)(1 − i/N)^ρ (ρ = 1 uniform; ρ > 1 refines near t_end), then
optionally apply one denoising step ẑ₀ = E[z₀ | z_t_end]. The process supplies
`reverse_sde`, `diffusion_noise`, `pf_ode_velocity`, `score`, `denoise`, `prior_sample`, `state_shape`,
`from_state`. The callback receives {"i": step, "t": time reached, "x": state}.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from diffspace.blackout_samplers import SAMPLERS as BLACKOUT_SAMPLERS
from diffspace.noise import gaussian_noise

Callback = Callable[[dict[str, Any]], None]


@dataclass
class SampleResult:
    """Samples in data space and the number of network evaluations spent."""

    samples: Tensor
    nfe: int


class _CountingNet:
    """Wraps a network and counts its calls (the NFE)."""

    def __init__(self, net: Callable[..., Tensor]) -> None:
        self.net, self.calls = net, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        self.calls += 1
        return self.net(*args, **kwargs)


def time_grid(steps: int, rho: float = 1.0, t_end: float = 0.0, device: torch.device | str = "cpu") -> Tensor:
    """t_i = t_end + (1 − t_end)(1 − i/N)^ρ for i = 0 … N (decreasing from 1 to t_end)."""
    if steps < 1:
        raise ValueError(f"a sampler needs at least 1 step; got {steps}")
    if rho <= 0 or not 0.0 <= t_end < 1.0:
        raise ValueError(f"need rho > 0 and 0 ≤ t_end < 1; got rho={rho}, t_end={t_end}")
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    return (t_end + (1 - t_end) * (1 - i) ** rho).to(device=device, dtype=torch.float32)


def _expand_cond(cond: dict[str, Any] | None, batch: int, device: torch.device) -> dict[str, Tensor]:
    """Scalars become (B,) tensors so that conditioning is embedded per sample."""
    out = {}
    for key, value in (cond or {}).items():
        value = torch.as_tensor(value, dtype=torch.float32, device=device)
        out[key] = value.expand(batch) if value.dim() == 0 else value
    return out


def _setup(process: Any, net: Callable[..., Tensor], shape: tuple[int, ...], steps: int, generator, cond, rho, t_end):
    counted = _CountingNet(net)
    z = process.prior_sample(process.state_shape(tuple(shape)), generator)
    grid = time_grid(steps, rho, t_end, z.device)
    return counted, z, grid, _expand_cond(cond, shape[0], z.device)


def _finish(process: Any, counted: _CountingNet, z: Tensor, t: Tensor, denoise: bool, cond) -> SampleResult:
    if denoise:
        z = process.denoise(counted, z, t.expand(z.shape[0]), cond)
    return SampleResult(process.from_state(z), counted.calls)


def euler_maruyama_step(process: Any, net: Callable[..., Tensor], z: Tensor, t: Tensor, s: Tensor, generator,
                        cond) -> Tensor:
    """z_s = z_t − h f̄(z_t, t) + √h g ξ with h = t − s (f̄ the reverse drift, g ξ the process's
    `diffusion_noise(g, ξ)`: a per-component scale or a per-pixel matrix)."""
    drift, g = process.reverse_sde(net, z, t.expand(z.shape[0]), cond)
    noise = process.diffusion_noise(g, gaussian_noise(tuple(z.shape), generator, z.device, z.dtype))
    return z - (t - s) * drift + torch.sqrt(t - s) * noise


def _report(callback: Callback | None, i: int, t: Tensor, z: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "t": float(t), "x": z})


@torch.no_grad()
def euler_maruyama(
    process: Any,
    net: Callable[..., Tensor],
    shape: tuple[int, ...],
    steps: int,
    generator: torch.Generator | None = None,
    *,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    rho: float = 1.0,
    t_end: float = 0.0,
    denoise: bool = True,
) -> SampleResult:
    """Euler–Maruyama on the reverse SDE: z_s = z_t − h f̄(z_t, t) + g √h ξ, h = t − s."""
    counted, z, grid, cond = _setup(process, net, shape, steps, generator, cond, rho, t_end)
    for i in range(steps):
        z = euler_maruyama_step(process, counted, z, grid[i], grid[i + 1], generator, cond)
        _report(callback, i, grid[i + 1], z)
    return _finish(process, counted, z, grid[-1], denoise, cond)


@torch.no_grad()
def heun(
    process: Any,
    net: Callable[..., Tensor],
    shape: tuple[int, ...],
    steps: int,
    generator: torch.Generator | None = None,
    *,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    rho: float = 1.0,
    t_end: float = 0.0,
    denoise: bool = True,
) -> SampleResult:
    """Heun's 2nd-order method on the probability-flow ODE: z_s = z_t + h (v(z_t, t) + v(z̃_s, s))/2."""
    counted, z, grid, cond = _setup(process, net, shape, steps, generator, cond, rho, t_end)
    batch = z.shape[0]
    for i in range(steps):
        t, s = grid[i], grid[i + 1]
        v_t = process.pf_ode_velocity(counted, z, t.expand(batch), cond)
        euler = z + (s - t) * v_t
        v_s = process.pf_ode_velocity(counted, euler, s.expand(batch), cond)
        z = z + (s - t) * (v_t + v_s) / 2
        _report(callback, i, s, z)
    return _finish(process, counted, z, grid[-1], denoise, cond)


@torch.no_grad()
def predictor_corrector(
    process: Any,
    net: Callable[..., Tensor],
    shape: tuple[int, ...],
    steps: int,
    generator: torch.Generator | None = None,
    *,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    rho: float = 1.0,
    t_end: float = 0.0,
    denoise: bool = True,
    corrector_steps: int = 1,
    snr: float = 0.16,
) -> SampleResult:
    """Euler–Maruyama predictor, then Langevin corrector z ← z + δ∇log p + √(2δ) ξ.

    δ = 2 (r ‖ξ‖ / ‖∇log p‖)² with the norms averaged over the batch and target
    signal-to-noise ratio r = `snr` (Song et al., 2021).
    """
    counted, z, grid, cond = _setup(process, net, shape, steps, generator, cond, rho, t_end)
    batch = z.shape[0]
    for i in range(steps):
        s = grid[i + 1]
        z = euler_maruyama_step(process, counted, z, grid[i], s, generator, cond)
        for _ in range(corrector_steps):
            score = process.score(counted, z, s.expand(batch), cond)
            noise = gaussian_noise(tuple(z.shape), generator, z.device, z.dtype)
            ratio = noise.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            delta = 2 * (snr * ratio) ** 2
            z = z + delta * score + torch.sqrt(2 * delta) * noise
        _report(callback, i, s, z)
    return _finish(process, counted, z, grid[-1], denoise, cond)


SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "euler_maruyama": euler_maruyama,
    "heun": heun,
    "pc": predictor_corrector,
    **BLACKOUT_SAMPLERS,
}


def get_sampler(name: str) -> Callable[..., SampleResult]:
    """Look a sampler up by name, with a clear error naming the choices."""
    if name not in SAMPLERS:
        close = difflib.get_close_matches(name, SAMPLERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown sampler {name!r}{hint}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]

