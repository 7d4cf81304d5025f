"""Multilevel (infinite-dimensional) diffusion: resolution-consistent priors, the forward SDE in function
space, the denoising loss and the sampler with the exact score, the process rebuilt at other resolutions.

Statistical checks use fixed seeds and standard errors (SE) derived from the sample sizes."""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np

import pytest
import torch

from diffspace.metrics import band_powers, octave_edges, wavenumbers
from diffspace.multilevel import MultilevelConfig, level_images, process_at, validation_loss
from diffspace.families.gaussian.oracle import GaussianOracle, covariance_in_basis
from diffspace.families.gaussian.priors import laplacian_prior, laplacian_symbol, power_law_prior
from diffspace.families.gaussian import GaussianConfig
from diffspace.process import build_process
from diffspace.resolution import spectral_resize
from diffspace.samplers import euler_maruyama
from diffspace.spaces import DCTBasis, FourierBasis, PixelBasis

Z = 5.0  # max |error| / SE over up to a few hundred statistics


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mode_power_z(samples: torch.Tensor, variance: torch.Tensor, basis=None) -> float:
    """Largest |mean c_k² − λ_k| / (λ_k √(2/n)) over the basis coefficients c = U x of zero-mean samples."""
    basis = basis or FourierBasis()
    power = basis.encode(samples.double()).pow(2).mean(0)
    return float(((power - variance) / (variance * math.sqrt(2 / samples.shape[0]))).abs().max())


# ----- priors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("basis", [FourierBasis(), DCTBasis()], ids=["fourier", "dct"])
def test_laplacian_symbol_tends_to_the_wavenumber_squared(basis) -> None:
    """μ_k = (N²/π²) sin²(πk/N) + … ≤ |k|², and μ_k/|k|² → 1 like 1 − π²k²/(3N²) for a fixed mode."""
    k = basis.labels((1, 64, 64))
    mu = laplacian_symbol(basis, (1, 64, 64))
    assert bool((mu <= k**2 + 1e-9).all()) and mu[0, 0, 0] == 0.0
    fixed = [laplacian_symbol(basis, (1, n, n))[0, 1, 2] for n in (8, 16, 32, 64)]
    exact = float(basis.labels((1, 8, 8))[0, 1, 2]) ** 2
    errors = [exact - float(m) for m in fixed]
    assert all(e > 0 for e in errors) and all(b < a / 3.5 for a, b in zip(errors, errors[1:]))  # O(N⁻²)


def test_laplacian_prior_keeps_the_constant_mode() -> None:
    """λ_0 = HW τ^(−2s) > 0, so the sample mean (the k = 0 mode c_0 = mean pixel) has variance τ^(−2s): the
    reference code's |Δ_h|^(−s/2) zeroes it. τ = 0 (the pure Laplacian) is refused."""
    basis, n = FourierBasis(), 4000
    prior = laplacian_prior(basis, (1, 16, 16), tau=0.8, exponent=1.5)
    assert prior.variance[0, 0, 0] == pytest.approx(256 * 0.8**-3, rel=1e-6)
    samples = prior.sample(basis, n, _gen(0))
    var_mean = samples.double().mean(dim=(1, 2, 3)).var()
    assert abs(float(var_mean) / 0.8**-3 - 1) < Z * math.sqrt(2 / n)
    with pytest.raises(ValueError, match="constant mode"):
        laplacian_prior(basis, (1, 8, 8), tau=0.0)
    with pytest.raises(ValueError, match="trace-class"):
        laplacian_prior(basis, (1, 8, 8), exponent=1.0)
    with pytest.raises(ValueError, match="fourier or dct"):
        laplacian_prior(PixelBasis(), (1, 8, 8))


@pytest.mark.parametrize("basis", [FourierBasis(), DCTBasis()], ids=["fourier", "dct"])
def test_laplacian_prior_mode_power_and_converging_pixel_variance(basis) -> None:
    """Empirical per-mode power = λ_k, and E(mean squared pixel) = Σλ_k/HW converges as N doubles."""
    prior = laplacian_prior(basis, (1, 8, 8))
    assert _mode_power_z(prior.sample(basis, 6000, _gen(1)), prior.variance.double(), basis) < Z
    traces = [laplacian_prior(basis, (1, n, n)).variance.double().sum().item() / n**2 for n in (8, 16, 32, 64, 128)]
    steps = [abs(b - a) for a, b in zip(traces, traces[1:])]
    assert all(b < a for a, b in zip(steps, steps[1:])) and steps[-1] < steps[0] / 10  # the series converges


