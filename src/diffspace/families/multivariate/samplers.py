"""The samplers that fit multivariate diffusions (first = default): the shared SDE/ODE samplers of `diffspace.samplers`
(the Langevin corrector of "pc" is not offered: its step-size rule assumes a per-component score) and exponential
integrators that apply the exact linear flow of the drift and integrate only the score term.

With the intrinsic time τ = B(t) the drift β(t)A₀u has the flow Φ(s, t) = expm((B(s) − B(t))A₀) from t to s (the
kernels' maths). The network's ε̂ gives the score −L_r⁻ᵀ ε̂ = −Σ_r⁻¹ L_r ε̂ through the kernel's Cholesky factor, so
the probability-flow ODE is du/dr = A u + ½ G Σ⁻¹ L ε̂ (G = ggᵀ = 2βD). Hold c = R_r⁻¹ L_r ε̂ constant over a step,
where R_r is the square root of Σ_r that the ODE itself transports, dR/dr = (A + ½GΣ⁻¹)R (R Rᵀ = Σ for all r; the
generalised DDIM of Zhang, Tao & Chen 2023): then ∫_t^s Φ(s, r) ½G Σ⁻¹ R_r dr c = (R_s − Φ(s, t) R_t) c exactly, and

    exp_ode   u_s = Φ(s, t)(u_t − L_t ε̂) + Ψ(s, t) L_t ε̂,       Ψ(s, t) = R_s R_t⁻¹,

exact when the data are a point (for the VP diffusion it is DDIM); order 2 (the default) adds the linear
          extrapolation of the signal part in half log-SNR (module-level details in `exp_ode`). Ψ = L_s Ω(s, t) L_t⁻¹ with Ω the rotation that
R_r = L_r O_r adds to the Cholesky factor, Ω′ = W Ω, W = L⁻¹(A + ½GΣ⁻¹)L − low(L⁻¹Σ′L⁻ᵀ) skew-symmetric (low: the
lower triangle with half the diagonal; Σ′ = AΣ + ΣAᵀ + G): a product of matrix exponentials of W on SUBSTEPS
intervals uniform in log τ per step (second order in the substeps, relative error ≈ 3·10⁻⁵ at 16).
exp_sde   first order on the reverse SDE du = [A u + G L⁻ᵀ ε̂] dt + g dW̄ with ε̂ held constant over the step:
          u_s = Φ u_t − C ε̂ + ξ, C = ∫_s^t Φ(s, r) G(r) L_r⁻ᵀ dr (Gauss–Legendre in log τ, where the integrand is
          smooth), ξ the exact noise of the linear part, N(0, ∫_s^t Φ(s, r) G(r) Φ(s, r)ᵀ dr): the matrix-fraction
          covariance of the drift −A₀ over B(t) − B(s). (Holding the Cholesky ε̂ constant measured better here than
          holding exp_ode's c constant on the SDE.)

Each is one NFE per step; the K×K maths runs in float64 for the whole batch, every step's coefficients in one batch
before the first network call (they follow from the grid alone), so a step reads nothing back from the device. Times below the process's
t_min are read as t_min, as the kernels read them, and the default grid ends there (t_end = t_min).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffspace.families.multivariate.kernels import (
    doublings_for, drift_matrix, expm_unit, fraction_block, kron_apply, matrix_fraction, symmetric_sqrt,
)
from diffspace.noise import Generator, gaussian_noise
from diffspace.process import ContinuousProcess
from diffspace.samplers import SDE_SAMPLERS, finish, setup
from diffspace.sampling import Callback, SampleResult, Sampler, report, require_fit, steps_of, with_defaults

Net = Callable[..., Tensor]
#: Substeps per step for the rotation Ω(s, t).
SUBSTEPS = 16


def _drift(process: Any) -> Tensor:
    """A₀ = −(Q + D)Σ_∞⁻¹ (float64)."""
    q, d = process.matrices()
    return drift_matrix(q.to(torch.float64), d.to(torch.float64), process.stationary_var)


def _lower_half(x: Tensor) -> Tensor:
    """The lower triangle of x with its diagonal halved: dL = L·low(L⁻¹ dΣ L⁻ᵀ) for Σ = LLᵀ."""
    return torch.tril(x, -1) + 0.5 * torch.diag_embed(torch.diagonal(x, dim1=-2, dim2=-1))


def expm(x: Tensor) -> Tensor:
    """e^X for matrices X (N, n, n): the Taylor exponential `expm_unit` at X/2ˢ squared s times, s fixed by the largest
    Frobenius norm (≥ the spectral norm) of the batch — one value read back per call, however many matrices."""
    if x.shape[0] == 0:
        return x.clone()
    doublings = doublings_for(float(torch.linalg.matrix_norm(x).max()))
    out = expm_unit(x / 2**doublings)
    for _ in range(doublings):
        out = torch.bmm(out, out)
    return out


def _log_tau_nodes(process: Any, pairs: list[tuple[float, float]], substeps: int) -> tuple[Tensor, Tensor]:
    """(r, midpoints) per step t → s: the times (J, S + 1) uniform in log τ from t to s and their midpoints (J, S)
    in log τ, float64 on the CPU (τ = B(t) from Python floats: nothing is read back)."""
    schedule = process.schedule
    w = torch.stack([torch.linspace(math.log(schedule.integral(t)), math.log(schedule.integral(s)), substeps + 1,
                                    dtype=torch.float64) for t, s in pairs])
    return schedule.time_of(torch.exp(w)), schedule.time_of(torch.exp((w[:, 1:] + w[:, :-1]) / 2))


def transports(process: Any, pairs: list[tuple[float, float]], substeps: int = SUBSTEPS,
               moments: list[bool] | None = None) -> list[tuple[Tensor, Tensor | None]]:
    """(Ψ(s, t), J) in float64 for every step (t, s) of `pairs`. Ψ = R_s R_t⁻¹ is the flow from t to s of
    dX/dr = (A + ½GΣ⁻¹)X, computed as L_s Ω(s, t) L_t⁻¹ with Ω the product of expm(W(r_mid) Δr) over `substeps`
    intervals uniform in log τ (module docstring). Where `moments[j]`, J = ∫_t^s Ψ(s, r) ½G_rΣ_r⁻¹ Φ(r, t)(ξ(r) − ξ(t)) dr
    (ξ = λ/2, `log_snr`) by the midpoint rule on the same intervals, the weight of the first-order term of exp_ode's
    second order (else None). Every step's kernels and exponentials are computed in one batch each."""
    if not pairs:
        return []
    moments = [False] * len(pairs) if moments is None else moments
    count, k_dim, device = len(pairs), process.num_vars, process.device
    r, middle = _log_tau_nodes(process, pairs, substeps)
    k = process.kernel(middle.flatten().to(device))
    precision = k.linv.transpose(1, 2) @ k.linv
    dcov = k.drift @ k.cov + k.cov @ k.drift.transpose(1, 2) + k.ggt
    rate = k.linv @ (k.drift + 0.5 * k.ggt @ precision) @ k.chol - _lower_half(k.linv @ dcov @ k.linv.transpose(1, 2))
    dr = (r[:, 1:] - r[:, :-1]).flatten().to(rate.device)[:, None, None]
    both = expm(torch.cat([rate * dr, rate * dr / 2]))
    steps, halves = both[: len(dr)].view(count, substeps, k_dim, k_dim), both[len(dr):].view(count, substeps, k_dim, k_dim)
    ends = process.kernel(torch.tensor([v for pair in pairs for v in (pair[1], pair[0])], dtype=torch.float64,
                                       device=device))
    wanted = [j for j in range(count) if moments[j]]
    if wanted:
        a0 = _drift(process)
        schedule = process.schedule
        tau_t = torch.tensor([schedule.integral(pairs[j][0]) for j in wanted], dtype=torch.float64)[:, None]
        drift_flows = expm(((schedule.integral(middle[wanted]) - tau_t).flatten().to(a0.device))[:, None, None] * a0)
        drift_flows = drift_flows.view(len(wanted), substeps, k_dim, k_dim)
        xi = 0.5 * torch.log((k.linv @ k.phi[:, :, :1]).pow(2).sum((1, 2))).view(count, substeps)
        xi_t = 0.5 * process.log_snr(torch.tensor([pairs[j][0] for j in wanted], dtype=torch.float64, device=device))
    out: list[tuple[Tensor, Tensor | None]] = []
    linv = k.linv.view(count, substeps, k_dim, k_dim)
    for j in range(count):
        omega = torch.eye(k_dim, dtype=torch.float64, device=rate.device)
        middles = []
        for step, half in zip(steps[j], halves[j]):
            middles.append(half @ omega)  # Ω(r_mid, t)
            omega = step @ omega
        psi = ends.chol[2 * j] @ omega @ ends.linv[2 * j + 1]
        if not moments[j]:
            out.append((psi, None))
            continue
        w = wanted.index(j)
        # Ψ(r_mid, t)⁻¹ = (L_mid Ω_mid L_t⁻¹)⁻¹ = L_t Ω_midᵀ L_mid⁻¹ (Ω a rotation: W is skew-symmetric)
        back_inverse = ends.chol[2 * j + 1] @ torch.stack(middles).transpose(1, 2) @ linv[j]
        ggt = k.ggt.view(count, substeps, k_dim, k_dim)[j]
        prec = precision.view(count, substeps, k_dim, k_dim)[j]
        integrand = psi @ back_inverse @ (0.5 * ggt @ prec) @ drift_flows[w]
        weight = (xi[j] - xi_t[w])[:, None, None] * dr.view(count, substeps, 1, 1)[j]
        out.append((psi, (integrand * weight).sum(0)))
    return out


