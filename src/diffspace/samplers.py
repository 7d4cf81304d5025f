"""SDE and ODE samplers for every continuous-state process (`diffspace.process.ContinuousProcess`), with the
shared signature of `diffspace.sampling`. A family lists the ones that fit it in its registry record.

They integrate from the start state at t_0 (default: a prior sample at 1) down the grid (by default
Euler–Maruyama 200 steps on the "uniform" grid t_i = t_end + (1 − t_end)(1 − i/N)^ρ with ρ = 1, and Heun 40 steps
on the process's "windows" grid with ρ = 7 — EDM's spacing of each component's noise level inside its active
window, the "edm" grid for a scalar schedule — or on the uniform grid where a process builds no "windows" grid) and, with `denoise`, end with one step to the
denoised estimate E[x₀ | x_{t_N}]. Each step makes its network evaluations through `process.predict` and reads
drift, diffusion and probability-flow velocity from the prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffspace.noise import Generator, gaussian_noise
from diffspace.process import ContinuousProcess, Prediction
from diffspace.sampling import (
    Callback, CountingNet, Defaults, SampleResult, choose_grid, defaults_of, expand_cond, report, require_fit,
    start_state, steps_of, with_defaults,
)

Net = Callable[..., Tensor]


def euler_maruyama_step(process: ContinuousProcess, net: Net, x: Tensor, t: Tensor, s: Tensor, generator: Generator,
                        cond: dict[str, Any] | None) -> tuple[Tensor, Prediction]:
    """x_s = x_t − h f̄(x_t, t) + √h g ξ with h = t − s (g ξ the process's `diffusion_noise`); also the prediction at t."""
    times = t.expand(x.shape[0])
    prediction = process.predict(net, x, times, cond)
    drift, g = process.reverse_sde(x, times, prediction)
    noise = process.diffusion_noise(g, gaussian_noise(tuple(x.shape), generator, x.device, x.dtype))
    return x - (t - s) * drift + torch.sqrt(t - s) * noise, prediction


def setup(process: ContinuousProcess, sampler: Callable[..., Any], name: str, net: Net, shape: tuple[int, ...],
          steps: int | None, generator: Generator, grid: Tensor | str | None, x_init: Tensor | None,
          cond: dict[str, Any] | None, rho: float | None, t_end: float | None,
          ) -> tuple[CountingNet, Tensor, Tensor, dict[str, Tensor]]:
    """Check the fit, then (counted net, start state, time grid, conditioning per sample); the grid is the explicit
    one, the named one, or `sampler`'s default (`diffspace.sampling.choose_grid`)."""
    require_fit(process, name)
    x = start_state(process, shape, generator, x_init)
    defaults = defaults_of(sampler) or Defaults(steps=100)
    times = choose_grid(process, defaults, steps, grid, rho, t_end, cond, x.device)
    return CountingNet(net), x, times, expand_cond(cond, shape[0], x.device)


def finish(process: ContinuousProcess, counted: CountingNet, x: Tensor, t: Tensor, denoise: bool,
            cond: dict[str, Tensor]) -> SampleResult:
    """The samples in model space (after a last step to E[x₀ | x_t] when `denoise`) and the NFE."""
    if denoise:
        x = process.predict(counted, x, t.expand(x.shape[0]), cond).denoised
    return SampleResult(process.from_state(x), counted.calls)


@with_defaults(steps=200, grid="uniform")
@torch.no_grad()
def euler_maruyama(
    process: ContinuousProcess,
    net: Net,
    shape: tuple[int, ...],
    steps: int | None = None,
    generator: Generator = None,
    *,
    grid: Tensor | str | None = None,
    x_init: Tensor | None = None,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
    rho: float | None = None,
    t_end: float | None = None,
    denoise: bool = True,
) -> SampleResult:
    """Euler–Maruyama on the reverse SDE: x_s = x_t − h f̄(x_t, t) + g √h ξ, h = t − s; one NFE per step."""
    counted, x, times, cond = setup(process, euler_maruyama, "euler_maruyama", net, shape, steps, generator, grid,
                                    x_init, cond, rho, t_end)
    for i in steps_of(len(times) - 1, progress, "euler_maruyama"):
        x, prediction = euler_maruyama_step(process, counted, x, times[i], times[i + 1], generator, cond)
        report(callback, i, times[i + 1], x, prediction.denoised)
    return finish(process, counted, x, times[-1], denoise, cond)


@with_defaults(steps=40, grid="windows")
@torch.no_grad()
def heun(
    process: ContinuousProcess,
    net: Net,
    shape: tuple[int, ...],
    steps: int | None = None,
    generator: Generator = None,
    *,
    grid: Tensor | str | None = None,
    x_init: Tensor | None = None,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
    rho: float | None = None,
    t_end: float | None = None,
    denoise: bool = True,
) -> SampleResult:
    """Heun's 2nd-order method on the probability-flow ODE: x_s = x_t + h (v(x_t, t) + v(x̃_s, s))/2; two NFE per step."""
    counted, x, times, cond = setup(process, heun, "heun", net, shape, steps, generator, grid, x_init, cond, rho,
                                    t_end)
    batch = x.shape[0]
    for i in steps_of(len(times) - 1, progress, "heun"):
        t, s = times[i].expand(batch), times[i + 1].expand(batch)
        v_t = process.pf_ode_velocity(x, t, process.predict(counted, x, t, cond))
        euler = x + (times[i + 1] - times[i]) * v_t
        prediction = process.predict(counted, euler, s, cond)
        v_s = process.pf_ode_velocity(euler, s, prediction)
        x = x + (times[i + 1] - times[i]) * (v_t + v_s) / 2
        report(callback, i, times[i + 1], x, prediction.denoised)
    return finish(process, counted, x, times[-1], denoise, cond)


#: The continuous-state samplers by name, for the families they fit.
SDE_SAMPLERS = {"euler_maruyama": euler_maruyama, "heun": heun}

__all__ = ["SDE_SAMPLERS", "euler_maruyama", "euler_maruyama_step", "heun", "setup", "finish"]