@pytest.mark.parametrize("prior", ["power_law", "laplacian"])
@pytest.mark.parametrize("n", [7, 8])
def test_restricting_2n_prior_samples_gives_the_n_statistics(prior: str, n: int) -> None:
    """Restriction (Fourier truncation) of 2N samples is a zero-mean Gaussian whose modes below N's Nyquist
    frequency have the N prior's variances, for the power law exactly (λ/HW = p(|k|) at both N) and for the
    Laplacian up to its O(N⁻²) symbol change; an even N's Nyquist modes receive both fine aliases ±N/2 (variance
    2p, 4p in the corner). Odd N has no Nyquist mode: every statistic matches."""
    basis = FourierBasis()
    build = power_law_prior if prior == "power_law" else laplacian_prior
    fine = build(basis, (1, 2 * n, 2 * n), tau=1.0, exponent=2.0)
    samples = spectral_resize(fine.sample(basis, 6000, _gen(2)).double(), (n, n))
    fine_p = fine.variance.double() / (2 * n) ** 2
    # the law of the restriction, mode by mode: fine p at the same k, summed over the aliases on a Nyquist line
    freqs = torch.fft.fftfreq(n, 1 / n).long()
    expected = torch.zeros(1, n, n, dtype=torch.float64)
    for i, ky in enumerate(freqs.tolist()):
        for j, kx in enumerate(freqs.tolist()):
            ys = [ky, -ky] if n % 2 == 0 and abs(ky) == n // 2 else [ky]
            xs = [kx, -kx] if n % 2 == 0 and abs(kx) == n // 2 else [kx]
            expected[0, i, j] = sum(float(fine_p[0, y % (2 * n), x % (2 * n)]) for y in ys for x in xs)
    assert _mode_power_z(samples, n * n * expected) < Z
    coarse = build(basis, (1, n, n), tau=1.0, exponent=2.0).variance.double()
    below = (freqs.abs() < n / 2)[:, None] & (freqs.abs() < n / 2)[None, :]
    relative = (n * n * expected[0] / coarse[0] - 1)[below].abs().max()
    if prior == "power_law":
        assert relative < 1e-6
    else:  # the grid Laplacian's symbol changes with N by O((k/N)²): consistent only as N → ∞
        assert relative > 1e-3
    if n % 2:  # every mode is below Nyquist: the restriction has exactly the coarse pixel variance
        pixel = samples.pow(2).mean()
        assert abs(float(pixel) / float(coarse.sum() / n**2) - 1) < Z * math.sqrt(2 / 6000) * 3


# ----- the forward process ---------------------------------------------------------------------------
def _function_process(n: int, output: str = "noise", weighting: str = "noise", schedule: str = "vp_linear"):
    cfg = GaussianConfig(basis="fourier", prior="power_law", prior_tau=1.0, prior_exponent=2.0, schedule=schedule,
                        network_input="data", network_output=output, weighting=weighting)
    return process_at(cfg, (1, n, n))


def test_forward_marginal_is_the_function_space_sde() -> None:
    """Euler–Maruyama on dX = −½β X dt + √β C^{1/2} dW in data space (β = γ′σ², C = Uᵀ diag(λ) U) from x₀ at
    t = 0 reaches N(m x₀, v C) with m = α_t/α_0, v = 1 − m²: the law GaussianDiffusion.add_noise gives.
    Per Fourier mode: SE(mean) = (vλ/n)^{1/2}, SE(var) = vλ(2/n)^{1/2}."""
    process, basis = _function_process(8), FourierBasis()
    x0 = spectral_resize(torch.randn(1, 1, 4, 4, generator=_gen(3)), (8, 8)).double().expand(3000, 1, 8, 8)
    lam = process.prior.variance.double()
    steps, t_end = 400, 0.5
    g, x = _gen(4), x0.clone()
    for i in range(steps):
        t = torch.tensor([t_end * i / steps])
        level = process.noise_level(t)
        beta = float(level.dgamma * level.sigma**2)
        h = t_end / steps
        x = x - 0.5 * beta * x * h + math.sqrt(beta * h) * process.prior.sample(basis, 3000, g).double()
    ends = process.noise_level(torch.tensor([0.0, t_end]))
    m = float(ends.alpha[1] / ends.alpha[0])
    v = 1 - m**2
    coeffs, mean = basis.encode(x), m * basis.encode(x0[:1])[0]
    assert float(((coeffs.mean(0) - mean).abs() / (v * lam / 3000).sqrt()).max()) < Z
    assert _mode_power_z(x - m * x0, v * lam) < Z
    # and the process's own forward draw has exactly this law: x_t − α x₀ = σ C^{1/2} ε
    tt = torch.full((3000,), t_end)
    drawn = process.from_state(process.marginal(x0.expand(3000, -1, -1, -1), tt, _gen(5)).state)
    level = process.noise_level(tt[:1])
    assert _mode_power_z(drawn - float(level.alpha) * x0, float(level.sigma) ** 2 * lam) < Z


