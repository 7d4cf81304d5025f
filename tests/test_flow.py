"""Flow matching (`process.kind = flow`) against exact answers on Gaussian data, where the optimal velocity is known
in closed form (`FlowOracle`): paths and per-component times, conversions, every sampler's covariance in several
bases and priors, the exact ODE likelihood, the ELBO, the autoregressive limit, configs, presets and the CLI."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchdiffeq import odeint

from conftest import gen
from gaussian_cases import correlated_2d, covariance_z_scores, oracle_process, random_field
from diffspace.config import ConfigError, RunConfig, load_preset, preset_names, validate_names
from diffspace.families.flow import FlowConfig, FlowMatching
from diffspace.families.flow.build import build_flow
from diffspace.families.flow.oracle import FlowOracle
from diffspace.families.flow.paths import PATHS, component_times
from diffspace.families.flow.process import from_noise, from_velocity, from_x0
from diffspace.families.flow.samplers import SAMPLERS
from diffspace.families.gaussian.schedules import SoftConditioning
from diffspace.likelihood import ode_nll
from diffspace.metrics.bpd import ode_bpd
from diffspace.nets import build_net
from diffspace.noise import PerSampleGenerator
from diffspace.process import DataFacts, build_process, family, get_sampler, restore_process

FLOW_SAMPLERS = tuple(SAMPLERS)
# steps per sampler: Euler is 1st order; midpoint and Heun 2nd; dopri5 chooses its own; EM needs a fine grid
STEPS = {"euler": 100, "midpoint": 20, "heun": 20, "dopri5": 1, "euler_maruyama": 200}
Z_LIMIT = 5.0  # |error| / SE over all covariance entries, as tests/test_samplers.py
LABELS = torch.tensor([0.0, 1.0, 2.5, 4.0], dtype=torch.float64).view(1, 2, 2)


def flow_process(mean: torch.Tensor, cov: torch.Tensor, num_fit: int = 4000,
                 **options) -> tuple[FlowMatching, FlowOracle]:
    """A flow built from config options (data-fitted parts fitted on exact samples) and its exact oracle."""
    shape = tuple(mean.shape)
    chol = torch.linalg.cholesky(cov)
    noise = torch.randn(num_fit, cov.shape[0], generator=gen(1234), dtype=torch.float64)
    data = (mean.flatten() + noise @ chol.T).view(num_fit, *shape).float()
    process = build_process(FlowConfig(**options), data=data)
    return process, FlowOracle(process, mean, cov)


def soft_flow(softness: float = 1.0, path: str = "ot", **options) -> FlowMatching:
    """A 1×2×2 soft flow with labels LABELS (white prior, pixel basis), float64."""
    from diffspace.families.gaussian.priors import white_prior
    from diffspace.spaces import PixelBasis

    schedule = SoftConditioning(LABELS, softness=softness, clip=True)
    return FlowMatching(PixelBasis(), white_prior((1, 2, 2)), PATHS[path](), schedule, **options).double()


# ----- paths and per-component times ------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(PATHS))
def test_paths_run_from_the_data_to_the_prior_with_their_derivatives(path: str) -> None:
    p = PATHS[path]()
    ends = p(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(ends.alpha, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-15)
    assert torch.allclose(ends.sigma, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-15)
    tau, h = torch.linspace(0.05, 0.95, 19, dtype=torch.float64), 1e-6
    point, up, down = p(tau), p(tau + h), p(tau - h)
    assert torch.allclose(point.d_alpha, (up.alpha - down.alpha) / (2 * h), atol=1e-8)
    assert torch.allclose(point.d_sigma, (up.sigma - down.sigma) / (2 * h), atol=1e-8)
    assert bool((point.det > 0).all())
    gamma = p.gamma(tau)
    assert torch.allclose(gamma, torch.log(point.sigma**2 / point.alpha**2), atol=1e-12)
    assert torch.allclose(p.tau_of_gamma(gamma), tau, atol=1e-12)
    assert torch.allclose(p.d_gamma(tau), (p.gamma(tau + h) - p.gamma(tau - h)) / (2 * h), rtol=1e-6)


def test_soft_times_start_at_the_data_end_at_the_prior_and_follow_the_windows() -> None:
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    schedule = SoftConditioning(LABELS, softness=0.5, clip=True).double()
    times = component_times(PATHS["ot"](), t, schedule)
    tau = times.tau.flatten(1)
    assert torch.allclose(tau[0], torch.zeros(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(tau[-1], torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert bool((tau.diff(dim=0) >= 0).all())
    start, end = schedule.active_window()
    inside = (t[:, None] > start.flatten()) & (t[:, None] < end.flatten())
    assert torch.equal(times.active.flatten(1).bool(), inside)  # moves exactly in its Gaussian soft window
    speed = times.d_tau.flatten(1)[inside]
    assert torch.allclose(speed, torch.full_like(speed, schedule.slope / 20.0))
    assert bool((tau[:, 0] <= tau[:, 3]).all())  # lower label = cleaner = generated earlier
    plain = component_times(PATHS["ot"](), t, SoftConditioning(LABELS, softness=1e7, clip=True).double())
    assert torch.allclose(plain.tau.flatten(1), t[:, None].expand(-1, 4), atol=1e-5)  # softness → ∞: τ_i = t


def test_a_per_sample_softness_gives_that_softness_times() -> None:
    process = soft_flow(1.0, softness_range=(0.5, 4.0))
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    mixed = process.times(t, torch.tensor([0.5, 2.0], dtype=torch.float64)).tau
    for b, s in enumerate((0.5, 2.0)):
        assert torch.allclose(mixed[b], soft_flow(s).times(t[b:b + 1]).tau[0], atol=1e-6)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_conversions_between_velocity_x0_and_noise_round_trip(path: str) -> None:
    g = gen(11)
    z0, z1 = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64), torch.randn(6, 1, 2, 2, generator=g,
                                                                                      dtype=torch.float64)
    point = PATHS[path]()(torch.rand(6, 1, 1, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05)
    z = point.alpha * z0 + point.sigma * z1
    w = point.d_alpha * z0 + point.d_sigma * z1
    for got, want in zip(from_velocity(point, z, w), (z0, z1)):
        assert torch.allclose(got, want, atol=1e-10)
    for got, want in zip(from_x0(point, z, z0), (w, z1)):
        assert torch.allclose(got, want, atol=1e-10)
    for got, want in zip(from_noise(point, z, z1), (w, z0)):
        assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("softness", [None, 0.4])
def test_the_velocity_is_the_time_derivative_of_the_path(softness: float | None) -> None:
    """d/dt [a(τ(t)) z₀ + s(τ(t)) z₁] = τ′ ⊙ w, by central differences away from the windows' kinks."""
    process = soft_flow(softness) if softness else build_process(FlowConfig(path="cosine"), facts=(1, 2, 2)).double()
    g = gen(3)
    z0, z1 = torch.randn(1, 1, 2, 2, generator=g, dtype=torch.float64), torch.randn(1, 1, 2, 2, generator=g,
                                                                                      dtype=torch.float64)
    h = 1e-7
    for t in (0.13, 0.41, 0.77):
        def state(s: float) -> torch.Tensor:
            point = process.times(torch.tensor([s], dtype=torch.float64)).point
            return point.alpha * z0 + point.sigma * z1

        times = process.times(torch.tensor([t], dtype=torch.float64))
        velocity = times.d_tau * process.target(times.point, z0, z1)
        assert torch.allclose((state(t + h) - state(t - h)) / (2 * h), velocity, atol=1e-6)


