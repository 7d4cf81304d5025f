"""K×K maths of a linear diffusion with a scalar time change, and its per-pixel (Kronecker) action.

A drift A(t) = β(t)A₀ and diffusion g gᵀ(t) = β(t)Γ₀ depend on t only through β, so with the
intrinsic time τ = B(t) = ∫₀ᵗ β the SDE du = A u dt + g dW is time-homogeneous in τ and

    Φ_t = expm(τ A₀),   Σ_t = Φ Σ₀ Φᵀ + ∫₀^τ e^{(τ−s)A₀} Γ₀ e^{(τ−s)A₀ᵀ} ds,

the second computed by the matrix-fraction decomposition (with doubling for large τ). A state of d pixels with K
variables each is stored variable-major, (B, K·C, H, W) with d = C·H·W: the per-pixel K×K
matrix M acts on it as M ⊗ I_d, never as a dense dK×dK matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LinearBeta:
    """β(t) = β₀ + t(β₁ − β₀) and B(t) = ∫₀ᵗ β = β₀t + ½(β₁ − β₀)t²."""

    beta_min: float
    beta_max: float

    def __post_init__(self) -> None:
        if not 0 < self.beta_min <= self.beta_max:
            raise ValueError(f"need 0 < beta_min ≤ beta_max; got beta_min={self.beta_min}, beta_max={self.beta_max}")

    def beta(self, t: Tensor) -> Tensor:
        """β(t)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = ∫₀ᵗ β(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def time_of(self, tau: Tensor) -> Tensor:
        """t = B⁻¹(τ): the root t ≥ 0 of β₀t + ½(β₁ − β₀)t² = τ, written as 2τ/(β₀ + √(β₀² + 2(β₁ − β₀)τ))."""
        return 2 * tau / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * (self.beta_max - self.beta_min) * tau))


def drift_matrix(q: Tensor, d: Tensor, stationary_var: Tensor) -> Tensor:
    """A₀ = −(Q + D) Σ_∞⁻¹ for a diagonal stationary covariance Σ_∞ = diag(stationary_var)."""
    return -(q + d) / stationary_var


def matrix_fraction(
    a: Tensor, gamma: Tensor, tau: Tensor, sigma0: Tensor, max_norm: float = 1.0
) -> tuple[Tensor, Tensor]:
    """(Φ, Σ) at intrinsic times τ (N,) for du = A u dτ + √Γ dW from a law with covariance Σ₀.

    Matrix fraction: expm(h [[A, Γ], [0, −Aᵀ]]) = [[Φ_h, E], [0, Φ_h⁻ᵀ]] solves [C; H]′ = [[A, Γ],
    [0, −Aᵀ]] [C; H] with C(0) = 0, H(0) = I, so the covariance from a point is P_h = C H⁻¹ = E Φ_hᵀ.
    E holds e^{−hAᵀ}, which grows like Φ decays, so P is formed at h = τ/2ˢ (‖h·block‖₁ ≤ max_norm)
    and doubled s times by the semigroup Φ_{2h} = Φ_h², P_{2h} = Φ_h P_h Φ_hᵀ + P_h (sums of
    positive semidefinite terms: no cancellation at any τ). Then Σ = Φ Σ₀ Φᵀ + P. Shapes: a,
    gamma, sigma0 (K, K); returns (N, K, K) each, symmetrised.
    """
    k = a.shape[-1]
    block = torch.cat([torch.cat([a, gamma], 1), torch.cat([torch.zeros_like(a), -a.T], 1)], 0)
    reach = float(tau.abs().max().detach()) * float(torch.linalg.matrix_norm(block.detach(), ord=1))
    doublings = max(0, math.ceil(math.log2(reach / max_norm))) if reach > 0 else 0
    expm = torch.linalg.matrix_exp((tau / 2**doublings)[:, None, None] * block)
    phi = expm[:, :k, :k]
    cov = expm[:, :k, k:] @ phi.transpose(1, 2)
    for _ in range(doublings):
        cov = phi @ cov @ phi.transpose(1, 2) + cov
        phi = phi @ phi
    cov = phi @ sigma0 @ phi.transpose(1, 2) + cov
    return phi, 0.5 * (cov + cov.transpose(1, 2))


def kron_apply(m: Tensor, u: Tensor) -> Tensor:
    """(M ⊗ I_d) u per sample: m (B, K, K) or (K, K), u (B, K·C, H, W) stored variable-major."""
    k = m.shape[-1]
    if u.shape[1] % k:
        raise ValueError(f"a state with {u.shape[1]} channels does not hold {k} variables per pixel")
    blocks = u.reshape(u.shape[0], k, -1)
    out = torch.einsum("bkj,bjd->bkd", m.expand(u.shape[0], k, k).to(u.dtype), blocks)
    return out.reshape(u.shape)


def kron_quadratic(m: Tensor, e: Tensor) -> Tensor:
    """eᵀ (M ⊗ I_d) e per sample: Σ_pixels e_iᵀ M e_i, m (B, K, K), e (B, K·C, H, W) → (B,)."""
    k = m.shape[-1]
    blocks = e.reshape(e.shape[0], k, -1)
    return torch.einsum("bkd,bkj,bjd->b", blocks, m.to(e.dtype), blocks)


def symmetric_sqrt(m: Tensor) -> Tensor:
    """M^½ of symmetric positive semidefinite matrices (…, K, K), negative round-off clipped to 0."""
    values, vectors = torch.linalg.eigh(m)
    return (vectors * values.clamp_min(0).sqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)
