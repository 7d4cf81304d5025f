"""The named time grids of Gaussian diffusion (`diffspace.sampling.GRIDS` beyond "uniform"), built from the
process's own noise levels, and the inverse map from a noise level to a time that EDM's churn needs.

The noise coordinate is γ = log(σ²/α²) = −λ (λ the log-SNR); EDM's noise level is the VE σ/α = e^{γ/2}.
For a component-wise schedule γ̄(t) is the mean over the components of γ_i(t) clamped to [γ_min, γ_max] (a
component outside that range is clean or pure noise; unclamped, a soft schedule's mean would span e^{±60} and
EDM's spacing would leave its last step to cross every active window); for a scalar schedule it is γ(t) itself.
All of it runs in float64.

    edm      e^{γ̄(t_i)/2} = EDM's ρ-spacing (Karras et al. 2022) from e^{γ̄(1)/2} down to e^{γ̄(t_end)/2}
    logsnr   γ̄(t_i) uniform from γ̄(1) down to γ̄(t_end)
    windows  t_i = U⁻¹(i/N) with U(t) = mean_i u_i(t), u_i the EDM progress of component i inside its active
             window (where γ_min < γ_i < γ_max, `SoftConditioning.active_window`):
                 u_i(t) = (σ_hi^{1/ρ} − σ_i(t)^{1/ρ}) / (σ_hi^{1/ρ} − σ_lo^{1/ρ}),
             σ_i = e^{γ_i/2} clamped to [e^{γ_min/2}, e^{γ_max/2}], σ_hi and σ_lo its values at t = 1 and t_end
             (components whose σ_i does not move on [t_end, 1] are left out). One window for every component (a
             scalar schedule) gives the "edm" grid exactly; disjoint windows (autoregressive soft conditioning)
             get steps in proportion to their components, EDM-spaced inside each, and no steps where nothing moves.

The grid follows one schedule: with a softness-conditioned model, that of the softness in `cond` when every
sample shares it, else the schedule's own softness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffspace.sampling import invert_increasing, noise_grid, pinned

#: A GaussianDiffusion (not imported: the process module imports this one); what the grids read of it is its
#: `schedule`, `prior`, `device` and `noise_level(t, softness)`.
GaussianDiffusion = Any

#: The grids beyond "uniform" that a Gaussian process builds.
GAUSSIAN_GRIDS = ("edm", "logsnr", "windows")

GammaFn = Callable[[Tensor], Tensor]


def common_softness(process: GaussianDiffusion, cond: dict[str, Any] | None) -> float | None:
    """The one softness whose schedule a grid follows: cond["softness"] when every sample has the same, else None
    (the schedule's own)."""
    if not cond or "softness" not in cond:
        return None
    values = torch.as_tensor(cond["softness"], dtype=torch.float64).flatten()
    return float(values[0]) if bool((values == values[0]).all()) else None


def gammas(process: GaussianDiffusion, softness: float | None = None) -> GammaFn:
    """t (T,) ↦ γ_i(t) (T, D) in float64, for the schedule of `softness` (None: the schedule's own); a scalar
    schedule gives one column (T, 1)."""

    def fn(t: Tensor) -> Tensor:
        t = t.to(device=process.device, dtype=torch.float64)
        per_sample = None if softness is None else torch.full_like(t, softness)
        gamma = process.noise_level(t, per_sample).gamma.to(torch.float64)
        return gamma.reshape(len(t), -1).cpu()

    return fn


def mean_gamma(process: GaussianDiffusion, softness: float | None = None) -> GammaFn:
    """t (T,) ↦ γ̄(t) (T,): the mean over the components of γ_i(t) clamped to the schedule's range [γ_min, γ_max]
    (where a component is active; outside it is clean or pure noise), so that γ̄ spans that range."""
    table = gammas(process, softness)
    low, high = process.schedule.gamma_range()
    return lambda t: table(t).clamp(low, high).mean(1)


def time_of_mean_gamma(process: GaussianDiffusion, targets: Tensor, softness: float | None = None) -> Tensor:
    """t = γ̄⁻¹(target) in [0, 1] per target (float64; a target beyond γ̄(1) gives 1)."""
    return invert_increasing(mean_gamma(process, softness), targets)


def window_progress(process: GaussianDiffusion, rho: float, t_end: float, softness: float | None) -> GammaFn:
    """t (T,) ↦ U(t) (T,), the mean EDM progress of the components inside their active windows (module docstring);
    U(1) = 0, U(t_end) = 1, non-increasing in t."""
    schedule = process.schedule
    low_gamma, high_gamma = process.schedule.gamma_range()
    table = gammas(process, softness)

    def root(gamma: Tensor) -> Tensor:
        return torch.exp(gamma.clamp(low_gamma, high_gamma) / (2 * rho))

    top, bottom = root(table(torch.tensor([1.0], dtype=torch.float64))[0]), root(
        table(torch.tensor([t_end], dtype=torch.float64))[0])
    moving = (top - bottom) > 1e-12 * top
    if not bool(moving.any()):
        raise ValueError(f"no component's noise level changes between t_end = {t_end} and 1 under {schedule!r}")
    top, span = top[moving], (top - bottom)[moving]

    def progress(t: Tensor) -> Tensor:
        return ((top - root(table(t)[:, moving])) / span).clamp(0.0, 1.0).mean(1)

    return progress


def windows_grid(process: GaussianDiffusion, steps: int, rho: float, t_end: float, softness: float | None) -> Tensor:
    """t_i = U⁻¹(i/N) for the window progress U (module docstring)."""
    progress = window_progress(process, rho, t_end, softness)
    targets = torch.arange(steps + 1, dtype=torch.float64) / steps
    times = invert_increasing(lambda t: -progress(t), -targets, low=t_end, high=1.0)
    return pinned(times, t_end)


def time_grid(process: GaussianDiffusion, name: str, steps: int, rho: float | None, t_end: float,
              cond: dict[str, Any] | None = None) -> Tensor:
    """The grid `name` of GAUSSIAN_GRIDS for `process` (float64, from 1 down to t_end; module docstring)."""
    if name not in GAUSSIAN_GRIDS:
        raise ValueError(f"a Gaussian process builds the grids {', '.join(GAUSSIAN_GRIDS)}; got {name!r}")
    softness = common_softness(process, cond)
    if name == "windows":
        grid = windows_grid(process, steps, rho, t_end, softness)
    else:
        grid = noise_grid(name, steps, rho, t_end, mean_gamma(process, softness))
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"grid {name!r} with {steps} steps is not strictly decreasing in time: too many steps for "
                         f"the schedule's range (largest repeat near t = {float(grid[1:][grid[1:] >= grid[:-1]][0]):.3g})")
    return grid


__all__ = ["GAUSSIAN_GRIDS", "common_softness", "mean_gamma", "time_grid", "time_of_mean_gamma", "window_progress",
           "windows_grid"]
