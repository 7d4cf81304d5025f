"""The samplers that fit Gaussian diffusion (first = default): the shared SDE/ODE samplers of `diffspace.samplers`,
the predictor–corrector sampler, and few-step solvers that are exact for the linear part of the diffusion,
component by component, in whitened coordinates.

Every component i has its own noise coordinate γ_i(t) = log(σ_i²/α_i²) = −λ_i(t) (λ the log-SNR), so a step
t → s has its own h_i = (γ_i(t) − γ_i(s))/2 ≥ 0 (the step in half log-SNR); a component frozen by a clipped soft
schedule has h_i = 0 and is left exactly as it is. In the VE coordinates y = z/α, σ̃ = σ/α = e^{γ/2}, the
probability-flow ODE of each component is dy/dσ̃ = (y − D)/σ̃ = ε̂, D = E[z₀ | z_t] the denoised estimate:

    ddim        z_s = α_s D + √(σ_s² − c²) ε̂ + c ξ,  c = η σ_s √(1 − e^{γ_s − γ_t})
                (Song et al. 2021; η = 0 deterministic and first order, η = 1 the DDPM posterior)
    dpmpp_2m    DPM-Solver++(2M) (Lu et al. 2022): y_s = e^{−h} y_t + (1 − e^{−h}) D̃, D̃ = D + (h/2h′)(D − D′)
                from the previous step's D′ and h′; data (x₀) prediction, second order
    dpmpp_3m    DPM-Solver++(3M) (k-diffusion's multistep form): adds the φ₂, φ₃ corrections of the last
                three denoised estimates; third order
    edm_heun    EDM's Heun (Karras et al. 2022, Algorithm 2): optional churn raises the noise level by a factor
                (1 + γ_c), γ_c = min(churn/N, √2 − 1) where s_tmin ≤ σ̄ ≤ s_tmax, with fresh noise of scale
                s_noise, then a Heun step of dy/dσ̃ = ε̂ per component; two NFE per step

With `eta` > 0 the DPM-Solver++ samplers are their SDE variants: h is replaced by h(1 + η) in the update and
noise σ̃_s √(1 − e^{−2hη}) ξ is added. A component whose previous steps did not move (h′ = 0) falls back to the
order its history supports, so no coefficient divides by zero. Coefficients are formed in float64.

Default grids (each passes the ≤ 2% per-octave spectrum check of tests/test_samplers.py at its default steps):
see the `with_defaults` line of each sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffspace.families.gaussian.grids import common_softness, mean_gamma, time_of_mean_gamma
from diffspace.noise import Generator, gaussian_noise
from diffspace.process import ContinuousProcess, Prediction
from diffspace.samplers import SDE_SAMPLERS, euler_maruyama_step, finish, setup
from diffspace.sampling import Callback, SampleResult, Sampler, report, steps_of, with_defaults

Net = Callable[..., Tensor]


@with_defaults(steps=100, grid="uniform")
@torch.no_grad()
def predictor_corrector(
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
    corrector_steps: int = 1,
    snr: float = 0.16,
) -> SampleResult:
    """Euler–Maruyama predictor, then Langevin corrector z ← z + δ ∇log p_s + √(2δ) ξ per component.

    δ_i = 2 r² σ_i(s)² with r = `snr`: Song et al.'s rule δ = 2 (r ‖ξ‖/‖∇log p‖)² with the norms at their
    expected values (‖ξ‖² ≈ D, ‖∇log p‖² ≈ D/σ² in whitened coordinates), so each sample's step depends on its
    time alone, not on the batch; per component it is Langevin dynamics preconditioned by diag(σ²).
    """
    if corrector_steps < 0 or snr < 0:
        raise ValueError(f"need corrector_steps ≥ 0 and snr ≥ 0; got {corrector_steps}, {snr}")
    counted, z, times, cond = setup(process, predictor_corrector, "pc", net, shape, steps, generator, grid, x_init,
                                    cond, rho, t_end)
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


#: |γ| beyond which the solvers hold a component as it is: it is clean (γ < −30) or pure noise (γ > 30) to within
#: e^{−30}, and its α or σ would underflow (soft schedules with a wide label range reach |γ| in the hundreds).
GAMMA_GUARD = 30.0


def _level(process: Any, t: Tensor, batch: int, cond: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(α, σ) at time t for the batch, float64, broadcastable to the state (per component and sample), from γ held
    to [−GAMMA_GUARD, GAMMA_GUARD]."""
    _, softness = process.conditioning(cond, batch, t.device)
    gamma = process.noise_level(t.to(torch.float64).expand(batch), softness).gamma.to(torch.float64)
    gamma = gamma.clamp(-GAMMA_GUARD, GAMMA_GUARD)
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def _denoised(z: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """D = (z − σ ε̂)/α in float64 (with the guarded α, σ of `_level`: finite where float32's would overflow)."""
    return (z.to(torch.float64) - sigma * eps.to(torch.float64)) / alpha


def _safe(x: Tensor) -> Tensor:
    """x where x > 0, else 1: a denominator whose zero entries are masked out afterwards."""
    return torch.where(x > 0, x, torch.ones_like(x))


def _noise(eta: float, like: Tensor, generator: Generator) -> Tensor | None:
    """ξ ~ N(0, I) shaped like the state when η > 0 (no draw otherwise)."""
    return gaussian_noise(tuple(like.shape), generator, like.device, like.dtype).to(torch.float64) if eta else None


def _check_eta(eta: float) -> None:
    if eta < 0 or not math.isfinite(eta):
        raise ValueError(f"need eta ≥ 0; got {eta}")


@with_defaults(steps=400, grid="logsnr")
@torch.no_grad()
def ddim(
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
    eta: float = 0.0,
) -> SampleResult:
    """DDIM per component: z_s = α_s D + √(σ_s² − c²) ε̂ + c ξ, c = η σ_s √(1 − e^{γ_s − γ_t}); one NFE per step."""
    _check_eta(eta)
    counted, z, times, cond = setup(process, ddim, "ddim", net, shape, steps, generator, grid, x_init, cond, rho,
                                    t_end)
    batch = z.shape[0]
    for i in steps_of(len(times) - 1, progress, "ddim"):
        t, s = times[i], times[i + 1]
        prediction = process.predict(counted, z, t.expand(batch), cond)
        (alpha_t, sigma_t), (alpha_s, sigma_s) = _level(process, t, batch, cond), _level(process, s, batch, cond)
        eps = _eps(prediction)
        # e^{γ_s − γ_t} = (σ_s α_t / α_s σ_t)² ≤ 1; c = 0 for a frozen component, which then stays where it is
        ratio = ((sigma_s * alpha_t) / (alpha_s * sigma_t)) ** 2
        c = eta * sigma_s * (1 - ratio).clamp_min(0).sqrt()
        update = alpha_s * _denoised(z, eps, alpha_t, sigma_t) + (sigma_s**2 - c**2).clamp_min(0).sqrt() * eps
        noise = _noise(eta, z, generator)
        z = (update if noise is None else update + c * noise).to(z.dtype)
        report(callback, i, s, z, prediction.denoised)
    return finish(process, counted, z, times[-1], denoise, cond)


def _dpmpp(process: ContinuousProcess, sampler: Callable[..., Any], name: str, order: int, net: Net,
           shape: tuple[int, ...], steps: int | None, generator: Generator, grid: Tensor | str | None,
           x_init: Tensor | None, callback: Callback | None, cond: dict[str, Any] | None, progress: bool,
           rho: float | None, t_end: float | None, denoise: bool, eta: float) -> SampleResult:
    """DPM-Solver++ multistep of order 1–3 per component (module docstring), in y = z/α with h = (γ_t − γ_s)/2."""
    _check_eta(eta)
    counted, z, times, cond = setup(process, sampler, name, net, shape, steps, generator, grid, x_init, cond, rho,
                                    t_end)
    batch = z.shape[0]
    history: list[tuple[Tensor, Tensor]] = []  # (D, h) of the previous steps, newest first
    for i in steps_of(len(times) - 1, progress, name):
        t, s = times[i], times[i + 1]
        prediction = process.predict(counted, z, t.expand(batch), cond)
        (alpha_t, sigma_t), (alpha_s, sigma_s) = _level(process, t, batch, cond), _level(process, s, batch, cond)
        denoised = _denoised(z, _eps(prediction), alpha_t, sigma_t)
        h = torch.log((sigma_t * alpha_s) / (alpha_t * sigma_s)).clamp_min(0)  # (γ_t − γ_s)/2 per component
        h_eta = h * (1 + eta)
        decay = torch.exp(-h_eta)
        y = decay * z.to(torch.float64) / alpha_t + (1 - decay) * denoised
        y = y + _multistep_correction(denoised, h, h_eta, history, order)
        noise = _noise(eta, z, generator)
        if noise is not None:
            y = y + (sigma_s / alpha_s) * (-torch.expm1(-2 * h * eta)).clamp_min(0).sqrt() * noise
        z = (alpha_s * y).to(z.dtype)
        history.insert(0, (denoised, h))
        del history[2:]
        report(callback, i, s, z, prediction.denoised)
    return finish(process, counted, z, times[-1], denoise, cond)


def _phis(h: Tensor) -> tuple[Tensor, Tensor]:
    """φ₂ = 1 − (1 − e^{−h})/h and φ₃ = φ₂/h − ½ (k-diffusion's 3M), by their series below h = 10⁻³ (no cancellation)."""
    small = h < 1e-3
    big = torch.where(small, torch.ones_like(h), h)
    phi2 = torch.where(small, h / 2 - h**2 / 6 + h**3 / 24, 1 + torch.expm1(-big) / big)
    phi3 = torch.where(small, -h / 6 + h**2 / 24 - h**3 / 120, phi2 / big - 0.5)
    return phi2, phi3


def _multistep_correction(denoised: Tensor, h: Tensor, h_eta: Tensor, history: list[tuple[Tensor, Tensor]],
                          order: int) -> Tensor:
    """The higher-order terms of DPM-Solver++(2M) (order 2) or (3M) (order 3) per component, from the previous
    steps' (D′, h′) newest first; a component without that history (no previous step, or one with h′ = 0) gets the
    order it has, one that does not move now (h = 0) gets 0."""
    if not history or order < 2:
        return torch.zeros_like(denoised)
    zero = torch.zeros_like(h)
    d1, h1 = history[0]
    has1 = (h > 0) & (h1 > 0)
    inv_r0 = torch.where(has1, h / _safe(h1), zero)  # 1/r₀ = h/h′
    d1_0 = (denoised - d1) * inv_r0
    if order == 2:  # Lu et al. (2M): ½ (1 − e^{−h}) (1/r₀)(D − D′)
        return -0.5 * torch.expm1(-h_eta) * d1_0
    phi2, phi3 = _phis(h_eta)
    if len(history) < 2:
        return phi2 * d1_0
    d2, h2 = history[1]
    has2 = has1 & (h2 > 0)
    r0 = torch.where(has1, h1 / _safe(h), torch.ones_like(h))
    r1 = torch.where(has2, h2 / _safe(h), torch.ones_like(h))
    d1_1 = torch.where(has2, (d1 - d2) * h / _safe(h2), zero)
    first = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
    second = (d1_0 - d1_1) / (r0 + r1)
    return torch.where(has2, phi2 * first - phi3 * second, phi2 * d1_0)


def _multistep(name: str, order: int, steps: int) -> Sampler:
    """The DPM-Solver++ sampler of `order` under `name`, with its default step count on the logsnr grid."""

    @with_defaults(steps=steps, grid="logsnr")
    @torch.no_grad()
    def sampler(
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
        eta: float = 0.0,
    ) -> SampleResult:
        return _dpmpp(process, sampler, name, order, net, shape, steps, generator, grid, x_init, callback, cond,
                      progress, rho, t_end, denoise, eta)

    sampler.__name__ = sampler.__qualname__ = name
    return sampler


dpmpp_2m = _multistep("dpmpp_2m", 2, 25)
dpmpp_2m.__doc__ = """DPM-Solver++(2M) per component: y_s = e^{−h} y_t + (1 − e^{−h})(D + (h/2h′)(D − D′)); one NFE per step."""
dpmpp_3m = _multistep("dpmpp_3m", 3, 20)
dpmpp_3m.__doc__ = """DPM-Solver++(3M) per component (third-order multistep in half log-SNR); one NFE per step."""


@with_defaults(steps=50, grid="edm")
@torch.no_grad()
def edm_heun(
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
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> SampleResult:
    """EDM's stochastic Heun (Algorithm 2) per component in y = z/α, σ̃ = e^{γ/2}: churn to t̂ (σ̄(t̂) = (1 + γ_c)σ̄(t)),
    then y_s = ŷ + (σ̃_s − σ̃_t̂)(ε̂(ŷ, t̂) + ε̂(ỹ_s, s))/2; two NFE per step (churn = 0: deterministic)."""
    if churn < 0 or s_noise < 0 or s_tmin < 0 or s_tmax < s_tmin:
        raise ValueError(f"need churn ≥ 0, s_noise ≥ 0 and 0 ≤ s_tmin ≤ s_tmax; got churn={churn}, "
                         f"s_noise={s_noise}, s_tmin={s_tmin}, s_tmax={s_tmax}")
    counted, z, times, cond = setup(process, edm_heun, "edm_heun", net, shape, steps, generator, grid, x_init, cond,
                                    rho, t_end)
    batch, count = z.shape[0], len(times) - 1
    bump = min(churn / count, math.sqrt(2) - 1)
    for i in steps_of(count, progress, "edm_heun"):
        t, s = times[i], times[i + 1]
        t_hat = _churned_time(process, t, bump, s_tmin, s_tmax, cond)
        alpha_t, sigma_t = _level(process, t, batch, cond)
        y = z.to(torch.float64) / alpha_t
        alpha_h, sigma_h = _level(process, t_hat, batch, cond)
        if t_hat is not t:  # churned (ŷ = y + √(σ̃_t̂² − σ̃_t²) s_noise ξ); without churn no time is read back
            lift = ((sigma_h / alpha_h) ** 2 - (sigma_t / alpha_t) ** 2).clamp_min(0).sqrt()
            y = y + lift * s_noise * gaussian_noise(tuple(z.shape), generator, z.device, z.dtype).to(torch.float64)
        alpha_s, sigma_s = _level(process, s, batch, cond)
        step = sigma_s / alpha_s - sigma_h / alpha_h  # σ̃_s − σ̃_t̂ ≤ 0 per component
        first = _eps(process.predict(counted, (alpha_h * y).to(z.dtype), t_hat.expand(batch), cond))
        euler = y + step * first
        prediction = process.predict(counted, (alpha_s * euler).to(z.dtype), s.expand(batch), cond)
        z = (alpha_s * (y + step * (first + _eps(prediction)) / 2)).to(z.dtype)
        report(callback, i, s, z, prediction.denoised)
    return finish(process, counted, z, times[-1], denoise, cond)


def _eps(prediction: Prediction) -> Tensor:
    """ε̂ of a Gaussian prediction, float64."""
    return prediction.context[1].to(torch.float64)


def _churned_time(process: Any, t: Tensor, bump: float, s_tmin: float, s_tmax: float,
                  cond: dict[str, Tensor]) -> Tensor:
    """t̂ ≥ t with σ̄(t̂) = (1 + bump) σ̄(t), σ̄ = e^{γ̄/2} (γ̄ the mean noise coordinate of the grids), where
    s_tmin ≤ σ̄(t) ≤ s_tmax (else t); at most 1."""
    if bump <= 0:
        return t
    softness = common_softness(process, cond)
    gamma = mean_gamma(process, softness)(t.to(torch.float64).view(1))
    if not s_tmin <= math.exp(float(gamma[0]) / 2) <= s_tmax:
        return t
    later = time_of_mean_gamma(process, gamma + 2 * math.log1p(bump), softness)
    later = later.to(device=t.device, dtype=t.dtype).view(())
    return t if not bool(later > t) else later.clamp(max=1.0)


SAMPLERS: dict[str, Sampler] = {**SDE_SAMPLERS, "pc": predictor_corrector, "ddim": ddim, "dpmpp_2m": dpmpp_2m,
                                "dpmpp_3m": dpmpp_3m, "edm_heun": edm_heun}