def transport(process: Any, t: float, s: float, substeps: int = SUBSTEPS,
              moment: bool = False) -> tuple[Tensor, Tensor | None]:
    """(Ψ(s, t), J) for one step (`transports`)."""
    return transports(process, [(t, s)], substeps, [moment])[0]


def score_integrals(process: Any, a0: Tensor, pairs: list[tuple[float, float]], nodes: int = SUBSTEPS) -> Tensor:
    """C = ∫_s^t Φ(s, r) G(r) L_r⁻ᵀ dr (J, K, K) for every step (t, s) of `pairs`, float64, by Gauss–Legendre in
    w = log B(r), dr = B(r)/β(r) dw, where the integrand (∝ τ^{−1/2} near t_min) is smooth; one batch for all steps."""
    schedule = process.schedule
    if not pairs:
        return torch.zeros(0, *a0.shape, dtype=a0.dtype, device=a0.device)
    x, w = np.polynomial.legendre.leggauss(nodes)
    x, w = torch.from_numpy((x + 1) / 2), torch.from_numpy(w / 2)
    log_t = torch.tensor([math.log(schedule.integral(t)) for t, _ in pairs], dtype=torch.float64)[:, None]
    log_s = torch.tensor([math.log(schedule.integral(s)) for _, s in pairs], dtype=torch.float64)[:, None]
    span = log_t - log_s
    tau = torch.exp(log_s + x * span)  # (J, nodes)
    r = schedule.time_of(tau)
    kernel = process.kernel(r.flatten().to(process.device))
    flow = expm(((torch.exp(log_s) - tau).flatten().to(a0.device))[:, None, None] * a0)
    weight = (w * span * tau / schedule.beta(r)).flatten().to(a0.device)[:, None, None]
    terms = weight * flow @ kernel.ggt @ kernel.linv.transpose(1, 2)
    return terms.view(len(pairs), nodes, *a0.shape).sum(1)