def _grf_oracle(process, n: int, tau: float = 3.0, s: float = 2.0) -> tuple[GaussianOracle, torch.Tensor]:
    """Exact ε-predictor for periodic fields with E|c_k|² = (τ² + |k|²)^(−s), and their basis variances d_k."""
    d = power_law_prior(FourierBasis(), (1, n, n), tau=tau, exponent=s).variance.double()
    cov = covariance_in_basis(FourierBasis(), d)
    return GaussianOracle(process, torch.zeros(1, n, n, dtype=torch.float64), cov), d


@pytest.mark.parametrize(("output", "weighting"), [("eps", "eps"), ("noise", "noise"), ("noise", "eps")])
def test_denoising_loss_takes_its_analytic_value_with_the_exact_score(output: str, weighting: str) -> None:
    """With the exact predictor, E loss = ∫₀¹ (1/D) Σ_k w_k α²r_k/(α²r_k + σ²) dt, r_k = d_k/λ_k (the posterior
    variance of ε_k), w = 1 ("eps") or λ ("noise"), whatever the network's output layout. SE = sd/√n."""
    n = 8
    process = _function_process(n, output, weighting, schedule="cosine")
    oracle, d = _grf_oracle(process, n)
    lam = process.prior.variance.double()
    t = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
    level = process.noise_level(t)
    alpha2, sigma2 = level.alpha.double() ** 2, level.sigma.double() ** 2
    r = d / lam
    weight = lam if weighting == "noise" else torch.ones_like(lam)
    analytic = float((weight * alpha2 * r / (alpha2 * r + sigma2)).flatten(1).mean(1).mean())
    g = _gen(6)
    losses = torch.cat([process.loss(oracle, oracle.sample(400, g).float(), g).double() for _ in range(8)])
    se = float(losses.std()) / math.sqrt(losses.numel())
    assert abs(float(losses.mean()) - analytic) < Z * se
    assert se < 0.05 * analytic  # the check is sharp


