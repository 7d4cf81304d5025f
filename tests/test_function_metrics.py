"""Function-space metrics on distributions with known answers: spectra of random fields, sliced Wasserstein
identities, and the Riesz MMD of 1-D Gaussians in closed form. Tolerances are standard errors (SE) derived
from the sample sizes."""

from __future__ import annotations

import math

import pytest
import torch

from diffspace.metrics import (
    band_powers, compare_spectra, function_metrics, octave_edges, radial_power_spectrum, riesz_mmd,
    sliced_wasserstein, wavenumbers,
)
from diffspace.data.fields import sample_power_law_field

Z = 4.0  # |estimate − truth| / SE


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spectrum(n: int, tau: float, s: float) -> torch.Tensor:
    """p_k = (τ² + |k|²)^(−s) on an n×n grid: E|c_k|² of sample_power_law_field."""
    return (tau**2 + wavenumbers(n, n) ** 2) ** (-s)


@pytest.mark.parametrize("n", [16, 32])
def test_band_powers_of_random_fields_match_their_spectrum(n: int) -> None:
    """E_b = Σ_{k∈b} p_k; per sample Var = Σ_{k∈b} 2p_k² (|c_k|² is p·χ²₁ for real modes, p·Exp(1) for each
    mode of a conjugate pair, whose two members are equal), so SE_b = (Σ 2p_k² / m)^{1/2} for m samples."""
    m = 1500
    fields = sample_power_law_field(m, n, tau=3.0, exponent=2.0, generator=_gen(0))
    p = _spectrum(n, 3.0, 2.0)
    edges = octave_edges(n, n)
    k = wavenumbers(n, n)
    expected = torch.stack([p[(k >= lo) & (k < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    se = torch.stack([(2 * p[(k >= lo) & (k < hi)] ** 2).sum().sqrt() for lo, hi in zip(edges[:-1], edges[1:])])
    measured = band_powers(fields, edges)
    assert ((measured - expected).abs() / (se / math.sqrt(m))).max() < Z


def test_radial_spectrum_is_resolution_independent() -> None:
    """Shell averages of p_k agree at 16 and 32 on the shells both resolve (up to sampling error)."""
    m = 1500
    _, coarse = radial_power_spectrum(sample_power_law_field(m, 16, 3.0, 2.0, _gen(1)))
    _, fine = radial_power_spectrum(sample_power_law_field(m, 32, 3.0, 2.0, _gen(2)))
    shells = torch.arange(1, 8)
    # each shell holds ≥ 4 modes in conjugate pairs: relative SE of a shell mean ≤ (2/4)^{1/2}/√m per grid
    rel_se = math.sqrt(0.5 / m) * math.sqrt(2)
    assert ((coarse[shells] / fine[shells] - 1).abs() / rel_se).max() < Z


def test_compare_spectra_separates_laws() -> None:
    same = compare_spectra(sample_power_law_field(800, 16, 3.0, 2.0, _gen(3)),
                           sample_power_law_field(800, 16, 3.0, 2.0, _gen(4)))
    other = compare_spectra(sample_power_law_field(800, 16, 3.0, 2.0, _gen(3)),
                            sample_power_law_field(800, 16, 1.0, 2.0, _gen(5)))
    # the relative SE of a band power of one sample set is ≤ (2/modes)^{1/2}/√800 ≤ 0.05 (the mean band has 1 mode)
    assert same.relative_error.max() < Z * 0.05 * math.sqrt(2)
    assert other.relative_error[:3].min() > 0.5  # τ = 1 puts ≫ more power in the low modes than τ = 3
    with pytest.raises(ValueError, match="must share"):
        compare_spectra(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 16, 16))


def _sphere_moment(a: torch.Tensor, projections: int) -> tuple[float, float]:
    """Mean and SE over `projections` uniform unit θ of θᵀAθ: E = tr A / D,
    Var = 2(D tr A² − (tr A)²) / (D²(D + 2))."""
    d = a.shape[0]
    tr, tr2 = float(torch.trace(a)), float(torch.trace(a @ a))
    var = 2 * (d * tr2 - tr**2) / (d**2 * (d + 2))
    return tr / d, math.sqrt(var / projections)


def test_sliced_wasserstein_of_a_scaled_sample() -> None:
    """y = s·x: each projection is scaled, W₂²(θ) = (s − 1)² θᵀAθ with A = (1/n) Σ xᵢxᵢᵀ exactly."""
    x = torch.randn(300, 1, 6, 6, generator=_gen(6), dtype=torch.float64) * torch.linspace(0.2, 2, 36).view(1, 1, 6, 6)
    flat = x.flatten(1)
    mean, se = _sphere_moment(flat.T @ flat / flat.shape[0], 400)
    sw2 = float(sliced_wasserstein(x, 1.5 * x, projections=400, generator=_gen(7))) ** 2
    assert abs(sw2 - 0.25 * mean) < Z * 0.25 * se


def test_sliced_wasserstein_of_a_shifted_sample() -> None:
    """y = x + c: W₂²(θ) = (θ·c)², whose sphere mean is ‖c‖²/D."""
    x = torch.randn(200, 1, 5, 5, generator=_gen(8), dtype=torch.float64)
    c = torch.linspace(-1, 1, 25, dtype=torch.float64)
    mean, se = _sphere_moment(torch.outer(c, c), 500)
    sw2 = float(sliced_wasserstein(x, x + c.view(1, 1, 5, 5), projections=500, generator=_gen(9))) ** 2
    assert abs(sw2 - mean) < Z * se


def test_sliced_wasserstein_is_zero_between_equal_empirical_laws() -> None:
    x = torch.randn(50, 1, 3, 3, generator=_gen(10))
    shuffled = x[torch.randperm(50, generator=_gen(11))]
    assert float(sliced_wasserstein(x, shuffled, generator=_gen(12))) < 1e-6
    assert float(sliced_wasserstein(x, torch.cat([x, x]), generator=_gen(12))) < 1e-6  # n ≠ m


def _gaussian_abs_mean(m: float, v: float) -> float:
    """E|Z| for Z ~ N(m, v)."""
    sd = math.sqrt(v)
    return sd * math.sqrt(2 / math.pi) * math.exp(-m * m / (2 * v)) + m * math.erf(m / (sd * math.sqrt(2)))


@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (0.5, 1.0), (0.0, 2.0)])
def test_riesz_mmd_of_1d_gaussians_matches_closed_form(mu: float, sigma: float) -> None:
    """X ~ N(0, 1), Y ~ N(μ, σ²): MMD² = E|X − Y| − ½E|X − X′| − ½E|Y − Y′| with E|X − X′| = 2/√π,
    E|Y − Y′| = 2σ/√π. The U-statistic is unbiased; its SE is the spread of 12 independent replicates."""
    truth = _gaussian_abs_mean(-mu, 1 + sigma**2) - 1 / math.sqrt(math.pi) - sigma / math.sqrt(math.pi)
    g = _gen(13)
    values = torch.tensor([
        float(riesz_mmd(torch.randn(400, 1, generator=g, dtype=torch.float64),
                        mu + sigma * torch.randn(400, 1, generator=g, dtype=torch.float64)))
        for _ in range(12)
    ])
    se = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean()) - truth) < Z * se
    if mu or sigma != 1.0:
        assert truth > Z * se  # the difference is detectable at this sample size


def test_riesz_mmd_uses_the_function_space_norm() -> None:
    """Constant functions a and b: ‖a − b‖ = |a − b| at every resolution, so MMD² does not depend on N."""
    a = torch.tensor([0.0, 1.0, 2.0]).view(3, 1, 1, 1)
    b = torch.tensor([0.5, 3.0]).view(2, 1, 1, 1)
    values = [float(riesz_mmd(a.expand(3, 1, n, n), b.expand(2, 1, n, n))) for n in (1, 8, 32)]
    assert values[0] == pytest.approx(values[1], rel=1e-12) and values[0] == pytest.approx(values[2], rel=1e-12)
    with pytest.raises(ValueError, match="0 < r < 2"):
        riesz_mmd(a, b, r=2.0)


def test_function_metrics_report() -> None:
    data = sample_power_law_field(200, 16, 3.0, 2.0, _gen(14))
    report = function_metrics(sample_power_law_field(200, 16, 3.0, 2.0, _gen(15)), data, generator=_gen(16))
    assert report.resolution == (16, 16) and report.band_edges == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert len(report.spectrum_error) == 4 and set(report.as_dict()) >= {"sliced_wasserstein", "riesz_mmd"}
