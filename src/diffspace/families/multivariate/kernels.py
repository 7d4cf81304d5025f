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


#: Degree of the Taylor polynomial of `expm_unit`: for ‖X‖₂ ≤ 1 the remainder Σ_{k>18} ‖X‖^k/k! is below 1.7·10⁻¹⁷,
#: under float64 round-off.
TAYLOR_DEGREE = 18
_TAYLOR = torch.tensor([1 / math.factorial(k) for k in range(TAYLOR_DEGREE + 1)] + [0.0], dtype=torch.float64)


def expm_unit(x: Tensor) -> Tensor:
    """e^X = Σ_{k ≤ 18} X^k/k! for matrices X (N, n, n) of spectral norm ≤ 1, exact to float64 round-off.

    Paterson–Stockmeyer: with X², X³, X⁴, e^X = B₀ + X⁴(B₁ + X⁴(B₂ + X⁴(B₃ + X⁴B₄))), B_j = Σᵢ c_{4j+i} Xⁱ (one
    product of the coefficient matrix with the stacked powers): seven batched products and no norm-dependent branch
    (torch.linalg.matrix_exp chooses its degree from the norm, which on CUDA reads the norms back to the host, and
    its backward is an expm of a 2n×2n matrix), so it runs and differentiates as a short fixed sequence of
    operations. The caller guarantees the norm (`matrix_fraction`).
    """
    n = x.shape[-1]
    x2 = torch.bmm(x, x)
    powers = torch.stack([torch.eye(n, dtype=x.dtype, device=x.device).expand_as(x), x, x2, torch.bmm(x2, x)])
    groups = torch.mm(_TAYLOR.to(x.device, x.dtype).view(5, 4), powers.view(4, -1)).view(5, *x.shape)
    x4 = torch.bmm(x2, x2)
    out = groups[4]
    for j in (3, 2, 1, 0):
        out = torch.baddbmm(groups[j], x4, out)
    return out


def doublings_for(reach: float, max_norm: float = 1.0) -> int:
    """The number s of doublings with reach/2ˢ ≤ max_norm (0 when reach ≤ max_norm): see `matrix_fraction`."""
    return max(0, math.ceil(math.log2(reach / max_norm))) if reach > max_norm else 0


def fraction_block(a: Tensor, gamma: Tensor) -> Tensor:
    """The matrix-fraction generator [[A, Γ], [0, −Aᵀ]] (2K × 2K) of du = A u dτ + √Γ dW."""
    return torch.cat([torch.cat([a, gamma], 1), torch.cat([torch.zeros_like(a), -a.T], 1)], 0)


def matrix_fraction(
    a: Tensor, gamma: Tensor, tau: Tensor, sigma0: Tensor, max_norm: float = 1.0, reach: float | None = None
) -> tuple[Tensor, Tensor]:
    """(Φ, Σ) at intrinsic times τ (N,) for du = A u dτ + √Γ dW from a law with covariance Σ₀.

    Matrix fraction: expm(h [[A, Γ], [0, −Aᵀ]]) = [[Φ_h, E], [0, Φ_h⁻ᵀ]] solves [C; H]′ = [[A, Γ],
    [0, −Aᵀ]] [C; H] with C(0) = 0, H(0) = I, so the covariance from a point is P_h = C H⁻¹ = E Φ_hᵀ.
    E holds e^{−hAᵀ}, which grows like Φ decays, so P is formed at h = τ/2ˢ (‖h·block‖₂ ≤ max_norm ≤ 1, where
    `expm_unit` is exact) and doubled s times by the semigroup Φ_{2h} = Φ_h², P_{2h} = Φ_h P_h Φ_hᵀ + P_h (sums of
    positive semidefinite terms: no cancellation at any τ). Then Σ = Φ Σ₀ Φᵀ + P. `reach` is an upper bound of
    max|τ|·‖block‖₂ that fixes s (then nothing is read back from the device, and the result at one τ does not
    depend on the other times of the batch); None computes it from τ and the block. Shapes: a, gamma, sigma0
    (K, K); returns (N, K, K) each, symmetrised.
    """
    if not 0 < max_norm <= 1:
        raise ValueError(f"max_norm must lie in (0, 1] (the Taylor expm is exact there); got {max_norm}")
    block = fraction_block(a, gamma)
    if reach is None:
        reach = float(tau.abs().max().detach()) * float(torch.linalg.matrix_norm(block.detach(), ord=2))
    return fraction_kernel(block, tau, sigma0, doublings_for(reach, max_norm))


def fraction_kernel(block: Tensor, tau: Tensor, sigma0: Tensor, doublings: int) -> tuple[Tensor, Tensor]:
    """`matrix_fraction` from its block (2K × 2K) and the number of doublings s (which must bring every
    ‖τ/2ˢ·block‖₂ to at most 1)."""
    k = block.shape[-1] // 2
    expm = expm_unit((tau * 2.0**-doublings)[:, None, None] * block)
    phi = expm[:, :k, :k]
    phi_t = phi.transpose(1, 2)
    cov = torch.bmm(expm[:, :k, k:], phi_t)
    for _ in range(doublings):
        cov = torch.baddbmm(cov, torch.bmm(phi, cov), phi_t)
        phi = torch.bmm(phi, phi)
        phi_t = phi.transpose(1, 2)
    cov = torch.baddbmm(cov, torch.bmm(phi, sigma0.expand_as(phi)), phi_t)
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