def test_sampler_at_2n_reproduces_the_field_spectrum() -> None:
    """A process defined at N = 6 rebuilt at 2N = 12, with the exact score of a random field there:
    Euler–Maruyama (200 steps) samples have the field's power in every octave band at 2N (SE_b as in
    tests/test_function_metrics.py) and its full covariance (entry-wise SE)."""
    from gaussian_cases import covariance_z_scores

    process = _function_process(12)
    oracle, d = _grf_oracle(process, 12)
    m = 2000
    samples = euler_maruyama(process, oracle, (m, 1, 12, 12), 200, _gen(7)).samples.double()
    p = d[0] / 144
    k, edges = wavenumbers(12, 12), octave_edges(12, 12)
    masks = [(k >= lo) & (k < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    expected = torch.stack([p[mask].sum() for mask in masks])
    se = torch.stack([(2 * p[mask] ** 2).sum().sqrt() for mask in masks]) / math.sqrt(m)
    assert float(((band_powers(samples, edges) - expected).abs() / se).max()) < Z
    cov_z, mean_z = covariance_z_scores(samples, oracle.mean, oracle.covariance)
    assert cov_z < Z and mean_z < Z


# ----- resolution changes and the multilevel config --------------------------------------------------
def test_process_at_refuses_data_fitted_parts() -> None:
    with pytest.raises(ValueError, match="the fitted prior is estimated from data"):
        process_at(GaussianConfig(basis="fourier", prior="fitted"), (1, 56, 56))
    with pytest.raises(ValueError, match="the pca basis is estimated from data"):
        process_at(GaussianConfig(basis="pca"), (1, 56, 56))
    data = torch.randn(16, 1, 8, 8, generator=_gen(7))
    for cfg in (GaussianConfig(basis="fourier", prior="fitted"), GaussianConfig(basis="pca"),
                GaussianConfig(schedule="soft", labels="data_log_variance")):
        assert not build_process(cfg, data).capabilities.resolution_free
    assert build_process(GaussianConfig(basis="fourier", prior="power_law"), data).capabilities.resolution_free
    assert process_at(GaussianConfig(basis="dct", prior="laplacian"), (1, 56, 56)).prior.shape == (1, 56, 56)


def test_level_images_restrict_function_data_spectrally_and_images_by_area() -> None:
    fields = torch.randn(3, 1, 16, 16, generator=_gen(8))
    torch.testing.assert_close(level_images(fields, 8, "grf", "auto"), spectral_resize(fields, (8, 8)))
    images = torch.rand(3, 1, 28, 28, generator=_gen(9))
    torch.testing.assert_close(level_images(images, 14, "mnist", "auto"),
                               torch.nn.functional.avg_pool2d(images, 2))


def test_validation_loss_is_deterministic_and_finer_levels_agree_for_the_exact_score() -> None:
    """Same seed, same value; and with the exact score the "noise"-weighted loss (a function-space L² error)
    at 8 and 16 is close: the modes 16 adds carry little of the field's energy."""
    values = {}
    for n in (8, 16):
        process = _function_process(n)
        oracle, _ = _grf_oracle(process, n)
        data = oracle.sample(600, _gen(10)).float()
        first, again = validation_loss(process, oracle, data, seed=3), validation_loss(process, oracle, data, seed=3)
        assert first == again
        values[n] = first
    assert abs(values[16] / values[8] - 1) < 0.25


def test_multilevel_config_checks() -> None:
    MultilevelConfig("schedule", (14, 28), (300, 100), (64, 32)).check(400)
    MultilevelConfig("joint", (14, 28)).check(5)
    cases = [
        (MultilevelConfig("schedule", (14, 28), (300,)), 300, "multilevel.steps has 1 entries for 2 resolutions"),
        (MultilevelConfig("joint", (14, 28), (3, 3)), 6, "leave multilevel.steps empty"),
        (MultilevelConfig("joint", (14, 28), (), (8,)), 6, "batch_sizes has 1 entries"),
        (MultilevelConfig("schedule"), 6, "needs multilevel.resolutions"),
        (MultilevelConfig("sometimes"), 6, "multilevel.mode='sometimes' is unknown"),
    ]
    for cfg, steps, match in cases:
        with pytest.raises(ValueError, match=match):
            cfg.check(steps)
    schedule = MultilevelConfig("schedule", (14, 28), (3, 2))
    assert [schedule.level_at(s) for s in range(6)] == [0, 0, 0, 1, 1, 1]
    MultilevelConfig("schedule", (14, 28), (300, 100)).check(500)  # steps not summing to train.steps are scaled
    assert MultilevelConfig("schedule", (14, 28), (14000, 6000)).level_ends(1000) == (700, 1000)
    assert MultilevelConfig("schedule", (4, 8, 16), (1, 1, 1)).level_ends(10) == (3, 7, 10)
    assert schedule.level_ends(5) == (3, 5) and [schedule.level_at(s, (2, 4)) for s in range(6)] == [0, 0, 1, 1, 1, 1]
    assert schedule.batch_size(1, 32) == 32 and MultilevelConfig("joint", (8,), (), (5,)).batch_size(0, 32) == 5


# ----- training across levels, sampling at unseen resolutions ----------------------------------------
TINY = ["data.resolution=8", "data.num_samples=64", "model.modes=2", "model.width=4", "model.layers=1",
        "train.batch_size=8", "train.warmup_steps=1", "train.log_every=3", "train.checkpoint_every=3",
        "sample.num=0", "train.device=cpu"]


def _tiny(*overrides: str):
    from diffspace.config import load_preset

    return load_preset("multilevel-grf").with_overrides([*TINY, *overrides])


def test_level_plan_serves_each_level_its_data_and_process() -> None:
    from diffspace.training.levels import LevelPlan

    images = torch.randn(64, 1, 8, 8, generator=_gen(11))
    cfg = _tiny("train.steps=5", "multilevel.resolutions=4,8", "multilevel.steps=3,2", "multilevel.batch_sizes=16,8")
    own = process_at(cfg.process, (1, 8, 8))
    plan = LevelPlan(cfg.multilevel, cfg.process, own, images, "grf", None, "auto", 8, 5, 0)
    assert [plan.active(s)[0].resolution for s in range(5)] == [4, 4, 4, 8, 8]
    assert [plan.images_per_step(s) for s in (0, 4)] == [16, 8]
    coarse, fine = plan.levels
    torch.testing.assert_close(coarse.images, spectral_resize(images, (4, 4)))
    assert coarse.process.prior.shape == (1, 4, 4) and fine.process is own
    coarse.order.next()
    state = plan.state_dict()
    fresh = LevelPlan(cfg.multilevel, cfg.process, own, images, "grf", None, "auto", 8, 5, 0)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.levels[0].order.next(), coarse.order.next())
    joint = LevelPlan(dataclasses.replace(cfg.multilevel, mode="joint", steps=()), cfg.process, own, images, "grf", None,
                      "auto", 8, 5, 0)
    assert [level.resolution for level in joint.active(0)] == [4, 8] and joint.images_per_step(0) == 24
    fitted_cfg = dataclasses.replace(cfg.process, prior="fitted")
    with pytest.raises(ValueError, match="this process has parts estimated from the data"):
        LevelPlan(cfg.multilevel, fitted_cfg, build_process(fitted_cfg, images), images, "grf", None, "auto", 8, 5, 0)
    with pytest.raises(ValueError, match="must be divisible by ranks × train.grad_accum = 3"):
        LevelPlan(cfg.multilevel, cfg.process, own, images, "grf", None, "auto", 8, 5, 0, divisor=3)


def test_multilevel_training_resumes_exactly_across_the_level_switch(tmp_path) -> None:
    """Six steps (4 at 4×4, 2 at 8×8) straight, and the same run resumed from its step-3 checkpoint, end
    with identical weights: the level schedule, each level's batch order and the optimizer carry over."""
    from diffspace.training import train

    cfg = _tiny("train.steps=6", "multilevel.resolutions=4,8", "multilevel.steps=4,2", "multilevel.batch_sizes=16,8")
    straight = train(cfg, tmp_path / "a", quiet=True)
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "checkpoints" / "step-00000003.pt", tmp_path / "b" / "checkpoints")
    resumed = train(cfg, tmp_path / "b", quiet=True)
    assert straight.step == resumed.step == 6 and resumed.resumed_from == 3
    a = torch.load(straight.checkpoint, weights_only=False)["model"]
    b = torch.load(resumed.checkpoint, weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_steps_scales_the_schedule_and_a_finished_run_extends_on_the_last_level(tmp_path, capsys) -> None:
    """multilevel.steps 6,2 with train.steps=4 trains 3 steps at 4×4 and 1 at 8×8 (said in one line); raising
    train.steps of the finished run trains the new steps at 8×8, with the level ends kept from its start.
    Each level's batch position (16 images per step at 4×4, 8 at 8×8) shows which level trained."""
    from diffspace.training import train

    cfg = _tiny("train.steps=4", "multilevel.resolutions=4,8", "multilevel.steps=6,2", "multilevel.batch_sizes=16,8",
                "train.checkpoint_every=10")
    first = train(cfg, tmp_path / "run", quiet=True)
    assert "multilevel: train.steps=4 scales multilevel.steps 6,2 (sum 8) to 3,1" in capsys.readouterr().err
    data = torch.load(first.checkpoint, weights_only=True)["data"]
    assert data["ends"] == [3, 4] and [level["index"] for level in data["levels"]] == [48, 8]
    extended = train(cfg.with_overrides(["train.steps=6"]), tmp_path / "run", quiet=True)
    assert extended.resumed_from == 4 and extended.step == 6
    assert ("multilevel: steps 5–6 go beyond this run's level schedule (which ends at step 4) and train the last "
            "level, 8×8") in capsys.readouterr().err
    data = torch.load(extended.checkpoint, weights_only=True)["data"]
    assert data["ends"] == [3, 4] and [level["index"] for level in data["levels"]] == [48, 24]


def test_joint_training_and_sampling_at_an_unseen_resolution_from_the_cli(tmp_path) -> None:
    from diffspace.cli import main

    run = tmp_path / "run"
    code = main(["train", "--preset", "multilevel-grf", "--run-dir", str(run), "--quiet", *TINY, "train.steps=2",
                 "multilevel.mode=joint", "multilevel.resolutions=4,8", "multilevel.steps=",
                 "multilevel.batch_sizes=8,8"])
    assert code == 0
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(run), "--num", "3", "--steps", "2", "--resolution", "12", "--out", str(out)]) == 0
    assert np.load(out)["samples"].shape == (3, 1, 12, 12)


def test_sampling_a_data_fitted_process_at_another_resolution_is_refused() -> None:
    from diffspace.build import Model
    from diffspace.sample import at_resolution
    from diffspace.config import ConfigError, RunConfig
    from diffspace.process import DataFacts

    cfg = RunConfig().with_overrides(["process.basis=fourier", "process.prior=fitted", "model.kind=fno"])
    fitted = Model(torch.nn.Linear(1, 1), build_process(cfg.process, torch.randn(16, 1, 8, 8, generator=_gen(7))))
    with pytest.raises(ConfigError, match="--resolution 56: this process has parts estimated from the data"):
        at_resolution(cfg, fitted, DataFacts((1, 56, 56)))
    with pytest.raises(ConfigError, match="model.kind=mlp is built for one input size"):
        at_resolution(RunConfig().with_overrides(["model.kind=mlp"]), fitted, DataFacts((1, 56, 56)))
