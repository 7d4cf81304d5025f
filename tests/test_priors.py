"""Priors: power-law variances, the trace-class check, fitted variances, resolution-consistent fields."""

from __future__ import annotations

import math

import pytest
import torch

from diffspace.data.fields import sample_power_law_field
from diffspace.families.gaussian.priors import fitted_prior, power_law_prior, white_prior
from diffspace.spaces import DCTBasis, FourierBasis, PCABasis, PixelBasis


def test_power_law_variances_follow_the_formula() -> None:
    basis = FourierBasis()
    prior = power_law_prior(basis, (1, 8, 6), tau=2.0, exponent=1.5, amplitude=0.5)
    k = basis.labels((1, 8, 6))
    expected = 8 * 6 * 0.25 * (4.0 + k**2) ** -1.5
    assert torch.allclose(prior.variance.double(), expected, rtol=1e-6)


def test_trace_class_exponent_is_checked() -> None:
    with pytest.raises(ValueError, match="trace-class"):
        power_law_prior(FourierBasis(), (1, 8, 8), exponent=1.0)
    with pytest.raises(ValueError, match="fourier or dct"):
        power_law_prior(PixelBasis(), (1, 8, 8), exponent=2.0)
    white_control = power_law_prior(FourierBasis(), (1, 8, 8), exponent=0.0, allow_non_trace_class=True)
    assert torch.allclose(white_control.variance, torch.full((1, 8, 8), 64.0))


def test_empirical_mode_power_equals_lambda() -> None:
    """Var of each Fourier coefficient of prior samples = λ_k within 5 SE (SE = λ √(2/n))."""
    basis = FourierBasis()
    prior = power_law_prior(basis, (1, 8, 8), tau=1.0, exponent=2.0)
    n = 8000
    samples = prior.sample(basis, n, torch.Generator().manual_seed(0))
    power = basis.encode(samples).pow(2).mean(0)
    assert ((power - prior.variance) / (prior.variance * math.sqrt(2 / n))).abs().max() < 5


def test_mean_square_pixel_converges_for_trace_class_and_grows_for_white() -> None:
    """E‖x‖²/N² = Σ_k (τ² + |k|²)^(−s): converges as N doubles for s > 1, ∝ N² for white noise."""
    sums = []
    for n in (8, 16, 32, 64):
        basis = FourierBasis()
        trace_class = power_law_prior(basis, (1, n, n), tau=1.0, exponent=2.0)
        white = power_law_prior(basis, (1, n, n), tau=1.0, exponent=0.0, allow_non_trace_class=True)
        sums.append((trace_class.variance.sum().item() / n**2, white.variance.sum().item() / n**2))
    increments = [b[0] - a[0] for a, b in zip(sums, sums[1:])]
    assert all(inc > 0 for inc in increments) and increments[-1] < increments[0] / 3
    assert [s[1] for s in sums] == [64.0, 256.0, 1024.0, 4096.0]
    empirical = sample_power_law_field(4000, 32, 1.0, 2.0, torch.Generator().manual_seed(1)).pow(2).mean()
    assert abs(empirical.item() - sums[2][0]) < 0.05 * sums[2][0]


def test_fitted_prior_matches_data_statistics() -> None:
    g = torch.Generator().manual_seed(2)
    data = torch.randn(3000, 1, 4, 4, generator=g) * torch.linspace(0.5, 2.0, 4) + 3.0
    basis = DCTBasis()
    prior = fitted_prior(basis, data)
    assert torch.allclose(prior.mean, data.mean(0), atol=1e-5)
    expected = basis.encode(data.double() - data.double().mean(0)).var(0)
    assert torch.allclose(prior.variance.double(), expected, rtol=1e-5)
    pca = PCABasis.fit(data)
    assert torch.allclose(fitted_prior(pca, data).variance.double().flatten(), pca.variances, rtol=1e-4)


def test_fitted_prior_floors_zero_variance_components() -> None:
    data = torch.randn(100, 1, 2, 2)
    data[:, :, 0, 0] = 0.5  # a constant pixel, as on MNIST's border
    prior = fitted_prior(PixelBasis(), data, floor=1e-3)
    assert prior.variance[0, 0, 0] == pytest.approx(1e-3 * prior.variance.mean().item(), rel=0.05)
    assert bool((prior.variance > 0).all())


def test_white_prior_and_log_variance_labels() -> None:
    prior = white_prior((1, 2, 3), variance=2.0)
    assert torch.allclose(prior.log_variance_labels(), torch.full((1, 2, 3), -math.log(2.0), dtype=torch.float64))
    with pytest.raises(ValueError):
        white_prior((1, 2, 3), variance=0.0)
