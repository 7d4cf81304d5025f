"""The exact ε-predictor for Gaussian data: a network-shaped oracle for testing everything else.

For data x ~ N(μ, S) and a GaussianDiffusion with whitening z = W(x − m), W = diag(λ)^(−½) U,
the clean state is z₀ ~ N(μ_z, S_z) with μ_z = W(μ − m), S_z = W S Wᵀ. Per component
z_t = A z₀ + Σ ε with A = diag(α), Σ = diag(σ), hence z_t ~ N(A μ_z, A S_z A + Σ²) and

    E[ε | z_t] = Σ (A S_z A + Σ²)⁻¹ (z_t − A μ_z).

The oracle is called like a network, net(x, t), and answers in the network's layout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from diffspace.noise import gaussian_noise
from diffspace.families.gaussian.process import GaussianDiffusion
from diffspace.spaces import Basis, Shape


def basis_matrix(basis: Basis, shape: Shape, dtype: torch.dtype = torch.float64) -> Tensor:
    """The D×D matrix U with encode(x).flatten() = U x.flatten()."""
    dim = math.prod(shape)
    return basis.encode(torch.eye(dim, dtype=dtype).view(dim, *shape)).view(dim, dim).T


def covariance_in_basis(basis: Basis, variances: Tensor) -> Tensor:
    """S = Uᵀ diag(v) U: the data-space covariance of independent components with variances v."""
    u = basis_matrix(basis, tuple(variances.shape))
    return u.T @ torch.diag(variances.flatten().to(torch.float64)) @ u


class GaussianOracle(nn.Module):
    """Exact E[ε | z_t] for x ~ N(mean, covariance) under `process` (float64 inside)."""

    def __init__(self, process: GaussianDiffusion, mean: Tensor, covariance: Tensor) -> None:
        super().__init__()
        shape = process.prior.shape
        dim = math.prod(shape)
        if tuple(mean.shape) != shape or tuple(covariance.shape) != (dim, dim):
            raise ValueError(f"oracle needs mean {shape} and covariance ({dim}, {dim})")
        self.process, self.shape = process, shape
        prior_var = process.prior.variance.to(torch.float64).flatten()
        whiten = basis_matrix(process.basis, shape) / prior_var.sqrt()[:, None]
        offset = (mean.to(torch.float64) - process.prior.mean.to(torch.float64)).flatten()
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("covariance", covariance.to(torch.float64))
        self.register_buffer("state_mean", whiten @ offset)
        self.register_buffer("state_covariance", whiten @ covariance.to(torch.float64) @ whiten.T)

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """ε̂ in the network's output layout, for network input x at times t (B,)."""
        z = self.process.state_from_network_input(x.to(torch.float64)).flatten(1)
        level = self.process.noise_level(t.to(torch.float64).expand(x.shape[0]))
        alpha = level.alpha.to(torch.float64).expand(x.shape[0], *self.shape).flatten(1)
        sigma = level.sigma.to(torch.float64).expand(x.shape[0], *self.shape).flatten(1)
        centred = z - alpha * self.state_mean
        if bool((alpha == alpha[:1]).all()):  # one time for the whole batch: a single solve
            eps = sigma * torch.linalg.solve(self._marginal_covariance(alpha[0], sigma[0]), centred.T).T
        else:
            eps = torch.stack([s * torch.linalg.solve(self._marginal_covariance(a, s), c)
                               for a, s, c in zip(alpha, sigma, centred)])
        return self.process.network_output_from_eps(eps.view(-1, *self.shape)).to(x.dtype)

    def _marginal_covariance(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        """Cov(z_t) = A S_z A + Σ² for one time (α, σ of shape (D,))."""
        return alpha[:, None] * self.state_covariance * alpha[None, :] + torch.diag(sigma**2)

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact data samples x ~ N(mean, covariance), (num, C, H, W) float64."""
        chol = torch.linalg.cholesky(self.covariance)
        noise = gaussian_noise((num, chol.shape[0]), generator, chol.device, torch.float64)
        return (self.mean.flatten() + noise @ chol.T).view(num, *self.shape)

    def state_log_density(self, z: Tensor, t: float) -> Tensor:
        """Exact log p_t(z) of the state z_t ~ N(α μ_z, A S_z A + Σ²) at one time t, in nats."""
        level = self.process.noise_level(torch.tensor([t], dtype=torch.float64))
        alpha = level.alpha.to(torch.float64).expand(1, *self.shape).flatten()
        sigma = level.sigma.to(torch.float64).expand(1, *self.shape).flatten()
        dist = torch.distributions.MultivariateNormal(
            alpha * self.state_mean, covariance_matrix=self._marginal_covariance(alpha, sigma)
        )
        return dist.log_prob(z.to(torch.float64).flatten(1))

    def log_density(self, x: Tensor) -> Tensor:
        """Exact log N(x; mean, covariance) per sample, in nats."""
        dist = torch.distributions.MultivariateNormal(self.mean.flatten(), covariance_matrix=self.covariance)
        return dist.log_prob(x.to(torch.float64).flatten(1))


class DiagonalOracle(nn.Module):
    """Exact E[ε | z_t] for data whose components in the process's basis are independent Gaussians: c = U x with
    c_k ~ N(m_k, v_k). In state coordinates z₀ ~ N(μ_z, diag(s)) with μ_z = (m − U m_prior)/√λ, s = v/λ, so per
    component

        E[ε | z_t] = σ (z_t − α μ_z) / (α² s + σ²),

    elementwise for any (component-wise) schedule: O(D) per call, for fields far larger than GaussianOracle's
    dense solves allow (e.g. a stationary random field in the Fourier basis). float64 inside."""

    def __init__(self, process: GaussianDiffusion, mean: Tensor, variance: Tensor) -> None:
        super().__init__()
        shape = process.prior.shape
        if tuple(mean.shape) != shape or tuple(variance.shape) != shape:
            raise ValueError(f"oracle needs the basis coefficients' mean and variance shaped {shape}")
        self.process, self.shape = process, shape
        prior_var = process.prior.variance.to(torch.float64)
        prior_mean = process.basis.encode(process.prior.mean.to(torch.float64)[None])[0]
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("variance", variance.to(torch.float64))
        self.register_buffer("state_mean", (mean.to(torch.float64) - prior_mean) / prior_var.sqrt())
        self.register_buffer("state_variance", variance.to(torch.float64) / prior_var)

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """ε̂ in the network's output layout, for network input x at times t (B,)."""
        z = self.process.state_from_network_input(x.to(torch.float64))
        softness = cond.get("softness")
        softness = None if softness is None else torch.as_tensor(softness, dtype=torch.float64).expand(x.shape[0])
        level = self.process.noise_level(t.to(torch.float64).expand(x.shape[0]), softness)
        alpha, sigma = level.alpha.to(torch.float64), level.sigma.to(torch.float64)
        eps = sigma * (z - alpha * self.state_mean) / (alpha**2 * self.state_variance + sigma**2)
        return self.process.network_output_from_eps(eps).to(x.dtype)

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact data samples x = Uᵀ c (num, C, H, W) float64."""
        noise = gaussian_noise((num, *self.shape), generator, self.mean.device, torch.float64)
        return self.process.basis.decode(self.mean + self.variance.sqrt() * noise)
