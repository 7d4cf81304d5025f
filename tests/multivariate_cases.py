"""Gaussian data for the multivariate diffusion: the exact ε-predictor and exact entropies (float64).

For y₀ ~ N(μ, S) (d pixels) and the hybrid kernel u_t | y₀ ~ N((φ ⊗ I)y₀, Σ_t ⊗ I), the marginal is

    u_t ~ N(m_t, C_t),   m_t = (φ ⊗ I)μ,   C_t = (φ ⊗ I) S (φ ⊗ I)ᵀ + Σ_t ⊗ I,

so the exact score is −C_t⁻¹(u − m_t) and the exact ε-prediction ε̂ = −(L_tᵀ ⊗ I) score.
Dense dK×dK matrices are fine here: d is tiny.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffspace.families.multivariate import MultivariateConfig, MultivariateDiffusion
from diffspace.process import build_process

F64 = torch.float64


def gaussian_data(d: int = 2) -> tuple[Tensor, Tensor]:
    """A fixed mean (1, 1, d) and a correlated covariance with small variances (d, d)."""
    mean = torch.linspace(-0.3, 0.4, d, dtype=F64).view(1, 1, d)
    a = torch.eye(d, dtype=F64) + 0.5 * torch.ones(d, d, dtype=F64)
    return mean, 0.02 * a @ a.T / d + 0.01 * torch.eye(d, dtype=F64)


def make_process(diffusion: str, t_min: float = 1e-3, d: int = 2, seed: int = 0, **knobs) -> MultivariateDiffusion:
    """A multivariate process on (1, 1, d) data in model space (no transform), learned ones seeded."""
    torch.manual_seed(seed)
    cfg = MultivariateConfig(diffusion=diffusion, t_min=t_min, transform="none", levels=0, **knobs)
    return build_process(cfg, facts=(1, 1, d))


def _dense(process: MultivariateDiffusion, t: Tensor, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(m_t (N, dK), C_t (N, dK, dK), L_t (N, K, K)) of the marginal at times t (N,)."""
    kernel = process.kernel(t)
    d = cov.shape[0]
    eye = torch.eye(d, dtype=F64)
    lift = torch.stack([torch.kron(phi[:, :1], eye) for phi in kernel.phi.detach()])  # (N, dK, d)
    m = lift @ mean.flatten()
    c = lift @ cov @ lift.transpose(1, 2) + torch.stack([torch.kron(s, eye) for s in kernel.cov.detach()])
    return m, c, kernel.chol.detach()


class ExactEps(nn.Module):
    """ε̂(u, t) = (L_tᵀ ⊗ I) C_t⁻¹ (u − m_t): the exact ε-prediction for y₀ ~ N(mean, cov)."""

    def __init__(self, process: MultivariateDiffusion, mean: Tensor, cov: Tensor) -> None:
        super().__init__()
        self.process, self.mean, self.cov = process, mean.to(F64), cov.to(F64)

    def forward(self, u: Tensor, t: Tensor) -> Tensor:
        times, index = torch.unique(t.to(F64), return_inverse=True)
        m, c, chol = _dense(self.process, times, self.mean, self.cov)
        flat = u.to(F64).flatten(1)
        d = self.cov.shape[0]
        eye = torch.eye(d, dtype=F64)
        lt = torch.stack([torch.kron(l.T, eye) for l in chol])
        centred = (flat - m[index]).unsqueeze(-1)
        eps = lt[index] @ torch.linalg.solve(c[index], centred)
        return eps.squeeze(-1).view_as(u).to(u.dtype)


def gaussian_entropy(cov: Tensor) -> Tensor:
    """H(N(·, C)) = ½ log det(2πe C)."""
    return 0.5 * torch.logdet(2 * math.pi * math.e * cov)


def expected_nll(process: MultivariateDiffusion, mean: Tensor, cov: Tensor, t_min: float) -> dict[str, float]:
    """Exact E_y₀[−ELBO] with the exact score, and its parts:

    E[−ELBO] = H(q_{t_min}) − H(q_1) + CE(q_1, π) − d R(t_min)
             = H(p) + KL(q_1 ‖ π) + truncation,   truncation = H(q_{t_min}) − H(p) − d R(t_min),
    R = ½(K−1) log 2πe + ½ log det Σ + ½ log φᵀΣ⁻¹φ (decoder + kernel entropy per pixel).
    """
    d = cov.shape[0]
    m, c, _ = _dense(process, torch.tensor([t_min, 1.0], dtype=F64), mean, cov)
    var = torch.kron(process.stationary_var, torch.ones(d, dtype=F64))
    cross = 0.5 * ((torch.diagonal(c[1]) / var).sum() + (m[1] ** 2 / var).sum()
                   + len(var) * math.log(2 * math.pi) + var.log().sum())
    kernel = process.kernel(torch.tensor([t_min], dtype=F64))
    whitened = kernel.linv[0] @ kernel.phi[0, :, 0]
    start = (0.5 * (process.num_vars - 1) * math.log(2 * math.pi * math.e)
             + torch.log(torch.diagonal(kernel.chol[0])).sum() + torch.log(whitened.norm()))
    h_data, h_start, h_end = gaussian_entropy(cov), gaussian_entropy(c[0]), gaussian_entropy(c[1])
    out = {"data_entropy": h_data, "prior_kl": cross - h_end, "truncation": h_start - h_data - d * start}
    out["nll"] = out["data_entropy"] + out["prior_kl"] + out["truncation"]
    return {k: float(v.detach()) for k, v in out.items()}
