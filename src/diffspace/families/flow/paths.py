"""Affine Gaussian probability paths z_τ = a(τ) z₀ + s(τ) z₁ from data (τ = 0) to the prior (τ = 1), and the
per-component path times τ_i(t) of a flow: one τ = t for every component, or GUD soft conditioning.

A path gives a, s and their τ-derivatives a′, s′ (a `PathPoint`); its log-SNR γ = log(s²/a²) runs from −∞ at
τ = 0 to +∞ at τ = 1, so it has a closed-form inverse τ(γ), used by the ELBO (`FlowMatching.nll_bound`):

    ot      a = 1 − τ,        s = τ            (conditional OT / rectified flow)   τ(γ) = sigmoid(γ/2)
    cosine  a = cos(πτ/2),    s = sin(πτ/2)    (variance preserving: a² + s² = 1)   τ(γ) = (2/π) atan(e^{γ/2})

Per-component times (`ComponentTimes`): with the soft schedule, component i runs its own path time

    τ_i(t) = clamp((γ_i(t) − γ_min)/(γ_max − γ_min), 0, 1),

the fraction of its active window that the Gaussian family's soft-conditioning schedule γ_i(t) = γ_b(t) + l_i/s
(same labels l, softness s and range [γ_min, γ_max]; `SoftConditioning` with clip) has covered. Every component
starts at the data (τ_i(0) = 0) and ends at the prior (τ_i(1) = 1); inside its window τ_i is linear in t with
speed τ_i′ = γ_b′/(γ_max − γ_min), outside it is frozen (τ_i′ = 0). As softness → ∞ every τ_i = t (the plain
flow); when a·|l_i − l_j| ≥ γ_max − γ_min (a = 1/s) the windows of i and j are disjoint: autoregressive
generation in the basis, in label order (lower label first).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from diffspace.families.gaussian.schedules import SoftConditioning


@dataclass
class PathPoint:
    """a(τ), s(τ), a′(τ), s′(τ) of a path at path times τ, broadcastable against (B, C, H, W)."""

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor

    @property
    def det(self) -> Tensor:
        """a s′ − s a′: the determinant of (z₀, z₁) ↦ (z_τ, dz_τ/dτ), never zero on these paths."""
        return self.alpha * self.d_sigma - self.sigma * self.d_alpha


class Path(ABC):
    """z_τ = a(τ) z₀ + s(τ) z₁; subclasses give a, s, a′, s′ and the log-SNR map γ ↔ τ."""

    name = ""

    @abstractmethod
    def __call__(self, tau: Tensor) -> PathPoint:
        """(a, s, a′, s′) at path times τ."""

    @abstractmethod
    def gamma(self, tau: Tensor) -> Tensor:
        """γ(τ) = log(s²/a²) (finite inside (0, 1))."""

    @abstractmethod
    def d_gamma(self, tau: Tensor) -> Tensor:
        """dγ/dτ (> 0)."""

    @abstractmethod
    def tau_of_gamma(self, gamma: Tensor) -> Tensor:
        """τ(γ), the inverse of `gamma`."""


class OTPath(Path):
    """a = 1 − τ, s = τ: the conditional optimal-transport (rectified-flow) path; dz/dτ = z₁ − z₀."""

    name = "ot"

    def __call__(self, tau: Tensor) -> PathPoint:
        """(1 − τ, τ, −1, 1)."""
        return PathPoint(1 - tau, tau, torch.full_like(tau, -1.0), torch.ones_like(tau))

    def gamma(self, tau: Tensor) -> Tensor:
        """γ = 2 log(τ/(1 − τ))."""
        return 2 * torch.logit(tau)

    def d_gamma(self, tau: Tensor) -> Tensor:
        """dγ/dτ = 2/(τ(1 − τ))."""
        return 2 / (tau * (1 - tau))

    def tau_of_gamma(self, gamma: Tensor) -> Tensor:
        """τ = sigmoid(γ/2)."""
        return torch.sigmoid(gamma / 2)


class CosinePath(Path):
    """a = cos(πτ/2), s = sin(πτ/2): the variance-preserving (VP, cosine) path, a² + s² = 1."""

    name = "cosine"

    def __call__(self, tau: Tensor) -> PathPoint:
        """(cos θ, sin θ, −(π/2) sin θ, (π/2) cos θ) with θ = πτ/2."""
        theta = 0.5 * math.pi * tau
        cos, sin = torch.cos(theta), torch.sin(theta)
        return PathPoint(cos, sin, -0.5 * math.pi * sin, 0.5 * math.pi * cos)

    def gamma(self, tau: Tensor) -> Tensor:
        """γ = 2 log tan(πτ/2)."""
        return 2 * torch.log(torch.tan(0.5 * math.pi * tau))

    def d_gamma(self, tau: Tensor) -> Tensor:
        """dγ/dτ = 2π / sin(πτ)."""
        return 2 * math.pi / torch.sin(math.pi * tau)

    def tau_of_gamma(self, gamma: Tensor) -> Tensor:
        """τ = (2/π) atan(e^{γ/2})."""
        return (2 / math.pi) * torch.atan(torch.exp(gamma / 2))


PATHS: dict[str, type[Path]] = {"ot": OTPath, "cosine": CosinePath}


@dataclass
class ComponentTimes:
    """Path times τ (per component or one per sample), their time derivatives τ′ and the path there."""

    tau: Tensor
    d_tau: Tensor
    point: PathPoint

    @property
    def active(self) -> Tensor:
        """1 where a component moves (τ′ > 0), 0 where it is frozen outside its window."""
        return (self.d_tau > 0).to(self.tau.dtype)


def component_times(path: Path, t: Tensor, schedule: SoftConditioning | None,
                    softness: Tensor | None = None) -> ComponentTimes:
    """τ(t) and τ′(t) for times t (B,): τ = t for every component without a schedule, else the soft-conditioning
    window fraction τ_i = clamp((γ_i(t) − γ_min)/(γ_max − γ_min), 0, 1) of a clipped `SoftConditioning` (module
    doc; an optional per-sample softness (B,))."""
    if t.dim() != 1:
        raise ValueError(f"flow times are shaped (B,); got shape {tuple(t.shape)}")
    if schedule is None:
        tau = t.view(-1, 1, 1, 1)
        d_tau = torch.ones_like(tau)
    else:
        gamma, d_gamma = schedule.gamma_and_derivative(t, softness)
        width = schedule.gamma_max - schedule.gamma_min
        tau, d_tau = ((gamma - schedule.gamma_min) / width).clamp(0.0, 1.0), d_gamma / width
    return ComponentTimes(tau, d_tau, path(tau))