# ----- the oracle, scores and the SDE -----------------------------------------------------------------
@pytest.mark.parametrize("options", [dict(basis="fourier"), dict(basis="dct", schedule="soft", softness=0.5,
                                                                  path="cosine")], ids=["fourier", "dct-soft"])
def test_the_exact_score_is_the_gradient_of_the_exact_log_density(options: dict) -> None:
    mean, cov = random_field(4)
    process, oracle = flow_process(mean, cov, **options)
    process, oracle = process.double(), oracle.double()
    z = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=gen(2), requires_grad=True)
    (grad,) = torch.autograd.grad(oracle.state_log_density(z, 0.3).sum(), z)
    prediction = process.predict(oracle, z.detach(), torch.full((4,), 0.3, dtype=torch.float64))
    assert torch.allclose(prediction.score, grad, atol=1e-8)


def test_reverse_drift_is_the_velocity_minus_half_g_squared_times_the_score() -> None:
    mean, cov = correlated_2d()
    process, oracle = flow_process(mean, cov, basis="dct")
    z, t = torch.randn(7, 1, 1, 2, generator=gen(4)), torch.full((7,), 0.4)
    prediction = process.predict(oracle, z, t)
    drift, g = process.reverse_sde(z, t, prediction)
    velocity = process.pf_ode_velocity(z, t, prediction)
    assert torch.allclose(drift, velocity - 0.5 * g**2 * prediction.score, atol=1e-5)
    assert torch.allclose(g**2, 2 * prediction.context.times.point.sigma.expand_as(g), atol=1e-6)


