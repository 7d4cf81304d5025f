"""GUD experiments: per-sample softness, softness-range training, Haar × column labels, image extension."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from conftest import gen
from diffspace.config import load_preset, preset_names
from diffspace.families.gaussian.extension import extend_right, inpaint
from diffspace.nets import build_net
from diffspace.families.gaussian.oracle import GaussianOracle
from diffspace.families.gaussian.priors import fitted_prior, white_prior
from diffspace.families.gaussian import GaussianConfig
from diffspace.process import build_process
from diffspace.families.gaussian.process import GaussianDiffusion
from diffspace.samplers import euler_maruyama
from diffspace.families.gaussian.schedules import LogSNRLinear, SoftConditioning
from diffspace.spaces import DCTBasis, HaarBasis, PixelBasis, column_labels, haar_column_labels

LABELS = torch.tensor([0.0, 1.0, 2.5, 4.0], dtype=torch.float64).view(1, 2, 2)


@pytest.mark.parametrize("clip", [False, True])
def test_per_sample_softness_equals_the_scalar_schedule(clip: bool) -> None:
    """A constant per-sample softness s reproduces SoftConditioning(labels, s) exactly (float32 rounding of l/s)."""
    base = SoftConditioning(LABELS, softness=0.7, clip=clip)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for s in (0.7, 0.25, 3.0):
        reference = SoftConditioning(LABELS, softness=s, clip=clip)
        gamma, dgamma = base.gamma_and_derivative(t, torch.full((11,), s, dtype=torch.float64))
        ref_gamma, ref_dgamma = reference(t)
        tolerance = 4e-7 * (1 + ref_gamma.abs().max().item())  # float32 shift l/s, computed two ways
        assert torch.allclose(gamma, ref_gamma.expand_as(gamma), atol=tolerance, rtol=0)
        assert torch.allclose(dgamma, ref_dgamma.expand_as(dgamma), atol=tolerance, rtol=0)
    same, _ = base.gamma_and_derivative(t, torch.full((11,), 0.7, dtype=torch.float64))
    assert torch.equal(same, base.gamma(t).expand_as(same))


def test_mixed_softness_batch_follows_each_samples_schedule() -> None:
    base = SoftConditioning(LABELS, softness=1.0)
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    gamma, _ = base.gamma_and_derivative(t, torch.tensor([0.5, 2.0], dtype=torch.float64))
    for b, s in enumerate((0.5, 2.0)):
        expected = SoftConditioning(LABELS, softness=s).gamma(t[b:b + 1])[0]
        assert torch.allclose(gamma[b], expected, atol=1e-6)


def test_bad_per_sample_softness_is_rejected() -> None:
    base = SoftConditioning(LABELS, softness=1.0)
    with pytest.raises(ValueError, match=r"shaped \(B,\)"):
        base.gamma_and_derivative(torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match="> 0"):
        base.gamma_and_derivative(torch.zeros(2), torch.tensor([1.0, 0.0]))


class RecordingNet(torch.nn.Module):
    """ε̂ = 0; records the softness it was conditioned on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, softness: torch.Tensor) -> torch.Tensor:
        self.seen.append(softness.detach().clone())
        return torch.zeros_like(x)


def soft_process(softness_range: tuple[float, float] | None = (0.5, 4.0)) -> GaussianDiffusion:
    shape = (1, 2, 2)
    return GaussianDiffusion(PixelBasis(), white_prior(shape), SoftConditioning(LABELS, softness=1.0),
                             softness_range=softness_range)


def test_training_draws_hierarchy_uniformly_in_the_range() -> None:
    """a = 1/s ~ U[1/4, 2]: mean 1.125, sd 1.75/√12, checked at 5 standard errors of 4000 draws."""
    process, net = soft_process(), RecordingNet()
    process.loss(net, torch.zeros(4000, 1, 2, 2), gen(0))
    a = 1 / net.seen[0].double()
    assert a.min() >= 0.25 - 1e-6 and a.max() <= 2.0 + 1e-6
    se = 1.75 / math.sqrt(12) / math.sqrt(4000)
    assert abs(a.mean().item() - 1.125) < 5 * se
    assert a.std().item() == pytest.approx(1.75 / math.sqrt(12), rel=0.05)


