"""The samplers that fit flow matching (first = default), with the shared signature of `diffspace.sampling`: ODE
solvers of dz/dt = v(z, t) (`process.pf_ode_velocity`) from t = 1 down the grid, and Euler–Maruyama on the
reverse SDE with the flow's marginals (`diffspace.samplers`).

    euler          z_s = z_t + h v(z_t, t),  h = s − t < 0                                  1 NFE per step
    midpoint       z_s = z_t + h v(z_t + ½h v(z_t, t), t + ½h)                             2 NFE per step
    heun           z_s = z_t + ½h (v(z_t, t) + v(z̃_s, s)), z̃_s the Euler step (shared)     2 NFE per step
    dopri5         adaptive Dormand–Prince 5(4), torchdiffeq's controller, a step per sample   NFE as needed
    euler_maruyama z_s = z_t − h f̄ + g√|h| ξ on the reverse SDE (shared)                   1 NFE per step

Options: `grid` ("uniform", the only named grid a flow offers, or an explicit tensor of times), `rho`, `t_end` (the
grid t_i = t_end + (1 − t_end)(1 − i/N)^ρ) and `denoise` (a last step to
ẑ₀ = E[z₀ | z_t]; the identity at t_end = 0, where the path is at the data, so off by default for the flow's own
samplers; the shared ones keep their default). dopri5 also takes `rtol`, `atol`. Default steps (when `steps` is
None): euler 100, midpoint 50 (the same NFE), dopri5 1 (one interval of output times; its adaptive steps are its own),
heun and euler_maruyama the shared samplers' 40 and 200 on the uniform grid (a flow builds no grids of its own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffspace.noise import Generator
from diffspace.process import ContinuousProcess, Prediction
from diffspace.samplers import euler_maruyama, finish, heun, setup
from diffspace.sampling import Callback, SampleResult, Sampler, report, steps_of, with_defaults

Net = Callable[..., Tensor]


def velocity(process: ContinuousProcess, net: Net, z: Tensor, t: Tensor,
             cond: dict[str, Tensor]) -> tuple[Tensor, Prediction]:
    """(v(z, t), the prediction) for one time t shared by the batch."""
    times = t.expand(z.shape[0])
    prediction = process.predict(net, z, times, cond)
    return process.pf_ode_velocity(z, times, prediction), prediction


@with_defaults(steps=100, grid="uniform")
@torch.no_grad()
def euler(
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
    denoise: bool = False,
) -> SampleResult:
    """Euler's method on the flow ODE: z_s = z_t + (s − t) v(z_t, t); one NFE per step."""
    counted, z, times, cond = setup(process, euler, "euler", net, shape, steps, generator, grid, x_init, cond, rho, t_end)
    for i in steps_of(len(times) - 1, progress, "euler"):
        v, prediction = velocity(process, counted, z, times[i], cond)
        z = z + (times[i + 1] - times[i]) * v
        report(callback, i, times[i + 1], z, prediction.denoised)
    return finish(process, counted, z, times[-1], denoise, cond)


@with_defaults(steps=50, grid="uniform")
@torch.no_grad()
def midpoint(
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
    denoise: bool = False,
) -> SampleResult:
    """The explicit midpoint method (2nd order): z_s = z_t + h v(z_t + ½h v(z_t, t), t + ½h); two NFE per step."""
    counted, z, times, cond = setup(process, midpoint, "midpoint", net, shape, steps, generator, grid, x_init, cond, rho, t_end)
    for i in steps_of(len(times) - 1, progress, "midpoint"):
        h = times[i + 1] - times[i]
        v, _ = velocity(process, counted, z, times[i], cond)
        v, prediction = velocity(process, counted, z + 0.5 * h * v, times[i] + 0.5 * h, cond)
        z = z + h * v
        report(callback, i, times[i + 1], z, prediction.denoised)
    return finish(process, counted, z, times[-1], denoise, cond)