@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_every_prediction_target_gives_the_same_exact_velocity(prediction: str) -> None:
    mean, cov = random_field(4)
    velocity_process, velocity_oracle = flow_process(mean, cov, basis="dct", path="cosine")
    process, oracle = flow_process(mean, cov, basis="dct", path="cosine", prediction=prediction, network_output="data")
    z, t = torch.randn(5, 1, 4, 4, generator=gen(5)), torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    ours = process.pf_ode_velocity(z, t, process.predict(oracle, z, t))
    theirs = velocity_process.pf_ode_velocity(z, t, velocity_process.predict(velocity_oracle, z, t))
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_the_loss_is_the_masked_mean_squared_velocity_error_and_the_oracle_minimises_it() -> None:
    """A zero network's loss is the mean of active · w² with the loss's own draws; the oracle's is lower, and for the
    plain OT flow a zero network scores E(z₁ − z₀)² = 1 + S_ii on average."""
    process = soft_flow(0.3)
    x = torch.randn(64, 1, 2, 2, generator=gen(6), dtype=torch.float64)
    zero = lambda x_t, t, **cond: torch.zeros_like(x_t)  # noqa: E731
    loss = process.loss(zero, x, gen(7))
    g = gen(7)
    from diffspace.noise import gaussian_noise, stratified_times

    t = stratified_times(64, g, "cpu")
    z1 = gaussian_noise((64, 1, 2, 2), g, "cpu")
    times = process.times(t.double())
    z0 = process.to_state(x)
    expected = (times.active * process.target(times.point, z0, z1.double()) ** 2).flatten(1).mean(1)
    assert torch.allclose(loss, expected, atol=1e-5)

    mean, cov = random_field(4)
    flat, oracle = flow_process(mean, cov)
    data = oracle.sample(4000, gen(8)).float()
    zero_loss, oracle_loss = flat.loss(zero, data, gen(9)), flat.loss(oracle, data, gen(9))
    analytic = 1 + torch.diagonal(cov).mean().item()
    assert abs(zero_loss.mean().item() - analytic) < 5 * zero_loss.std().item() / math.sqrt(4000)
    assert oracle_loss.mean() < zero_loss.mean() - 0.5


def test_training_dequantizes_data_with_levels() -> None:
    """With levels (resolved from the data) the loss is the continuous loss of x + u·2/(L − 1), u ~ U[−½, ½)."""
    from diffspace.likelihood import dequantize

    facts = DataFacts((1, 2, 2), 17)
    process = build_flow(family("flow").resolve(FlowConfig(), facts), facts, None)
    continuous = build_process(FlowConfig(), facts=DataFacts((1, 2, 2)))
    assert (process.levels, continuous.levels) == (17, 0)
    x = 2 * torch.randint(0, 17, (32, 1, 2, 2), generator=gen(0)).float() / 16 - 1
    net = lambda x_t, t, **cond: 0.5 * x_t  # noqa: E731
    g = gen(1)
    assert torch.equal(process.loss(net, x, gen(1)), continuous.loss(net, dequantize(x, 17, g), g))


# ----- every sampler reproduces Gaussian data ---------------------------------------------------------
@pytest.mark.parametrize("sampler", FLOW_SAMPLERS)
@pytest.mark.parametrize("basis", ["pixel", "fourier", "pca"])
@pytest.mark.parametrize("prior", ["white", "fitted"])
def test_every_sampler_reproduces_the_random_field_covariance(sampler: str, basis: str, prior: str) -> None:
    mean, cov = random_field(8)
    network_input = "whitened" if prior == "fitted" else "data"
    process, oracle = flow_process(mean, cov, basis=basis, prior=prior, network_input=network_input)
    result = get_sampler(sampler)(process, oracle, (3000, 1, 8, 8), STEPS[sampler], gen(7))
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


@pytest.mark.parametrize(("sampler", "prediction"), [*((name, "velocity") for name in FLOW_SAMPLERS),
                                                     *((name, p) for name in ("heun", "euler_maruyama")
                                                       for p in ("x0", "eps"))])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_correlated_2d_gaussian_with_every_path_and_prediction(sampler: str, path: str, prediction: str) -> None:
    mean, cov = correlated_2d()
    process, oracle = flow_process(mean, cov, basis="dct", path=path, prediction=prediction)
    result = get_sampler(sampler)(process, oracle, (20000, 1, 1, 2), STEPS[sampler], gen(8))
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


