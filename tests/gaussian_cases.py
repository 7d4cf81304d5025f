"""Gaussian test data with exact statistics: a correlated 2-D Gaussian and periodic random fields."""

from __future__ import annotations

import torch
from torch import Tensor

from diffspace.families.gaussian.oracle import GaussianOracle, covariance_in_basis
from diffspace.families.gaussian.priors import power_law_prior
from diffspace.families.gaussian import GaussianConfig, GaussianDiffusion
from diffspace.process import build_process
from diffspace.spaces import FourierBasis


def correlated_2d(rho: float = 0.8, scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (1, 1, 2) and covariance scale·[[1, ρ], [ρ, 1]] of a correlated 2-D Gaussian."""
    cov = scale * torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    return torch.tensor([0.3, -0.2], dtype=torch.float64).view(1, 1, 2), cov


def random_field(size: int, tau: float = 1.0, exponent: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean 0 and covariance of an N×N periodic field with spectrum (τ² + |k|²)^(−s)/N² (pixel variance ~ 0.2)."""
    shape = (1, size, size)
    variance = power_law_prior(FourierBasis(), shape, tau=tau, exponent=exponent).variance.double() / size**2
    return torch.zeros(shape, dtype=torch.float64), covariance_in_basis(FourierBasis(), variance)


def oracle_process(
    mean: torch.Tensor, cov: torch.Tensor, num_fit: int = 4000, **process_options
) -> tuple[torch.nn.Module, GaussianOracle]:
    """A process built from config options (data-fitted parts fitted on exact samples) and its oracle."""
    shape = tuple(mean.shape)
    chol = torch.linalg.cholesky(cov)
    g = torch.Generator().manual_seed(1234)
    data = (mean.flatten() + torch.randn(num_fit, cov.shape[0], generator=g, dtype=torch.float64) @ chol.T)
    process = build_process(GaussianConfig(**process_options), data=data.view(num_fit, *shape).float())
    return process, GaussianOracle(process, mean, cov)


def covariance_z_scores(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """Largest |error| / SE over covariance entries (SE² = (S_ij² + S_ii S_jj)/n) and over means (SE² = S_ii/n)."""
    x = samples.double().flatten(1)
    n = x.shape[0]
    emp_mean = x.mean(0)
    centred = x - mean.flatten()
    emp_cov = centred.T @ centred / n
    diag = torch.diagonal(cov)
    cov_se = torch.sqrt((cov**2 + diag[:, None] * diag[None, :]) / n)
    mean_se = torch.sqrt(diag / n)
    return float(((emp_cov - cov).abs() / cov_se).max()), float(((emp_mean - mean.flatten()).abs() / mean_se).max())


def noisy(process: GaussianDiffusion, z0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """z_t = α_t z₀ + σ_t ε for a given ε (the process's `marginal` draws its own)."""
    level = process.noise_level(t)
    return level.alpha * z0 + level.sigma * eps