def test_calls_without_softness_use_the_schedules_own() -> None:
    process, net = soft_process(), RecordingNet()
    z = torch.zeros(3, 1, 2, 2)
    process.predict(net, z, torch.full((3,), 0.5))
    assert torch.equal(net.seen[-1], torch.ones(3))
    process.predict(net, z, torch.full((3,), 0.5), {"softness": 2.0})
    assert torch.equal(net.seen[-1], torch.full((3,), 2.0))


def test_softness_changes_the_noise_level_through_cond() -> None:
    process = soft_process()
    t = torch.full((2,), 0.5)
    level = process.noise_level(t, torch.tensor([0.5, 2.0]))
    expected = [process.noise_level(t[:1], torch.tensor([s])).gamma[0] for s in (0.5, 2.0)]
    assert torch.allclose(level.gamma[0], expected[0]) and torch.allclose(level.gamma[1], expected[1])
    assert not torch.allclose(level.gamma[0], level.gamma[1])


def test_softness_needs_the_soft_schedule() -> None:
    with pytest.raises(ValueError, match="soft-conditioning schedule"):
        GaussianDiffusion(PixelBasis(), white_prior((1, 2, 2)), LogSNRLinear(), softness_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="0 < s_min ≤ s_max"):
        soft_process((2.0, 1.0))
    plain = GaussianDiffusion(PixelBasis(), white_prior((1, 2, 2)), LogSNRLinear())
    with pytest.raises(ValueError, match="soft schedule"):
        plain.predict_eps(RecordingNet(), torch.zeros(1, 1, 2, 2), torch.zeros(1), {"softness": 1.0})


def test_haar_column_labels_order_levels_and_columns() -> None:
    """Coarse before fine at the same column, left before right within a level; odd widths fall back to columns."""
    shape = (1, 8, 8)
    labels = haar_column_labels(shape)[0]
    scale = HaarBasis().labels(shape)[0]
    assert labels[0, 0].item() == pytest.approx(3.5)  # the average, centred on the image
    finest = labels[scale == 3].view(-1)
    assert finest.min().item() == pytest.approx(0.5 + 8) and finest.max().item() == pytest.approx(6.5 + 8)
    assert labels[0, 4].item() < labels[0, 7].item()  # same band, further right
    assert labels[0, 1].item() < labels[0, 4].item()  # coarse detail (level 1) before finest (level 3)
    assert torch.equal(haar_column_labels((1, 7, 7)), column_labels((1, 7, 7)))


# ----- image extension --------------------------------------------------------------------------
WIDTH, RHO = 4, 0.9


def ar1_oracle(softness: float = 0.04) -> tuple[GaussianDiffusion, GaussianOracle]:
    """Rows of a stationary AR(1) x_{j+1} = ρ x_j + √(1 − ρ²) ξ, a column-sequential process, its exact ε̂."""
    shape = (1, 1, WIDTH)
    j = torch.arange(WIDTH, dtype=torch.float64)
    covariance = RHO ** (j[:, None] - j[None, :]).abs()
    process = GaussianDiffusion(PixelBasis(), white_prior(shape), SoftConditioning(column_labels(shape), softness))
    process = process.double()
    return process, GaussianOracle(process, torch.zeros(shape, dtype=torch.float64), covariance)


def test_inpainting_keeps_the_known_columns_exactly() -> None:
    process, oracle = ar1_oracle()
    known = torch.randn(5, 1, 1, WIDTH, generator=gen(3), dtype=torch.float64)
    mask = torch.tensor([True, True, False, False]).view(1, 1, WIDTH)
    result = inpaint(process, oracle, known, mask, steps=20, generator=gen(4))
    assert torch.equal(result.samples[..., :2], known[..., :2]) and result.nfe == 21
    assert not torch.equal(result.samples[..., 2:], known[..., 2:])


def test_extension_continues_the_autoregression() -> None:
    """Extended columns follow x_new = ρ x_last + √(1 − ρ²) ξ: regression slope and residual variance
    within 5 standard errors (slope SE = √((1 − ρ²)/(n var x)), variance SE = (1 − ρ²)√(2/n))."""
    process, oracle = ar1_oracle()
    n = 3000
    chol = torch.linalg.cholesky(oracle.covariance)
    start = (torch.randn(n, WIDTH, generator=gen(5), dtype=torch.float64) @ chol.T).view(n, 1, 1, WIDTH)
    extended = extend_right(process, oracle, start, 2, steps=300, generator=gen(6), chunk=1).images
    assert extended.shape == (n, 1, 1, WIDTH + 2)
    assert torch.equal(extended[..., :WIDTH], start)
    for j in (WIDTH, WIDTH + 1):
        last, new = extended[:, 0, 0, j - 1].double(), extended[:, 0, 0, j].double()
        slope = (last * new).mean() / (last * last).mean()
        residual = (new - slope * last).var()
        slope_se = math.sqrt((1 - RHO**2) / (n * last.var().item()))
        assert abs(slope.item() - RHO) < 5 * slope_se
        assert abs(residual.item() - (1 - RHO**2)) < 5 * (1 - RHO**2) * math.sqrt(2 / n)


