"""GaussianDiffusion: forward marginals, losses, reverse-time quantities, GUD limits."""

from __future__ import annotations

import math

import pytest
import torch

from gaussian_cases import correlated_2d, noisy, oracle_process, random_field
from diffspace.families.gaussian.oracle import GaussianOracle
from diffspace.families.gaussian.priors import fitted_prior, white_prior
from diffspace.families.gaussian import GaussianConfig
from diffspace.process import build_process
from diffspace.families.gaussian.process import GaussianDiffusion, stratified_times
from diffspace.samplers import euler_maruyama, heun
from diffspace.families.gaussian.schedules import LogSNRLinear, SoftConditioning
from diffspace.spaces import DCTBasis, PixelBasis


def test_forward_sde_simulation_matches_closed_form_marginal() -> None:
    """Fine-step EM of dz = −½γ′σ²z dt + √(γ′σ²) dW from t = 0 matches N(α_t z₀, σ_t²) per component."""
    labels = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 2, 2)
    process = GaussianDiffusion(PixelBasis(), white_prior((1, 2, 2)), SoftConditioning(labels, softness=0.25))
    process = process.double()
    n, steps, t_final = 20000, 2000, 0.7
    g = torch.Generator().manual_seed(0)
    z0 = torch.tensor([1.5, -0.5, 0.8, 2.0], dtype=torch.float64).view(1, 1, 2, 2)
    zero = torch.zeros(1, dtype=torch.float64)
    z = noisy(process, z0, zero, torch.randn(n, 1, 2, 2, generator=g, dtype=torch.float64))
    h = t_final / steps
    for i in range(steps):
        level = process.noise_level(torch.full((1,), i * h, dtype=torch.float64))
        drift = -0.5 * level.dgamma * level.sigma**2 * z
        z = z + h * drift + torch.sqrt(level.dgamma * level.sigma**2 * h) * torch.randn(z.shape, generator=g, dtype=torch.float64)
    level = process.noise_level(torch.full((1,), t_final, dtype=torch.float64))
    mean, sigma = (level.alpha * z0)[0], level.sigma[0]
    assert ((z.mean(0) - mean).abs() / (sigma / math.sqrt(n))).max() < 5
    assert ((z.var(0) - sigma**2).abs() / (sigma**2 * math.sqrt(2 / n))).max() < 5


def test_state_coordinates_round_trip_and_whiten_the_prior() -> None:
    mean, cov = random_field(8)
    process, oracle = oracle_process(mean, cov, basis="dct", prior="fitted")
    x = oracle.sample(5000, torch.Generator().manual_seed(1)).float()
    z = process.to_state(x)
    assert (process.from_state(z) - x).abs().max() < 1e-4
    assert ((z.var(0) - 1).abs() < 0.15).all()  # fitted on 4000 other samples: unit variance per component


def test_reverse_drift_and_probability_flow_are_consistent() -> None:
    """Reverse drift = f z − g² s and PF velocity = f z − ½ g² s with f = −½γ′σ², g² = γ′σ²."""
    mean, cov = correlated_2d()
    process, oracle = oracle_process(mean, cov, basis="dct")
    z = torch.randn(7, 1, 1, 2)
    t = torch.full((7,), 0.4)
    prediction = process.predict(oracle, z, t)
    drift, g = process.reverse_sde(z, t, prediction)
    velocity = process.pf_ode_velocity(z, t, prediction)
    score = prediction.score
    level = process.noise_level(t)
    f = -0.5 * level.dgamma * level.sigma**2
    assert torch.allclose(drift, f * z - g**2 * score, atol=1e-5)
    assert torch.allclose(velocity, f * z - 0.5 * g**2 * score, atol=1e-5)
    assert torch.allclose(g**2, level.dgamma * level.sigma**2)


def test_exact_score_is_the_gradient_of_the_exact_log_density() -> None:
    mean, cov = correlated_2d()
    process, oracle = oracle_process(mean, cov, basis="fourier")
    process, oracle = process.double(), oracle.double()
    z = torch.randn(4, 1, 1, 2, dtype=torch.float64, requires_grad=True)
    log_p = oracle.state_log_density(z, 0.3).sum()
    (grad,) = torch.autograd.grad(log_p, z)
    assert torch.allclose(process.predict(oracle, z.detach(), torch.full((4,), 0.3, dtype=torch.float64)).score, grad, atol=1e-6)


def test_eps_score_and_x0_conversions_round_trip() -> None:
    mean, cov = correlated_2d()
    process, _ = oracle_process(mean, cov, basis="dct", schedule="soft", softness=0.3)
    g = torch.Generator().manual_seed(11)
    z0, eps = torch.randn(6, 1, 1, 2, generator=g), torch.randn(6, 1, 1, 2, generator=g)
    t = torch.rand(6, generator=g)
    z = noisy(process, z0, t, eps)
    assert torch.allclose(process.x0_from_eps(z, eps, t), z0, atol=1e-4)
    assert torch.allclose(process.eps_from_x0(z, z0, t), eps, atol=1e-4)
    assert torch.allclose(process.eps_from_score(process.score_from_eps(eps, t), t), eps, atol=1e-6)


def test_eps_loss_of_the_oracle_is_the_posterior_variance_and_below_a_zero_net() -> None:
    mean, cov = random_field(4)
    process, oracle = oracle_process(mean, cov, basis="fourier")
    x = oracle.sample(4000, torch.Generator().manual_seed(2)).float()
    oracle_loss = process.loss(oracle, x, torch.Generator().manual_seed(3))
    zero_loss = process.loss(lambda x_t, t: torch.zeros_like(x_t), x, torch.Generator().manual_seed(3))
    assert zero_loss.shape == (4000,)
    assert abs(zero_loss.mean().item() - 1.0) < 5 * zero_loss.std().item() / math.sqrt(4000)
    assert oracle_loss.mean() < zero_loss.mean() - 0.1


