"""The (Q, D) pair of a multivariate diffusion: the paper's fixed diffusions, or learned ones.

Q is skew-symmetric and D positive semidefinite; with a stationary covariance Σ_∞ the drift
A₀ = −(Q + D)Σ_∞⁻¹ and g gᵀ = 2βD leave N(0, Σ_∞) invariant: A₀Σ_∞ + Σ_∞A₀ᵀ + 2D = −Q − Qᵀ = 0.
Variables are ordered (x, v¹, …); Σ_∞ = diag(x_var, M, …, M).

A learned pair uses Q = G − Gᵀ and D = BBᵀ + εI: skew and positive definite by construction
for every value of the parameters. (The reference implementation applies an elementwise
softplus to d dᵀ, which is not positive semidefinite in general: for d = (2, 0, 3) the matrix
softplus(d dᵀ) has the eigenvalue −0.045, so it is not reproduced here.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: Number of variables per pixel (x and its auxiliaries) of each named diffusion.
NUM_VARS: dict[str, int] = {"vp": 1, "cld": 2, "alda": 3, "malda": 3, "learned2": 2, "learned3": 3}


def fixed_matrices(name: str, x_var: float, aux_var: float) -> tuple[Tensor, Tensor]:
    """(Q, D) in float64 of the paper's fixed diffusions.

    vp:    Q = 0, D = ½ x_var                         (dx = −½β x dt + √(β x_var) dW: the VP SDE of Song et al.,
                                                       whose MDM form has D = ½; mean e^{−½B(t)})
    cld:   Q = [[0, −1], [1, 0]], D = diag(0, Γ), Γ = 2√(M/x_var)   (critical damping)
    alda:  Q = [[0, −M, 0], [M, 0, −1], [0, 1, 0]], D = diag(0, 0, M)   (L = 1/M, γ = ψ = 1)
    malda: Q = [[0, −1, −1], [1, 0, −1], [1, 1, 0]], D = diag(0, Γ, Γ), Γ = 2√(M/x_var)
    """
    f64 = torch.float64
    gamma = 2.0 * math.sqrt(aux_var / x_var)
    if name == "vp":
        return torch.zeros(1, 1, dtype=f64), torch.full((1, 1), 0.5 * x_var, dtype=f64)
    if name == "cld":
        return torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=f64), torch.diag(torch.tensor([0.0, gamma], dtype=f64))
    if name == "alda":
        q = torch.tensor([[0.0, -aux_var, 0.0], [aux_var, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=f64)
        return q, torch.diag(torch.tensor([0.0, 0.0, aux_var], dtype=f64))
    if name == "malda":
        q = torch.tensor([[0.0, -1.0, -1.0], [1.0, 0.0, -1.0], [1.0, 1.0, 0.0]], dtype=f64)
        return q, torch.diag(torch.tensor([0.0, gamma, gamma], dtype=f64))
    raise ValueError(f"no fixed diffusion named {name!r}; choose one of ['vp', 'cld', 'alda', 'malda']")


class FixedMatrices(nn.Module):
    """A fixed (Q, D) pair held as buffers (they move with the module, they are not trained)."""

    def __init__(self, q: Tensor, d: Tensor) -> None:
        super().__init__()
        _check_pair(q, d)
        self.register_buffer("q", q.to(torch.float64))
        self.register_buffer("d", d.to(torch.float64))

    def forward(self) -> tuple[Tensor, Tensor]:
        """(Q, D) in float64."""
        return self.q, self.d


class LearnedMatrices(nn.Module):
    """Learned (Q, D) = (G − Gᵀ, BBᵀ + εI) with G, B ∈ ℝ^{K×K} trainable parameters."""

    def __init__(self, num_vars: int, epsilon: float, init_scale: float) -> None:
        super().__init__()
        if num_vars < 1 or epsilon <= 0 or init_scale < 0:
            raise ValueError(
                f"need num_vars ≥ 1, epsilon > 0, init_scale ≥ 0; got {num_vars}, {epsilon}, {init_scale}")
        self.epsilon = epsilon
        self.g = nn.Parameter(init_scale * torch.randn(num_vars, num_vars))
        self.b = nn.Parameter(torch.eye(num_vars) + init_scale * torch.randn(num_vars, num_vars))

    def forward(self) -> tuple[Tensor, Tensor]:
        """(G − Gᵀ, BBᵀ + εI) in float64, differentiable in G and B."""
        g, b = self.g.to(torch.float64), self.b.to(torch.float64)
        eye = torch.eye(b.shape[0], dtype=torch.float64, device=b.device)
        return g - g.T, b @ b.T + self.epsilon * eye


def _check_pair(q: Tensor, d: Tensor) -> None:
    """ValueError unless Q is skew-symmetric and D symmetric positive semidefinite, both K×K."""
    if q.dim() != 2 or q.shape[0] != q.shape[1] or q.shape != d.shape:
        raise ValueError(f"Q and D must be square matrices of one size; got {tuple(q.shape)} and {tuple(d.shape)}")
    q64, d64 = q.to(torch.float64), d.to(torch.float64)
    if not torch.allclose(q64, -q64.T, atol=1e-12):
        raise ValueError("Q must be skew-symmetric (Q = −Qᵀ)")
    if not torch.allclose(d64, d64.T, atol=1e-12) or torch.linalg.eigvalsh(d64).min() < -1e-12:
        raise ValueError("D must be symmetric positive semidefinite")