def test_extension_needs_the_pixel_basis_and_valid_sizes() -> None:
    shape = (1, 1, WIDTH)
    dct = GaussianDiffusion(DCTBasis(), white_prior(shape), SoftConditioning(column_labels(shape), 0.1))
    with pytest.raises(ValueError, match="pixel basis"):
        extend_right(dct, RecordingNet(), torch.zeros(1, *shape), 2, steps=2)
    process, oracle = ar1_oracle()
    with pytest.raises(ValueError, match="chunk"):
        extend_right(process, oracle, torch.zeros(1, *shape), 2, steps=2, chunk=WIDTH)
    with pytest.raises(ValueError, match="≥ 4"):
        extend_right(process, oracle, torch.zeros(1, 1, 1, 2), 2, steps=2)


# ----- presets and label kinds ------------------------------------------------------------------
GUD_PRESETS = [name for name in preset_names() if name.startswith("gud-")]


def test_the_gud_presets_exist() -> None:
    expected = {"gud-mnist-pca", "gud-mnist-fourier", "gud-fashion-pca", "gud-mnist-columns", "gud-haar-columns",
                "gud-cifar10-pca", "gud-cifar10-fourier", "gud-cifar10-columns", "gud-cifar10-haar-columns"}
    assert expected <= set(GUD_PRESETS)


@pytest.mark.parametrize("name", GUD_PRESETS)
def test_gud_presets_build_train_and_sample(name: str) -> None:
    """Each preset's process and (narrowed) network on 8×8 stand-in data: a finite loss, and two sampler steps."""
    cfg = load_preset(name)
    channels = 3 if "cifar10" in name else 1
    data = torch.rand(64, channels, 8, 8, generator=gen(0)) * 2 - 1
    process = build_process(cfg.process, data)
    net = build_net(dataclasses.replace(cfg.model, channels=8, channel_mult=(1, 2), num_res_blocks=1), channels,
                    channels, (8, 8))
    loss = process.loss(net, data[:4], gen(1))
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    samples = euler_maruyama(process, net, (2, channels, 8, 8), 2, gen(2)).samples
    assert torch.isfinite(samples).all()
    if cfg.process.softness_range:
        assert "softness" in cfg.model.cond_keys and isinstance(process.schedule, SoftConditioning)


def test_data_log_variance_labels_order_an_unwhitened_prior() -> None:
    """labels = data_log_variance with a white prior: the shift is −log Var_data(component)/softness."""
    data = torch.randn(500, 1, 4, 4, generator=gen(3)) * torch.linspace(0.1, 2, 16).view(1, 1, 4, 4)
    process = build_process(GaussianConfig(basis="pixel", prior="white", schedule="soft", labels="data_log_variance",
                                          softness=0.5), data)
    expected = fitted_prior(PixelBasis(), data).log_variance_labels() / 0.5
    assert torch.allclose(process.schedule.shift.double(), expected, atol=1e-5)
    assert torch.equal(process.prior.variance, torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="basis=haar"):
        build_process(GaussianConfig(basis="pixel", schedule="soft", labels="haar_column"), data)


def test_elbo_at_a_conditioned_softness_is_the_elbo_of_that_softness() -> None:
    """nll_bound with cond softness s (diffusion weights, prior KL and decoder terms) equals the bound of a
    process built with softness s, up to float32 rounding of l/s computed two ways."""
    net = lambda x, t, **cond: 0.3 * x  # noqa: E731 — a fixed ε̂ that ignores the softness
    x = torch.randn(6, 1, 2, 2, generator=gen(7))
    ranged = soft_process()
    for s in (0.5, 2.0):
        fixed = GaussianDiffusion(PixelBasis(), white_prior((1, 2, 2)), SoftConditioning(LABELS, softness=s))
        ours = ranged.nll_bound(net, x, gen(8), softness=s)
        theirs = fixed.nll_bound(net, x, gen(8))
        assert torch.allclose(ours, theirs, rtol=1e-5)