def score_integral(process: Any, a0: Tensor, t: float, s: float, nodes: int = SUBSTEPS) -> Tensor:
    """C for one step (`score_integrals`)."""
    return score_integrals(process, a0, [(t, s)], nodes)[0]


def _flows(process: Any, a0: Tensor, pairs: list[tuple[float, float]]) -> Tensor:
    """Φ(s, t) = expm((B(s) − B(t))A₀) for every step (t, s) of `pairs` (J, K, K)."""
    schedule = process.schedule
    gaps = torch.tensor([schedule.integral(s) - schedule.integral(t) for t, s in pairs], dtype=torch.float64)
    return expm(gaps.to(a0.device)[:, None, None] * a0)


def _noise_factors(process: Any, a0: Tensor, pairs: list[tuple[float, float]]) -> Tensor:
    """P^½ for every step t → s of `pairs` (J, K, K): the exact noise covariance of the linear part, P = ∫ Φ G Φᵀ,
    the matrix-fraction covariance from a point of the drift −A₀ over B(t) − B(s); all steps in one batch, so the
    eigendecompositions read back once per call, not per step."""
    schedule = process.schedule
    gaps = [schedule.integral(t) - schedule.integral(s) for t, s in pairs]
    _, d = process.matrices()
    gamma = 2 * d.to(torch.float64)
    reach = max(gaps) * float(torch.linalg.matrix_norm(fraction_block(-a0, gamma), ord=2))
    tau = torch.tensor(gaps, dtype=torch.float64, device=a0.device)
    _, cov = matrix_fraction(-a0, gamma, tau, torch.zeros_like(a0), reach=reach)
    return symmetric_sqrt(cov)