@pytest.mark.parametrize(("sampler", "size"), [("heun", 8), ("heun", 16), ("euler_maruyama", 8)])
def test_function_space_flow_with_a_trace_class_prior(sampler: str, size: int) -> None:
    """The flow-grf process (Fourier basis, power-law prior, data-space output and loss) at two resolutions. The field
    is 1/N of the prior's scale, so the path's interesting part is near t = 0: the grid is refined there (ρ = 2;
    a uniform Heun grid of 20 steps fails at 16×16)."""
    mean, cov = random_field(size)
    options = {k: v for k, v in dataclasses.asdict(load_preset("flow-grf").process).items() if k != "kind"}
    process, oracle = flow_process(mean, cov, **options)
    assert process.capabilities.resolution_free
    result = get_sampler(sampler)(process, oracle, (3000, 1, size, size), STEPS[sampler], gen(9), rho=2.0)
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


def test_16x16_field_with_a_fitted_fourier_prior_and_soft_times() -> None:
    mean, cov = random_field(16)
    process, oracle = flow_process(mean, cov, basis="fourier", prior="fitted", schedule="soft", labels="basis",
                                   softness=0.5, network_input="whitened")
    result = get_sampler("heun")(process, oracle, (3000, 1, 16, 16), 40, gen(9))
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


def test_a_wrong_model_is_detected() -> None:
    """The covariance check has power: the exact velocity of a 20%-wider Gaussian fails it."""
    mean, cov = random_field(8)
    process, oracle = flow_process(mean, 1.2 * cov, basis="fourier")
    result = get_sampler("heun")(process, oracle, (3000, 1, 8, 8), 20, gen(7))
    assert covariance_z_scores(result.samples, mean, cov)[0] > Z_LIMIT


def test_nfe_callbacks_and_determinism() -> None:
    mean, cov = correlated_2d()
    process, oracle = flow_process(mean, cov)
    seen: list[dict] = []
    for name, expected in [("euler", 10), ("midpoint", 20), ("heun", 21), ("euler_maruyama", 11), ("dopri5", None)]:
        seen.clear()
        first = get_sampler(name)(process, oracle, (5, 1, 1, 2), 10, gen(1), callback=seen.append)
        again = get_sampler(name)(process, oracle, (5, 1, 1, 2), 10, gen(1))
        assert (expected is None or first.nfe == expected) and torch.equal(first.samples, again.samples)
        assert [s["i"] for s in seen] == list(range(10)) and seen[-1]["t"] == 0.0
        assert all(s["denoised"].shape == s["x"].shape for s in seen)
    assert get_sampler("euler")(process, oracle, (5, 1, 1, 2), 10, gen(1), denoise=True).nfe == 11
    grid = torch.tensor([1.0, 0.6, 0.2, 0.0])
    assert get_sampler("midpoint")(process, oracle, (5, 1, 1, 2), grid=grid, generator=gen(1)).nfe == 6
    with pytest.raises(ValueError, match="sampler 'pc' does not fit FlowMatching"):
        get_sampler("pc")(process, oracle, (5, 1, 1, 2), 10, gen(1))


