"""The exact velocity for Gaussian data: a network-shaped oracle for testing samplers and likelihoods.

For data x ~ N(μ, S) the clean state is z₀ ~ N(μ_z, S_z) (μ_z = W(μ − m), S_z = W S Wᵀ, W = diag(λ)^(−½) U, as
the Gaussian family's oracle). With A = diag(a(τ_i)), Σ = diag(s(τ_i)), the state z_t = A z₀ + Σ z₁ is
N(A μ_z, K), K = A S_z A + Σ², and the posterior means are linear in z_t:

    E[z₁ | z_t] = Σ K⁻¹ (z_t − A μ_z),   E[z₀ | z_t] = μ_z + S_z A K⁻¹ (z_t − A μ_z),

so the optimal velocity is E[w | z_t] = A′ E[z₀ | z_t] + Σ′ E[z₁ | z_t] (and v = τ′ ⊙ that). The oracle is called
like a network, net(x, t, **cond), and answers the process's prediction in its network-output layout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffspace.families.flow.process import FlowMatching
from diffspace.families.gaussian.oracle import GaussianOracle


class FlowOracle(GaussianOracle):
    """Exact E[w | z_t], E[z₀ | z_t] or E[z₁ | z_t] (the process's `prediction`) for x ~ N(mean, covariance)
    (float64 inside); `sample` and `log_density` are the data's, as the Gaussian oracle's."""

    process: FlowMatching

    def __init__(self, process: FlowMatching, mean: Tensor, covariance: Tensor) -> None:
        super().__init__(process, mean, covariance)  # type: ignore[arg-type]
        self._eigen_cache: tuple[Tensor, Tensor] | None = None

    def _path(self, t: Tensor, batch: int, cond: dict[str, Any]) -> tuple[Tensor, ...]:
        """a, s, a′, s′ of every sample's components at times t, each (B, D) in float64."""
        _, softness = self.process.conditioning(cond, batch, t.device)
        t = t.to(torch.float64).expand(batch)
        point = self.process.times(t, None if softness is None else softness.to(torch.float64)).point
        return tuple(p.to(torch.float64).expand(batch, *self.shape).flatten(1)
                     for p in (point.alpha, point.sigma, point.d_alpha, point.d_sigma))

    def posterior_means(self, z: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
        """(E[z₀ | z_t], E[z₁ | z_t]) for states z (B, C, H, W) at times t (B,), float64."""
        batch = z.shape[0]
        alpha, sigma, _, _ = self._path(t, batch, dict(cond or {}))
        centred = z.to(torch.float64).flatten(1) - alpha * self.state_mean
        if bool((alpha == alpha[:1]).all()) and bool((sigma == sigma[:1]).all()):  # one time: a single solve
            solved = torch.linalg.solve(self._marginal_covariance(alpha[0], sigma[0]), centred.T).T
        elif bool((alpha == alpha[:, :1]).all()) and bool((sigma == sigma[:, :1]).all()):  # one path time per sample
            values, vectors = self._eigen()  # K_b = a_b² S_z + s_b² I = Q diag(a_b² Λ + s_b²) Qᵀ
            solved = ((centred @ vectors) / (alpha[:, :1] ** 2 * values + sigma[:, :1] ** 2)) @ vectors.T
        else:  # a time per sample: batched solves, in chunks of at most ~2²⁴ matrix entries
            chunk = max(1, 2**24 // centred.shape[1] ** 2)
            solved = torch.cat([self._solve_each(a, s, c) for a, s, c in
                                zip(alpha.split(chunk), sigma.split(chunk), centred.split(chunk))])
        z0 = self.state_mean + (alpha * solved) @ self.state_covariance.T
        z1 = sigma * solved
        return z0.view(batch, *self.shape), z1.view(batch, *self.shape)

    def _eigen(self) -> tuple[Tensor, Tensor]:
        """(Λ, Q) with S_z = Q diag(Λ) Qᵀ, computed once (again if the module moved to another dtype or device)."""
        cached, covariance = self._eigen_cache, self.state_covariance
        if cached is None or (cached[1].dtype, cached[1].device) != (covariance.dtype, covariance.device):
            self._eigen_cache = cached = torch.linalg.eigh(covariance)
        return cached

    def _solve_each(self, alpha: Tensor, sigma: Tensor, centred: Tensor) -> Tensor:
        """K_b⁻¹ c_b for every row b, K_b = A_b S_z A_b + Σ_b² (rows of α, σ, c shaped (B, D))."""
        covariance = alpha[:, :, None] * self.state_covariance * alpha[:, None, :] + torch.diag_embed(sigma**2)
        return torch.linalg.solve(covariance, centred[..., None])[..., 0]

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """The process's predicted quantity in its network-output layout, for network input x at times t (B,)."""
        z = self.process.state_from_network_input(x.to(torch.float64))
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0])
        z0, z1 = self.posterior_means(z, t, cond)
        if self.process.prediction == "velocity":
            _, _, d_alpha, d_sigma = self._path(t, x.shape[0], dict(cond))
            quantity = d_alpha.view_as(z0) * z0 + d_sigma.view_as(z1) * z1
        else:
            quantity = z0 if self.process.prediction == "x0" else z1
        return self.process.network_output_from_quantity(quantity).to(x.dtype)

    def state_log_density(self, z: Tensor, t: float) -> Tensor:
        """Exact log p_t(z) of the state z_t ~ N(A μ_z, K) at one time t, in nats."""
        alpha, sigma, _, _ = self._path(torch.tensor([t], dtype=torch.float64), 1, {})
        dist = torch.distributions.MultivariateNormal(
            alpha[0] * self.state_mean, covariance_matrix=self._marginal_covariance(alpha[0], sigma[0]))
        return dist.log_prob(z.to(torch.float64).flatten(1))

    def data_bits_per_dim(self, x: Tensor) -> Tensor:
        """Exact −log₂ N(x; mean, covariance) / D per sample."""
        return -self.log_density(x) / (x[0].numel() * math.log(2.0))
