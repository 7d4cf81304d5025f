"""Likelihoods in bits/dim: the probability-flow ODE (exact or Hutchinson divergence) and dequantization.

Probability-flow ODE (continuous normalising flow) of any ContinuousProcess whose capabilities say
`ode_likelihood`: for dz/dt = v(z, t),

    log p₀(z₀) = log p₁(z₁) + ∫₀¹ ∇·v(z_t, t) dt,    p₁ = the process's prior density,

solved with torchdiffeq's adaptive dopri5. With the state z = φ(x) of the data (`likelihood_state`),
log p(x) = log p₀(φ(x)) + log |det ∂φ/∂x|, and bits/dim = −log p(x) / (D ln 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

from diffspace.noise import Generator, gaussian_noise, uniform_noise
from diffspace.process import ContinuousProcess

DIVERGENCES = ("exact", "hutchinson")


@dataclass
class LikelihoodResult:
    """Per-sample negative log-likelihood (nats and bits/dim) and network evaluations spent."""

    nll: Tensor
    bpd: Tensor
    nfe: int


def _divergence(velocity: Tensor, z: Tensor, probe: Tensor | None) -> Tensor:
    """∇·v per sample: exact (one backward pass per dimension) or Hutchinson εᵀ(∂v/∂z)ε."""
    if probe is not None:
        (vjp,) = torch.autograd.grad(velocity, z, probe, create_graph=False)
        return (vjp * probe).flatten(1).sum(1)
    flat_v = velocity.flatten(1)
    total = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    for i in range(flat_v.shape[1]):
        (grad,) = torch.autograd.grad(flat_v[:, i].sum(), z, retain_graph=True)
        total = total + grad.flatten(1)[:, i]
    return total


def ode_nll(
    process: ContinuousProcess,
    net: Callable[..., Tensor],
    x: Tensor,
    *,
    divergence: str = "exact",
    generator: Generator = None,
    cond: dict[str, Any] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> LikelihoodResult:
    """−log p(x) of the probability-flow ODE model, per sample, for data x (B, C, H, W)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES}")
    if not process.capabilities.ode_likelihood:
        raise ValueError(f"{type(process).__name__} has no exact probability-flow ODE likelihood; use its ELBO")
    z0, log_det = process.likelihood_state(x)
    batch, dim = z0.shape[0], x[0].numel()
    probe = gaussian_noise(tuple(z0.shape), generator, z0.device, z0.dtype) if divergence == "hutchinson" else None
    calls = 0

    def dynamics(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal calls
        calls += 1
        with torch.enable_grad():
            z = state[0].detach().requires_grad_(True)
            time = t.to(z.dtype).clamp(0.0, 1.0).expand(batch)  # dopri5 may probe just past t = 1
            velocity = process.pf_ode_velocity(z, time, process.predict(net, z, time, cond))
            div = _divergence(velocity, z, probe)
        return velocity.detach(), div.detach()

    times = torch.tensor([0.0, 1.0], dtype=z0.dtype, device=z0.device)
    start = (z0, torch.zeros(batch, dtype=z0.dtype, device=z0.device))
    z_path, div_path = odeint(dynamics, start, times, rtol=rtol, atol=atol, method="dopri5")
    z1, integral = z_path[-1], div_path[-1]
    nll = -(process.prior_log_density(z1) + integral + log_det)
    return LikelihoodResult(nll=nll, bpd=nll / (dim * math.log(2.0)), nfe=calls)


def dequantize(x: Tensor, levels: int, generator: Generator = None) -> Tensor:
    """Uniform dequantization of model-space values on L levels: x + u·2/(L−1), u ~ U[−½, ½).

    The data (spacing 2/(L−1) in [−1, 1]) become a continuous density whose log-likelihood
    lower-bounds the discrete one: log P(k) ≥ E_u log p(x + u) + D log(2/(L−1)).
    """
    u = uniform_noise(tuple(x.shape), generator, x.device, x.dtype) - 0.5
    return x + u * 2.0 / (levels - 1)


def discrete_bpd(continuous_nll: Tensor, dim: int, levels: int) -> Tensor:
    """Bits/dim of the discrete data from −log p of dequantized model-space data (nats, per sample).

    −log P(k) ≤ −log p(x) − D log(2/(L−1)); for L = 256 this is the usual "+8 bits" offset
    between densities on [0, 256) and on [−1, 1] up to log₂(255/2)·… (exactly −log₂(2/255) per dim).
    """
    return (continuous_nll - dim * math.log(2.0 / (levels - 1))) / (dim * math.log(2.0))