def test_stratified_times_cover_the_interval() -> None:
    t = stratified_times(8, torch.Generator().manual_seed(0), "cpu")
    gaps = torch.sort(t).values.diff()
    assert torch.allclose(gaps, torch.full((7,), 1 / 8), atol=1e-6) and bool(((t >= 0) & (t < 1)).all())


def test_unit_hierarchy_soft_process_is_standard_diffusion_exactly() -> None:
    """a = 1, l = −log λ, whitened fitted prior ≡ unwhitened white-prior log-SNR-linear diffusion.

    Both see the same observation x₀ + e^{γ/2}·noise in their own coordinates; their exact
    denoisers must agree in data space.
    """
    mean, cov = random_field(4)
    chol = torch.linalg.cholesky(cov)
    data = (torch.randn(4000, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64) @ chol.T).view(-1, 1, 4, 4)
    basis = DCTBasis()
    prior = fitted_prior(basis, data.float())
    prior.mean.zero_()
    labels = prior.log_variance_labels()
    soft = GaussianDiffusion(basis, prior, SoftConditioning(labels, softness=1.0)).double()
    standard_schedule = LogSNRLinear(-10 - labels.max().item(), 10 - labels.min().item())
    standard = GaussianDiffusion(basis, white_prior((1, 4, 4)), standard_schedule).double()
    soft_oracle, standard_oracle = GaussianOracle(soft, mean, cov), GaussianOracle(standard, mean, cov)
    x0 = data[:64]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for t in (0.2, 0.5, 0.8):
        tt = torch.full((64,), t, dtype=torch.float64)
        standard_z = noisy(standard, standard.to_state(x0), tt, noise)  # c_t = α c₀ + σ η
        # the same observation, rescaled to the soft process's whitened variance-preserving state
        level_std, level_soft = standard.noise_level(tt), soft.noise_level(tt)
        scaled = standard_z / level_std.alpha  # = c₀ + e^{γ/2} η
        soft_z = level_soft.alpha * soft.to_state(standard.from_state(scaled))
        assert torch.allclose(level_soft.gamma, level_std.gamma - prior.variance.double().log(), atol=1e-4)
        x_hat_standard = standard.from_state(standard.predict(standard_oracle, standard_z, tt).denoised)
        x_hat_soft = soft.from_state(soft.predict(soft_oracle, soft_z, tt).denoised)
        assert torch.allclose(x_hat_soft, x_hat_standard, atol=1e-4)


def test_autoregressive_limit_on_a_correlated_pair() -> None:
    """Small softness + clipping: x₁ is generated while x₂ stays frozen, then x₂ | x₁ ~ N(ρ x₁, 1 − ρ²)."""
    rho = 0.8
    mean, cov = correlated_2d(rho=rho, scale=1.0)
    mean = torch.zeros_like(mean)
    process, oracle = oracle_process(mean, cov, schedule="soft", labels="column", softness=0.02, clip=True)
    start, end = process.schedule.active_window()
    first_start, second_end = start.flatten()[0].item(), end.flatten()[1].item()
    assert second_end < first_start  # disjoint windows: a Δl = 50 ≥ γ_max − γ_min = 20
    trajectory: list[tuple[float, torch.Tensor]] = []
    n = 20000
    for sampler in (heun, euler_maruyama):
        trajectory.clear()
        result = sampler(process, oracle, (n, 1, 1, 2), 400, torch.Generator().manual_seed(6),
                         callback=lambda info: trajectory.append((info["t"], info["x"].clone())))
        initial = trajectory[0][1]
        during_first = [z for t, z in trajectory if t >= first_start]
        assert all(torch.equal(z[..., 1], initial[..., 1]) for z in during_first)  # x₂ frozen
        assert not torch.equal(during_first[-1][..., 0], initial[..., 0])  # x₁ generated
        x = result.samples.double().flatten(1)
        x1, x2 = x[:, 0], x[:, 1]
        slope = (x1 * x2).mean() / (x1 * x1).mean()
        residual = x2 - slope * x1
        assert abs(x1.var().item() - 1) < 5 * math.sqrt(2 / n)
        assert abs(slope.item() - rho) < 5 * math.sqrt((1 - rho**2) / n)
        assert abs(residual.var().item() - (1 - rho**2)) < 5 * (1 - rho**2) * math.sqrt(2 / n)


def test_build_process_names_bad_options() -> None:
    with pytest.raises(ValueError, match="did you mean 'fourier'"):
        build_process(GaussianConfig(basis="fourrier"), facts=(1, 4, 4))
    with pytest.raises(ValueError, match="the pca basis is estimated from data: pass training images"):
        build_process(GaussianConfig(basis="pca"), facts=(1, 4, 4))
    with pytest.raises(ValueError, match="process.softness is read by the soft-conditioning schedule only"):
        GaussianConfig(softness=0.3)
    with pytest.raises(ValueError, match="weighting"):
        build_process(GaussianConfig(weighting="snr"), facts=(1, 4, 4))
    process = build_process(GaussianConfig(), facts=(1, 4, 4))
    with pytest.raises(ValueError, match=r"built for \(B, 1, 4, 4\)"):
        process.loss(lambda x, t: x, torch.zeros(2, 1, 5, 5))