def _start(process: Any, sampler: Callable[..., Any], name: str, net: Net, shape: tuple[int, ...], steps: int | None,
           generator: Generator, grid: Tensor | str | None, x_init: Tensor | None, cond: dict[str, Any] | None,
           rho: float | None, t_end: float | None) -> tuple[Any, Tensor, Tensor, dict[str, Tensor], list[float], Tensor]:
    """`setup` with the grid ending at t_min by default, then also the grid's times read as max(t, t_min) and A₀."""
    require_fit(process, name)
    t_end = process.t_min if t_end is None else t_end
    counted, u, grid_times, cond = setup(process, sampler, name, net, shape, steps, generator, grid, x_init, cond,
                                         rho, t_end)
    times = [max(v, process.t_min) for v in grid_times.tolist()]  # one copy of the grid, not a read per step
    return counted, u, grid_times, cond, times, _drift(process)


@with_defaults(steps=40, grid="logsnr")
@torch.no_grad()
def exp_ode(
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
    order: int = 2,
) -> SampleResult:
    """Exponential integrator on the probability-flow ODE (module docstring), written with the signal part
    m = u − L ε̂ of the state: u_s = Ψ u_t + (Φ − Ψ) m_t (order 1, exact for point data), and for order 2 also
    − J δ, δ = (m_t − Φ(t, t′) m_{t′})/(ξ_t − ξ_{t′}) from the previous step t′ (the signal extrapolated linearly
    in half log-SNR ξ, like DPM-Solver++(2M)); one NFE per step."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2; got {order!r}")
    counted, u, grid_times, cond, times, a0 = _start(process, exp_ode, "exp_ode", net, shape, steps, generator, grid,
                                                     x_init, cond, rho, t_end)
    batch = u.shape[0]
    moving = [i for i in range(len(times) - 1) if times[i + 1] < times[i]]
    pairs = [(times[i], times[i + 1]) for i in moving]
    # every step's K×K coefficients before the first network call: they follow from the grid alone
    flows = dict(zip(moving, _flows(process, a0, pairs)))
    coefficients = dict(zip(moving, transports(process, pairs, moments=[order == 2 and j > 0
                                                                        for j in range(len(pairs))])))
    xis = dict(zip(moving, 0.5 * process.log_snr(torch.tensor([t for t, _ in pairs] or [1.0], dtype=torch.float64,
                                                               device=process.device))))
    denoised, previous = None, None  # previous: (m_{t′} transported to t, ξ_{t′})
    for i in steps_of(len(times) - 1, progress, "exp_ode"):
        if i in coefficients:
            prediction = process.predict(counted, u, grid_times[i].expand(batch), cond)
            kernel, eps = prediction.context
            denoised, signal = prediction.denoised, u - kron_apply(kernel.chol, eps)
            (psi, moment), flow, xi = coefficients[i], flows[i], xis[i]
            u = kron_apply(psi, u) + kron_apply(flow - psi, signal)
            if moment is not None and previous is not None:
                u = u - kron_apply(moment, (signal - previous[0]) / (xi - previous[1]))
            previous = (kron_apply(flow, signal), xi)
        report(callback, i, grid_times[i + 1], u, denoised)
    return finish(process, counted, u, grid_times[-1], denoise, cond)


@with_defaults(steps=100, grid="uniform", rho=2.0)
@torch.no_grad()
def exp_sde(
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
    """Exponential integrator on the reverse SDE: u_s = Φ u_t − C ε̂ + N(0, ∫Φ G Φᵀ) (module docstring); one NFE
    per step."""
    counted, u, grid_times, cond, times, a0 = _start(process, exp_sde, "exp_sde", net, shape, steps, generator, grid,
                                                     x_init, cond, rho, t_end)
    batch = u.shape[0]
    moving = [i for i in range(len(times) - 1) if times[i + 1] < times[i]]
    pairs = [(times[i], times[i + 1]) for i in moving]
    # every step's K×K coefficients before the first network call: they follow from the grid alone
    flows, scores = dict(zip(moving, _flows(process, a0, pairs))), dict(zip(moving, score_integrals(process, a0, pairs)))
    roots = dict(zip(moving, _noise_factors(process, a0, pairs))) if pairs else {}
    denoised = None
    for i in steps_of(len(times) - 1, progress, "exp_sde"):
        if i in roots:
            prediction = process.predict(counted, u, grid_times[i].expand(batch), cond)
            kernel, eps = prediction.context
            denoised = prediction.denoised
            noise = gaussian_noise(tuple(u.shape), generator, u.device, u.dtype)
            u = kron_apply(flows[i], u) - kron_apply(scores[i], eps) + kron_apply(roots[i], noise)
        report(callback, i, grid_times[i + 1], u, denoised)
    return finish(process, counted, u, grid_times[-1], denoise, cond)


SAMPLERS: dict[str, Sampler] = {**{name: SDE_SAMPLERS[name] for name in ("euler_maruyama", "heun")},
                                "exp_ode": exp_ode, "exp_sde": exp_sde}