#: Dormand–Prince 5(4): nodes c, stage coefficients a (the last row is the 5th-order solution, whose derivative is
#: the next step's first stage) and error weights e = b₅ − b₄.
_DP_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = ((1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_E = (35 / 384 - 5179 / 57600, 0.0, 500 / 1113 - 7571 / 16695, 125 / 192 - 393 / 640,
         -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40)
#: torchdiffeq's step-size controller: safety factor, largest growth and shrink factors, order of the error estimate.
_SAFETY, _GROW, _SHRINK, _ORDER = 0.9, 10.0, 0.2, 5
_MAX_CALLS = 100_000


def _rms(x: Tensor) -> Tensor:
    """Per-sample root mean square (B,)."""
    return x.flatten(1).pow(2).mean(1).sqrt()


class _Field:
    """v(z, t) of the rows `rows` of the batch, each at its own time t (B_rows,), counted; keeps ẑ₀ of each call."""

    def __init__(self, process: ContinuousProcess, net: Net, cond: dict[str, Tensor]) -> None:
        self.process, self.net, self.cond = process, net, cond
        self.denoised: Tensor | None = None

    def __call__(self, z: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        cond = {key: value[rows] for key, value in self.cond.items()}
        prediction = self.process.predict(self.net, z, t, cond)
        self.denoised = prediction.denoised
        return self.process.pf_ode_velocity(z, t, prediction)


def _first_step(field: _Field, t: Tensor, z: Tensor, f: Tensor, rows: Tensor, rtol: float, atol: float) -> Tensor:
    """Hairer–Nørsett–Wanner's initial step size (II.4), per sample, as torchdiffeq selects it."""
    scale = atol + z.abs() * rtol
    d0, d1 = _rms(z / scale), _rms(f / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-30))
    f1 = field(z - h0.view(-1, 1, 1, 1) * f, t - h0, rows)
    d2 = _rms((f1 - f) / scale) / h0
    h1 = torch.where((d1 <= 1e-15) & (d2 <= 1e-15), torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / torch.maximum(d1, d2).clamp_min(1e-30)) ** (1.0 / _ORDER))
    return torch.minimum(100 * h0, h1)


@with_defaults(steps=1, grid="uniform")
@torch.no_grad()
def dopri5(
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
    denoise: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> SampleResult:
    """Adaptive Dormand–Prince 5(4) on the flow ODE with a step size of its own for every sample.

    The method, error norm (RMS of error/(atol + rtol·max|z|)), initial step and step-size controller are
    torchdiffeq's dopri5, applied to each sample on its own, so sample i is the same whatever batch it is drawn in
    (one adaptive step for the whole batch, as torchdiffeq takes it, would tie every sample to the batch's worst).
    The batch advances in lockstep, one Runge–Kutta stage per network call; each sample steps exactly onto every
    time of the grid, where the callback gets the state and the denoised estimate there (the 7th stage is evaluated
    at the step's end). NFE = the network calls made (those of the slowest sample).
    """
    counted, z, times, cond = setup(process, dopri5, "dopri5", net, shape, steps, generator, grid, x_init, cond, rho, t_end)
    field, z = _Field(process, counted, cond), z.clone()  # stepped in place, row by row
    rows = torch.arange(z.shape[0], device=z.device)
    t = times[0].to(z.dtype).expand(z.shape[0]).clone()
    f = field(z, t, rows)
    denoised = field.denoised
    h = _first_step(field, t, z, f, rows, rtol, atol)
    for i in steps_of(len(times) - 1, progress, "dopri5"):
        target = times[i + 1].to(z.dtype)
        while bool((t > target).any()):
            if counted.calls > _MAX_CALLS:
                raise RuntimeError(f"dopri5 made {counted.calls} network calls without reaching t = {float(target)}")
            live = (t > target).nonzero().flatten()
            t0, y0, k = t[live], z[live], [f[live]]
            step = torch.minimum(h[live], t0 - target)
            landed = torch.where(step >= t0 - target, target, t0 - step)  # onto the grid time exactly
            dt = -step.view(-1, 1, 1, 1)
            for c, a in zip(_DP_C, _DP_A):
                stage = y0 + dt * sum(coefficient * kj for coefficient, kj in zip(a, k) if coefficient)
                k.append(field(stage, landed if c == 1.0 else t0 - c * step, live))
            error = dt * sum(e * kj for e, kj in zip(_DP_E, k) if e)
            ratio = _rms(error / (atol + rtol * torch.maximum(y0.abs(), stage.abs())))
            if not bool(torch.isfinite(ratio).all()):
                raise FloatingPointError("dopri5: the velocity or the state is not finite")
            accept = ratio <= 1
            keep = live[accept]
            t[keep], z[keep], f[keep] = landed[accept], stage[accept], k[-1][accept]
            if denoised is not None and field.denoised is not None:
                denoised = denoised.clone()
                denoised[keep] = field.denoised[accept]
            factor = (_SAFETY / ratio.clamp_min(1e-30) ** (1.0 / _ORDER)).clamp(max=_GROW)
            factor = torch.where(ratio == 0, torch.full_like(factor, _GROW),
                                 torch.where(ratio < 1, factor.clamp(min=1.0), factor.clamp(min=_SHRINK)))
            h[live] = step * factor
        report(callback, i, times[i + 1], z if callback is None else z.clone(), denoised)
    return finish(process, counted, z, times[-1], denoise, cond)


SAMPLERS: dict[str, Sampler] = {"euler": euler, "midpoint": midpoint, "heun": heun, "dopri5": dopri5,
                                "euler_maruyama": euler_maruyama}

__all__ = ["SAMPLERS", "dopri5", "euler", "midpoint", "velocity"]