def test_dopri5_is_torchdiffeqs_method_on_each_sample_alone() -> None:
    """On each sample alone torchdiffeq's dopri5 reaches the same sample (within its tolerance; its last step
    overshoots and interpolates, ours lands on t = 0); in a batch, sample i does not depend on the others (the
    step size is every sample's own); the denoised estimate at each grid time is the exact E[z₀ | z_t] there."""
    mean, cov = random_field(4)
    process, oracle = flow_process(mean, cov, basis="fourier")
    process, oracle = process.double(), oracle.double()
    start = torch.randn(6, 1, 4, 4, generator=gen(3), dtype=torch.float64)
    seen: list[dict] = []
    batch = get_sampler("dopri5")(process, oracle, (6, 1, 4, 4), 2, x_init=start, rtol=1e-8, atol=1e-8,
                                  callback=seen.append)
    for i in range(6):
        def velocity(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            time = t.expand(1)
            return process.pf_ode_velocity(z, time, process.predict(oracle, z, time))

        times = torch.tensor([1.0, 0.0], dtype=torch.float64)
        reference = process.from_state(odeint(velocity, start[i:i + 1], times, rtol=1e-8, atol=1e-8)[-1])
        assert torch.allclose(batch.samples[i:i + 1], reference, atol=1e-6)
        alone = get_sampler("dopri5")(process, oracle, (1, 1, 4, 4), 2, x_init=start[i:i + 1], rtol=1e-8, atol=1e-8)
        assert torch.allclose(alone.samples, batch.samples[i:i + 1], atol=1e-12, rtol=0)
    middle = seen[0]
    exact = oracle.posterior_means(middle["x"], torch.full((6,), 0.5, dtype=torch.float64))[0]
    assert middle["t"] == 0.5 and torch.allclose(middle["denoised"], exact, atol=1e-10)


# ----- likelihoods --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["2d-pixel-ot", "2d-pca-soft", "field-dct-cosine", "2d-x0"])
def test_the_ode_likelihood_is_the_exact_log_density_of_the_data(case: str) -> None:
    """The flow starts at the data and ends at N(0, I) exactly: −log p from the shared ODE likelihood equals
    −log N(x; μ, S) with no smoothing and no prior mismatch; `ode_bpd` reports it in bits/dim."""
    if case == "field-dct-cosine":
        mean, cov = random_field(4)
        process, oracle = flow_process(mean, cov, basis="dct", path="cosine")
    elif case == "2d-pca-soft":
        mean, cov = correlated_2d()
        process, oracle = flow_process(mean, cov, basis="pca", prior="fitted", schedule="soft", softness=0.7)
    else:
        mean, cov = correlated_2d()
        process, oracle = flow_process(mean, cov, prediction="x0" if case == "2d-x0" else "velocity")
    process, oracle = process.double(), oracle.double()
    x = oracle.sample(6, gen(4))
    result = ode_nll(process, oracle, x, divergence="exact", rtol=1e-7, atol=1e-7)
    assert torch.allclose(result.nll, -oracle.log_density(x), atol=1e-3)
    bits = ode_bpd(process, oracle, x, None, divergence="exact", rtol=1e-7, atol=1e-7)
    assert bits.value == pytest.approx(float(oracle.data_bits_per_dim(x).mean()), abs=1e-3)


def elbo_gap(process, model, truth, n: int, draws: int, seed: int) -> tuple[float, float, torch.Tensor]:
    """Mean and SE of (−ELBO of `model` − exact NLL under `truth`) in bits/dim on data from `truth`, and the draws."""
    g = gen(seed)
    x = truth.sample(n, g)
    bound = torch.stack([process.nll_bound(model, x.float(), g).double() for _ in range(draws)]).mean(0)
    gap = bound - truth.data_bits_per_dim(x)
    return gap.mean().item(), gap.std().item() / math.sqrt(n), bound


@pytest.mark.parametrize("options", [
    dict(basis="pixel"),
    dict(basis="dct", path="cosine", prediction="eps"),
    dict(basis="pca", prior="fitted", schedule="soft", labels="basis", softness=0.5, network_input="whitened"),
    dict(basis="fourier", prior="fitted", schedule="soft", labels="log_variance", path="cosine"),
], ids=["pixel-ot", "dct-cosine-eps", "pca-soft", "fourier-soft-cosine"])
def test_the_negative_elbo_bounds_the_exact_nll_with_a_small_gap(options: dict) -> None:
    mean, cov = correlated_2d()
    process, oracle = flow_process(mean, cov, **options)
    gap, se, _ = elbo_gap(process, oracle, oracle, n=4000, draws=20, seed=1)
    assert gap > -3 * se  # a bound: never significantly below the exact NLL
    assert gap < 3 * se + 0.01  # and tight: within 0.01 bits/dim


def test_the_elbo_of_the_exact_flow_is_the_gaussian_familys_elbo() -> None:
    """With the exact predictions, the bound depends on the log-SNR range and the noise prediction alone: the flow's
    estimate equals the Gaussian family's (log-SNR-linear over the same range), draw by draw."""
    mean, cov = correlated_2d()
    flow, flow_oracle = flow_process(mean, cov, basis="dct", path="cosine")
    gaussian, gaussian_oracle = oracle_process(mean, cov, basis="dct", schedule="logsnr_linear")
    x = flow_oracle.sample(2000, gen(2)).float()
    ours, theirs = flow.nll_bound(flow_oracle, x, gen(3)), gaussian.nll_bound(gaussian_oracle, x, gen(3))
    assert torch.allclose(ours, theirs, atol=2e-4)


def test_the_elbo_detects_a_wrong_model() -> None:
    mean, cov = correlated_2d()
    process, truth = flow_process(mean, cov)
    wrong = FlowOracle(process, mean, cov * torch.tensor([[1.0, 0.25], [0.25, 1.0]], dtype=torch.float64))
    gap, se, _ = elbo_gap(process, wrong, truth, n=4000, draws=10, seed=3)
    x = truth.sample(20000, gen(9))
    kl_bits = (truth.log_density(x) - wrong.log_density(x)).mean().item() / (2 * math.log(2))
    assert gap > 5 * se and gap > 0.8 * kl_bits


def test_the_elbo_at_a_conditioned_softness_is_that_softness_elbo() -> None:
    net = lambda x, t, **cond: 0.3 * x  # noqa: E731 — a fixed prediction that ignores the softness
    x = torch.randn(6, 1, 2, 2, generator=gen(7), dtype=torch.float64)
    ranged = soft_flow(1.0, softness_range=(0.5, 4.0))
    for s in (0.5, 2.0):
        assert torch.allclose(ranged.nll_bound(net, x, gen(8), softness=s), soft_flow(s).nll_bound(net, x, gen(8)),
                              rtol=1e-5)


# ----- the autoregressive limit -------------------------------------------------------------------------
@pytest.mark.parametrize("basis", ["pixel", "dct"])
def test_small_softness_generates_the_components_one_after_the_other(basis: str) -> None:
    """Softness 0.02: the window of the first component (lowest label) ends before the second's begins; while the
    first is generated the second stays exactly at its prior draw, and at the end the second given the first follows
    the exact conditional z₂ | z₁ ~ N(ρ' z₁ + …, ·) of the data in state coordinates (slope and residual variance
    within 5 standard errors)."""
    mean, cov = torch.zeros(1, 1, 2, dtype=torch.float64), torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    process, oracle = flow_process(mean, cov, basis=basis, schedule="soft", labels="basis", softness=0.02)
    start, end = process.schedule.active_window()
    first, second = (0, 1)
    assert end.flatten()[second].item() < start.flatten()[first].item()  # disjoint: a·Δl ≥ γ_max − γ_min
    state_cov = oracle.state_covariance
    slope_exact = (state_cov[0, 1] / state_cov[0, 0]).item()
    residual_exact = (state_cov[1, 1] - state_cov[0, 1] ** 2 / state_cov[0, 0]).item()
    n = 20000
    for name in ("heun", "euler_maruyama"):
        trajectory: list[tuple[float, torch.Tensor]] = []
        result = get_sampler(name)(process, oracle, (n, 1, 1, 2), 200, gen(6),
                                   callback=lambda info: trajectory.append((info["t"], info["x"].clone())))
        initial = trajectory[0][1]
        during_first = [z for t, z in trajectory if t >= start.flatten()[first].item()]
        assert all(torch.equal(z[..., second], initial[..., second]) for z in during_first)
        assert not torch.equal(during_first[-1][..., first], initial[..., first])
        z = process.to_state(result.samples.float()).double().flatten(1)
        z1, z2 = z[:, first], z[:, second]
        slope = (z1 * z2).mean() / (z1 * z1).mean()
        residual = (z2 - slope * z1).var()
        assert abs(z1.var().item() - state_cov[0, 0].item()) < 5 * state_cov[0, 0].item() * math.sqrt(2 / n)
        assert abs(slope.item() - slope_exact) < 5 * math.sqrt(residual_exact / (n * state_cov[0, 0].item()))
        assert abs(residual.item() - residual_exact) < 5 * residual_exact * math.sqrt(2 / n)


# ----- configs, building and restoring ------------------------------------------------------------------
def test_config_rules_and_messages() -> None:
    with pytest.raises(ValueError, match="process.softness is read by the soft-conditioning schedule only"):
        FlowConfig(softness=0.3)
    with pytest.raises(ValueError, match="gamma_min < process.gamma_max"):
        FlowConfig(gamma_min=1.0, gamma_max=0.0)
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        RunConfig().with_overrides(["process.kind=flow", "process.path=cosin"])
    cfg = RunConfig().with_overrides(["process.kind=flow", "process.path=cosine", "process.schedule=soft",
                                      "process.softness=0.5", "sample.sampler=dopri5"])
    validate_names(cfg)
    assert (cfg.process.kind, cfg.process.path, cfg.process.softness) == ("flow", "cosine", 0.5)
    with pytest.raises(ConfigError, match="sampler 'pc' does not fit process.kind=flow"):
        validate_names(RunConfig().with_overrides(["process.kind=flow", "sample.sampler=pc"]))
    with pytest.raises(ConfigError, match="process.diffusion is a knob of the multivariate family"):
        RunConfig().with_overrides(["process.kind=flow", "process.diffusion=cld"])
    record = family("flow")
    assert record.resolve(FlowConfig(), DataFacts((1, 8, 8), 256)).dequantize is True
    assert record.resolve(FlowConfig(), DataFacts((1, 8, 8))).dequantize is False
    with pytest.raises(ValueError, match="the data are continuous"):
        record.resolve(FlowConfig(dequantize=True), DataFacts((1, 8, 8)))
    with pytest.raises(ValueError, match="resolve the config"):
        build_flow(FlowConfig(), DataFacts((1, 8, 8)), None)
    v1 = RunConfig.from_dict({"process": {"kind": "flow", "basis": "dct", "flow": {"path": "cosine"}}})
    assert (v1.process.kind, v1.process.path, v1.process.basis) == ("flow", "cosine", "pixel")


def test_restoring_a_data_fitted_flow_from_its_state() -> None:
    """A PCA basis, fitted prior and data-variance labels come back from the state dict alone: same losses, and the
    data-fitted process is not resolution free (the plain ones are)."""
    data = torch.randn(300, 1, 4, 4, generator=gen(3)) * torch.linspace(0.1, 1, 16).view(1, 1, 4, 4)
    cfg = FlowConfig(basis="pca", prior="fitted", schedule="soft", labels="data_log_variance", softness=0.5,
                     network_input="whitened", dequantize=False)
    process = build_process(cfg, data)
    restored = restore_process(cfg, DataFacts((1, 4, 4)), process.state_dict())
    net = lambda x, t, **cond: 0.5 * x  # noqa: E731
    assert torch.equal(process.loss(net, data[:8], gen(1)), restored.loss(net, data[:8], gen(1)))
    assert not process.capabilities.resolution_free
    assert build_process(FlowConfig(basis="fourier", prior="power_law", prior_exponent=2.0),
                         facts=(1, 4, 4)).capabilities.resolution_free


FLOW_PRESETS = [name for name in preset_names() if name.startswith("flow-")]


def test_the_flow_presets_exist() -> None:
    assert {"flow-digits", "flow-mnist", "flow-mnist-soft", "flow-grf"} <= set(FLOW_PRESETS)


@pytest.mark.parametrize("name", FLOW_PRESETS)
def test_flow_presets_build_train_and_sample(name: str) -> None:
    """Each preset's process and (narrowed) network on 8×8 stand-in data: a finite loss and bound, two sampler steps."""
    cfg = load_preset(name)
    validate_names(cfg)
    levels = None if cfg.data.name == "grf" else 256
    data = torch.rand(64, 1, 8, 8, generator=gen(0)) * 2 - 1
    process = build_process(cfg.process, data, DataFacts((1, 8, 8), levels))
    narrow = (dict(modes=3, width=8, layers=1) if cfg.model.kind == "fno" else
              dict(channels=8, channel_mult=(1, 2), num_res_blocks=1))
    net = build_net(dataclasses.replace(cfg.model, **narrow), 1, 1, (8, 8))
    loss = process.loss(net, data[:4], gen(1))
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    assert torch.isfinite(process.nll_bound(net, data[:4], gen(2))).all()
    samples = get_sampler(cfg.sample.sampler)(process, net, (2, 1, 8, 8), 2, gen(2)).samples
    assert samples.shape == (2, 1, 8, 8) and torch.isfinite(samples).all()


def _cli(argv: list[str]) -> int:
    from diffspace.cli import main

    return main(argv)


FAST = ["train.steps=4", "train.batch_size=16", "train.device=cpu", "train.checkpoint_every=4", "sample.num=4",
        "sample.steps=2", "data.max_items=64", "train.log_every=2"]


def test_flow_digits_trains_samples_and_scores_from_the_command_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _cli(["train", "--preset", "flow-digits", "--run-dir", str(run), "--quiet", *FAST]) == 0
    assert (run / "samples" / "final.png").is_file() and (run / "model" / "model.json").is_file()
    for sampler, steps in (("heun", "3"), ("dopri5", "1"), ("euler_maruyama", "3")):
        out = tmp_path / f"{sampler}.npz"
        assert _cli(["sample", "--model", str(run / "model"), "--num", "3", "--steps", steps, "--sampler", sampler,
                     "--out", str(out)]) == 0
        samples = np.load(out)["samples"]
        assert samples.shape == (3, 1, 8, 8) and np.isfinite(samples).all()
    report = tmp_path / "eval.json"
    assert _cli(["eval", "--model", str(run / "model"), "--metrics", "bpd,ode_bpd", "--bpd-num", "4",
                 "--out", str(report)]) == 0
    import json

    entries = {e["metric"]: e for e in json.loads(report.read_text())["entries"]}
    assert entries["bpd"]["value"] > 0 and entries["ode_bpd"]["value"] > 0 and entries["ode_bpd"]["nfe"] > 0


def test_flow_grf_trains_at_n_and_samples_at_twice_n_from_the_command_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    tiny = ["data.resolution=8", "data.num_samples=64", "model.modes=3", "model.width=8", "model.layers=1"]
    assert _cli(["train", "--preset", "flow-grf", "--run-dir", str(run), "--quiet", *FAST, *tiny]) == 0
    out = tmp_path / "s.npz"
    assert _cli(["sample", "--run", str(run), "--num", "3", "--steps", "2", "--resolution", "16", "--out",
                 str(out)]) == 0
    assert np.load(out)["samples"].shape == (3, 1, 16, 16)


def test_per_sample_generators_make_samples_independent_of_the_batch() -> None:
    """Sample i of the SDE sampler depends on its own stream only (the ODE samplers' on their start state only)."""
    mean, cov = correlated_2d()
    process, oracle = flow_process(mean, cov, schedule="soft", softness=0.5)
    for name in FLOW_SAMPLERS:
        whole = get_sampler(name)(process, oracle, (6, 1, 1, 2), 5, PerSampleGenerator.for_indices(3, range(6)))
        parts = [get_sampler(name)(process, oracle, (3, 1, 1, 2), 5, PerSampleGenerator.for_indices(3, rows)).samples
                 for rows in (range(0, 3), range(3, 6))]
        assert torch.allclose(torch.cat(parts), whole.samples, atol=1e-6), name


def test_the_documented_flow_example_runs_and_matches_the_truth(capsys: pytest.CaptureFixture[str]) -> None:
    """The Python example of the flow family's documentation page, as written: the mean squared pixel of its 512 samples is
    within 5 standard errors of the exact one (SE² = 2 tr(C²)/(D² n) for the field's covariance C)."""
    import re

    from diffspace.families.gaussian.oracle import covariance_in_basis
    from diffspace.families.gaussian.priors import power_law_prior
    from diffspace.spaces import FourierBasis

    page = (Path(__file__).resolve().parents[1] / "docs" / "families" / "flow.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    exec(compile(block, "docs/families/flow.md", "exec"), {"__name__": "docs"})
    samples, exact = map(float, re.search(r"mean squared pixel ([\d.]+) \(exact ([\d.]+)\)",
                                          capsys.readouterr().out).groups())
    variance = power_law_prior(FourierBasis(), (1, 8, 8), tau=2.0, exponent=2.5, amplitude=0.3).variance.double()
    covariance = covariance_in_basis(FourierBasis(), variance)
    se = math.sqrt(2 * float((covariance @ covariance).trace())) / (64 * math.sqrt(512))
    assert abs(samples - exact) < 5 * se


def test_flow_samplers_take_the_sample_configs_grid_knobs_and_their_own_default_steps() -> None:
    """grid="uniform" with rho and t_end (sample.grid, sample.rho, sample.t_end) is the grid t_i = t_end +
    (1 − t_end)(1 − i/N)^ρ; a grid a flow does not build is refused by name; without steps euler takes its own 100,
    and the shared heun its 40 on the uniform grid (a flow builds no edm grid)."""
    from diffspace.sampling import time_grid

    process = build_process(FlowConfig(), facts=(1, 2, 2))
    net = lambda z, t, **c: -z  # noqa: E731
    shape = (3, 1, 2, 2)
    named = SAMPLERS["euler"](process, net, shape, 6, gen(0), grid="uniform", rho=2.0, t_end=0.1)
    explicit = SAMPLERS["euler"](process, net, shape, None, gen(0), grid=time_grid(6, 2.0, 0.1))
    assert torch.equal(named.samples, explicit.samples)
    with pytest.raises(ValueError, match="grid 'edm' is not offered by FlowMatching; its grids: uniform"):
        SAMPLERS["euler"](process, net, shape, 6, gen(0), grid="edm")
    assert SAMPLERS["euler"](process, net, shape, None, gen(0)).nfe == 100
    assert SAMPLERS["heun"](process, net, shape, None, gen(0)).nfe == 2 * 40 + 1
    cfg = load_preset("flow-digits").with_overrides(["sample.sampler=euler", "sample.rho=2", "sample.t_end=0.05"])
    validate_names(cfg)
    assert cfg.sample.sampler_options() == {"rho": 2.0, "t_end": 0.05}
