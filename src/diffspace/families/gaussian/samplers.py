"""The samplers that fit Gaussian diffusion (first = default): the shared SDE/ODE samplers of `diffspace.samplers`
and the predictor–corrector sampler, whose Langevin step uses the family's per-component noise level σ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffspace.noise import Generator, gaussian_noise
from diffspace.process import ContinuousProcess
from diffspace.samplers import SDE_SAMPLERS, euler_maruyama_step, finish, setup
from diffspace.sampling import Callback, SampleResult, Sampler, report, steps_of

Net = Callable[..., Tensor]


@torch.no_grad()
def predictor_corrector(
    process: ContinuousProcess,
    net: Net,
    shape: tuple[int, ...],
    steps: int | None = None,
    generator: Generator = None,
    *,
    grid: Tensor | None = None,
    x_init: Tensor | None = None,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
    rho: float = 1.0,
    t_end: float = 0.0,
    denoise: bool = True,
    corrector_steps: int = 1,
    snr: float = 0.16,
) -> SampleResult:
    """Euler–Maruyama predictor, then Langevin corrector z ← z + δ ∇log p_s + √(2δ) ξ per component.

    δ_i = 2 r² σ_i(s)² with r = `snr`: Song et al.'s rule δ = 2 (r ‖ξ‖/‖∇log p‖)² with the norms at their
    expected values (‖ξ‖² ≈ D, ‖∇log p‖² ≈ D/σ² in whitened coordinates), so each sample's step depends on its
    time alone, not on the batch; per component it is Langevin dynamics preconditioned by diag(σ²).
    """
    counted, z, times, cond = setup(process, "pc", net, shape, steps, generator, grid, x_init, cond, rho, t_end)
    batch = z.shape[0]
    for i in steps_of(len(times) - 1, progress, "pc"):
        s = times[i + 1]
        z, prediction = euler_maruyama_step(process, counted, z, times[i], s, generator, cond)
        for _ in range(corrector_steps):
            prediction = process.predict(counted, z, s.expand(batch), cond)
            level, _ = prediction.context
            delta = 2 * snr**2 * level.sigma**2
            noise = gaussian_noise(tuple(z.shape), generator, z.device, z.dtype)
            z = z + delta * prediction.score + torch.sqrt(2 * delta) * noise
        report(callback, i, s, z, prediction.denoised)
    return finish(process, counted, z, times[-1], denoise, cond)


SAMPLERS: dict[str, Sampler] = {**SDE_SAMPLERS, "pc": predictor_corrector}
