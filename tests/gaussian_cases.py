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


def power_law_field(size: int, **process_options) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """The issue's spectrum check: a periodic Gaussian random field with spectrum (9 + |k|²)^(−2) (data set grf with
    τ = 3, s = 2) under the multilevel design (Fourier basis, power-law prior τ = 1, s = 2, linear-β VP schedule;
    `process_options` override it). The data are independent per Fourier coefficient, so the oracle is elementwise
    (DiagonalOracle). Returns (process, oracle, the data's variance per coefficient)."""
    from diffspace.data.fields import power_law_variance
    from diffspace.families.gaussian.oracle import DiagonalOracle

    shape = (1, size, size)
    variance = power_law_variance(FourierBasis().labels(shape), shape, 3.0, 2.0).double()
    options = dict(basis="fourier", prior="power_law", prior_tau=1.0, prior_exponent=2.0, schedule="vp_linear")
    process = build_process(GaussianConfig(**{**options, **process_options}), facts=shape)
    return process, DiagonalOracle(process, torch.zeros(shape, dtype=torch.float64), variance), variance


def coefficient_variance(sampler: str, process, oracle, steps: int | None = None, samples: int | None = None,
                         seed: int = 0, **options) -> torch.Tensor:
    """The samples' variance per Fourier coefficient (C, H, W), float64. With `samples` None, exact for a deterministic
    sampler: with mean-zero data and an elementwise oracle the sampler is linear and elementwise, z_out = b·z₁, so one
    run from z₁ = 1 gives b and the variance λ b² (λ the prior's). Otherwise the mean of c² over `samples` draws."""
    from diffspace.process import get_sampler

    shape = tuple(process.prior.shape)
    fn = get_sampler(sampler)
    if samples is None:
        ones = torch.ones(1, *shape)
        result = fn(process, oracle, (1, *shape), steps, torch.Generator().manual_seed(seed), x_init=ones, **options)
        return FourierBasis().encode(result.samples.double())[0].pow(2)
    result = fn(process, oracle, (samples, *shape), steps, torch.Generator().manual_seed(seed), **options)
    return FourierBasis().encode(result.samples.double()).pow(2).mean(0)


def octave_bands(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Masks of the octave bands of metrics.spectra.octave_edges over the Fourier coefficients' |k| labels."""
    from diffspace.metrics.spectra import octave_edges

    labels = FourierBasis().labels(shape).double()
    edges = octave_edges(*shape[-2:])
    return [(labels >= lo) & (labels < hi) for lo, hi in zip(edges[:-1], edges[1:])]


def band_errors(variance: torch.Tensor, data_variance: torch.Tensor) -> torch.Tensor:
    """(E_b(samples) − E_b(data))/E_b(data) per octave band, E_b = Σ_{k ∈ b} the coefficients' variance."""
    return torch.stack([(variance[b].sum() - data_variance[b].sum()) / data_variance[b].sum()
                        for b in octave_bands(tuple(variance.shape))])


def band_standard_errors(data_variance: torch.Tensor, samples: int) -> torch.Tensor:
    """SE of band_errors for `samples` draws of an exact sampler: a coefficient c ~ N(0, v) has Var(c²) = 2v², so
    SE_b = (Σ_{k∈b} 2 v_k²)^{1/2} / (Σ_{k∈b} v_k √m)."""
    return torch.stack([(2 * data_variance[b].pow(2).sum()).sqrt() / (data_variance[b].sum() * samples**0.5)
                        for b in octave_bands(tuple(data_variance.shape))])


def exact_sampler_variance(process, data_variance: torch.Tensor) -> torch.Tensor:
    """What a sampler converges to as its steps grow, per coefficient: the probability-flow ODE from the prior
    z₁ ~ N(0, 1) at t = 1 to t = 0 maps quantiles, z₀ = z₁ (q₀/q₁)^{1/2} with q_t = α_t² s + σ_t² (s = v/λ the state
    variance), and the final step to E[z₀ | z] scales by α₀ s/q₀: variance λ α₀² s²/(q₀ q₁)."""
    lam = process.prior.variance.double()
    s = data_variance / lam
    ends = [process.noise_level(torch.tensor([t], dtype=torch.float64)) for t in (0.0, 1.0)]
    q0, q1 = ((lv.alpha.double() ** 2 * s + lv.sigma.double() ** 2)[0] for lv in ends)
    return lam * ends[0].alpha.double()[0] ** 2 * s**2 / (q0 * q1)
