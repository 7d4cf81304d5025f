"""Multivariate diffusion: kernels against an ODE solver, stationarity, Kronecker structure, learned
(Q, D), the exact ELBO on Gaussian data, samplers on the augmented state, presets, train and sample."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import nn

from gaussian_cases import covariance_z_scores
from host_reads import host_reads
from multivariate_cases import F64, ExactEps, expected_nll, gaussian_data, make_process
from diffspace.build import build
from diffspace.sample import sample_model
from diffspace.config import ConfigError, RunConfig, load_preset, preset_names
from diffspace.process import DataFacts, build_process
from diffspace.families.multivariate import process as process_module
from diffspace.families.multivariate.kernels import (
    drift_matrix, expm_unit, kron_apply, kron_quadratic, matrix_fraction,
)
from diffspace.families.multivariate.process import Kernel, MultivariateDiffusion
from diffspace.metrics.bpd import elbo_bpd
from diffspace.families.multivariate.matrices import NUM_VARS, LearnedMatrices, fixed_matrices
from diffspace.families.multivariate.samplers import exp_ode, exp_sde, transport
from diffspace.samplers import euler_maruyama, heun
from diffspace.training import train

DIFFUSIONS = sorted(NUM_VARS)
ELBO_CASES = ["vp", "cld", "malda", "learned2"]
Z_LIMIT = 4.0  # |mean − exact| / SE for one Monte Carlo mean (two-sided p ≈ 6e-5)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _matrices(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, D) of a named diffusion; learned ones from random parameters of scale 1."""
    if name.startswith("learned"):
        torch.manual_seed(seed)
        with torch.no_grad():
            return LearnedMatrices(NUM_VARS[name], 1e-3, 1.0)()
    return fixed_matrices(name, 1.0, 1.0)


# ----- kernels ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DIFFUSIONS)
@pytest.mark.parametrize("start", ["point", "hybrid", "random"])
def test_matrix_fraction_kernel_equals_the_ode_solution(name: str, start: str) -> None:
    """Φ and Σ solve dΦ/dt = AΦ, dΣ/dt = AΣ + ΣAᵀ + ggᵀ with A = β(t)A₀, ggᵀ = 2β(t)D (DOP853, rtol 1e-12)."""
    process = make_process(name, seed=3)
    q, d = _matrices(name, seed=3)
    k = q.shape[0]
    a0 = drift_matrix(q, d, process.stationary_var)
    sigma0 = {"point": torch.zeros(k, k, dtype=F64), "hybrid": process.sigma0,
              "random": (lambda m: m @ m.T)(torch.randn(k, k, generator=_generator(1), dtype=F64))}[start]
    times = np.array([0.001, 0.05, 0.4, 1.0])

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        beta = float(process.schedule.beta(torch.tensor(t)))
        a, phi, cov = beta * a0.numpy(), y[: k * k].reshape(k, k), y[k * k:].reshape(k, k)
        return np.concatenate([(a @ phi).ravel(), (a @ cov + cov @ a.T + 2 * beta * d.numpy()).ravel()])

    y0 = np.concatenate([np.eye(k).ravel(), sigma0.numpy().ravel()])
    ode = solve_ivp(rhs, (0.0, 1.0), y0, method="DOP853", t_eval=times, rtol=1e-12, atol=1e-14)
    tau = process.schedule.integral(torch.tensor(times, dtype=F64))
    phi, cov = matrix_fraction(a0, 2 * d, tau, sigma0)
    for i in range(len(times)):
        assert np.allclose(phi[i].numpy(), ode.y[: k * k, i].reshape(k, k), rtol=0, atol=1e-9)
        assert np.allclose(cov[i].numpy(), ode.y[k * k:, i].reshape(k, k), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", DIFFUSIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_stationary_law_is_invariant(name: str, seed: int) -> None:
    """A₀Σ_∞ + Σ_∞A₀ᵀ + 2D = 0, and the kernel started at Σ_∞ stays at Σ_∞ (Φ Σ_∞ Φᵀ + … = Σ_∞)."""
    q, d = _matrices(name, seed)
    var = torch.tensor([1.0] + [0.7] * (q.shape[0] - 1), dtype=F64)
    a0 = drift_matrix(q, d, var)
    stationary = torch.diag(var)
    assert torch.allclose(a0 @ stationary + stationary @ a0.T + 2 * d, torch.zeros_like(d), atol=1e-13)
    _, cov = matrix_fraction(a0, 2 * d, torch.tensor([0.01, 1.0, 5.0], dtype=F64), stationary)
    assert torch.allclose(cov, stationary.expand_as(cov), atol=1e-9)


def test_the_vp_preset_is_the_closed_form_vp_kernel() -> None:
    """K = 1, Q = 0, D = ½: the VP SDE dx = −½β x dt + √β dW of the paper's baseline, with the same β range:
    Φ = e^{−½B(t)}, Σ = 1 − e^{−B(t)} (at t = 1 the mean coefficient is e^{−½·5.05} = 0.0801)."""
    process = make_process("vp")
    t = torch.tensor([0.001, 0.1, 0.5, 1.0], dtype=F64)
    big_b = 0.1 * t + 0.5 * (10.0 - 0.1) * t**2
    kernel = process.kernel(t)
    assert torch.allclose(kernel.phi[:, 0, 0], torch.exp(-0.5 * big_b), rtol=1e-12, atol=0)
    assert torch.allclose(kernel.cov[:, 0, 0], -torch.expm1(-big_b), rtol=1e-10, atol=0)
    assert float(kernel.phi[-1, 0, 0]) == pytest.approx(0.0801, abs=1e-4)


def test_equal_times_give_equal_kernels_and_a_repeated_time_is_computed_once(monkeypatch) -> None:
    process = make_process("malda")
    t = torch.tensor([0.3, 0.1, 0.3, 0.3, 0.1], dtype=F64)
    kernel = process.kernel(t)
    assert kernel.phi.shape == (5, 3, 3)
    assert torch.equal(kernel.cov[0], kernel.cov[2]) and torch.equal(kernel.cov[1], kernel.cov[4])
    sizes = []
    original = process_module.fraction_kernel
    monkeypatch.setattr(process_module, "fraction_kernel", lambda block, tau, *rest: (sizes.append(len(tau)),
                                                                                      original(block, tau, *rest))[1])
    repeated = process.kernel(torch.tensor([0.3], dtype=F64).expand(7))  # a sampler's t.expand(B)
    assert sizes == [1] and repeated.cov.shape == (7, 3, 3) and torch.equal(repeated.cov[6], kernel.cov[0])


@pytest.mark.parametrize("name", ["cld", "learned2"])
def test_the_kernel_at_a_time_does_not_depend_on_the_other_times_of_the_batch(name: str) -> None:
    """The doublings of the matrix fraction are fixed by B(1)·‖block‖₂, not by the batch's largest time, so a
    sample's kernel is the same whatever the batch holds (and bit for bit with its ends evaluated alongside)."""
    process = make_process(name)
    alone = process.kernel(torch.tensor([0.01], dtype=F64))
    batch = process.kernel(torch.tensor([0.01, 0.5, 1.0], dtype=F64))
    for name_ in ("phi", "cov", "chol", "linv"):
        assert torch.equal(getattr(alone, name_)[0], getattr(batch, name_)[0])
    t = torch.tensor([0.2, 0.7], dtype=F64)
    kernel, ends = process.kernel_with_ends(t)
    both = process.kernel(torch.tensor([0.2, 0.7, 1e-3, 1.0], dtype=F64))
    assert torch.allclose(kernel.cov, both.cov[:2], rtol=1e-14, atol=0)
    assert torch.allclose(ends.cov, both.cov[2:], rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["cld", "learned2"])
def test_the_kernel_reads_nothing_back_from_the_device_once_per_value_of_q_and_d(name: str, monkeypatch) -> None:
    """Once a value of (Q, D) has been checked (the covariance on the importance grid, ‖block‖₂), the kernel, its
    ends, the importance draw of t and the reverse SDE's diffusion make no host read (bool, float, item): none
    would be a CUDA synchronisation. An in-place update of the learned parameters (an optimizer step) makes the next
    call read again, and the kernel follows the new values."""
    process = make_process(name)
    t = torch.tensor([0.2, 0.7], dtype=F64)

    def calls() -> Kernel:
        kernel = process.kernel_with_ends(t)[0]
        process.importance_times(4, _generator(0), "cpu")
        with torch.no_grad():
            repeated = torch.tensor([0.5], dtype=F64).expand(3)
            process.reverse_sde(torch.zeros(3, process.num_vars, 1, 2), repeated,
                                process.predict(lambda u, s: u, torch.zeros(3, process.num_vars, 1, 2), repeated))
        return kernel

    calls()

    def refuse(*args, **kwargs):
        raise AssertionError("a host read in the kernel")

    for method in ("__bool__", "__float__", "__int__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    before = calls()
    if not process.learned:
        return
    with torch.no_grad():
        process.matrices.b.add_(0.1)  # D = BBᵀ + εI changes (Q = G − Gᵀ would not, for a constant)
    with pytest.raises(AssertionError, match="host read"):
        process.kernel(t)
    monkeypatch.undo()
    after = process.kernel(t)
    fresh = make_process(name)
    with torch.no_grad():
        fresh.matrices.b.copy_(process.matrices.b)
    assert not torch.allclose(after.cov, before.cov) and torch.equal(after.cov, fresh.kernel(t).cov)


@pytest.mark.parametrize("name", ["cld", "learned2"])
@pytest.mark.parametrize("sampler", [euler_maruyama, heun, exp_ode, exp_sde])
def test_a_sampler_step_reads_nothing_back_from_the_device(name: str, sampler) -> None:
    """Sampling makes its host reads (checks of the kernel, ‖block‖₂, D^½; the exponential integrators' grid as a
    list and their noise factors' batched eigendecomposition) once, not per step: 5 and 20 steps from a fresh
    process make as many."""
    net = lambda u, t: 0.1 * u  # noqa: E731
    reads = [host_reads(lambda: sampler(make_process(name), net, (3, 1, 1, 2), steps, _generator(0)))
             for steps in (5, 20)]
    assert reads[0] == reads[1]


def test_loading_a_state_drops_the_cached_tables() -> None:
    process = make_process("cld")
    process.importance_times(4, _generator(0), "cpu")
    process.kernel_with_ends(torch.tensor([0.5], dtype=F64))
    assert process._importance_table is not None and process._ends is not None
    process.load_state_dict(process.state_dict())
    assert process._importance_table is None and process._ends is None and process._reach_cache is None


def test_the_taylor_exponential_equals_matrix_exp_inside_the_unit_ball() -> None:
    x = torch.randn(200, 6, 6, generator=_generator(0), dtype=F64)
    x = x / torch.linalg.matrix_norm(x, ord=2)[:, None, None] * torch.rand(200, 1, 1, generator=_generator(1),
                                                                           dtype=F64)
    # both round off (about n·ε·‖e^X‖ each); a degree-12 polynomial would be off by 1/13! ≈ 1.6e-10 here
    assert torch.allclose(expm_unit(x), torch.linalg.matrix_exp(x), rtol=0, atol=16 * torch.finfo(F64).eps * math.e)
    with pytest.raises(ValueError, match="max_norm"):
        matrix_fraction(x[0], x[0], torch.ones(1, dtype=F64), x[0], max_norm=2.0)


# ----- Kronecker structure -------------------------------------------------------------------
def test_batched_kronecker_operations_equal_dense_matrices() -> None:
    g = _generator(0)
    batch, k, c, h, w = 3, 3, 2, 1, 3
    d = c * h * w
    m = torch.randn(batch, k, k, generator=g, dtype=F64)
    u = torch.randn(batch, k * c, h, w, generator=g, dtype=F64)
    dense = torch.stack([torch.kron(m[b], torch.eye(d, dtype=F64)) for b in range(batch)])
    flat = u.flatten(1)
    assert torch.allclose(kron_apply(m, u).flatten(1), (dense @ flat[..., None])[..., 0], atol=1e-12)
    assert torch.allclose(kron_quadratic(m, u), torch.einsum("bi,bij,bj->b", flat, dense, flat), atol=1e-12)


def test_process_quantities_equal_their_dense_forms() -> None:
    """Score, reverse drift, Tweedie denoiser and prior cross-entropy against dK×dK matrices (d = 6)."""
    torch.manual_seed(0)
    shape = (2, 1, 3)
    d = math.prod(shape)
    process = build_process(_config("learned3"), facts=shape).double()
    g = _generator(1)
    u = torch.randn(4, 3 * 2, 1, 3, generator=g, dtype=F64)
    eps_hat = torch.randn(u.shape, generator=g, dtype=F64)
    t = torch.tensor([0.2, 0.2, 0.7, 0.05], dtype=F64)
    net = lambda x, time: eps_hat  # noqa: E731
    kernel = process.kernel(t)
    eye = torch.eye(d, dtype=F64)
    kron = lambda m: torch.kron(m.detach().contiguous(), eye)  # noqa: E731
    for b in range(4):
        chol = kron(kernel.chol[b])
        score = -torch.linalg.solve(chol.T, eps_hat[b].flatten())
        assert torch.allclose(process.predict(net, u, t).score[b].flatten(), score, atol=1e-10)
        drift = kron(kernel.drift[b]) @ u[b].flatten() - kron(kernel.ggt[b]) @ score
        assert torch.allclose(process.reverse_sde(u, t, process.predict(net, u, t))[0][b].flatten(), drift, atol=1e-10)
        lift = kron(kernel.phi[b, :, :1])  # (dK, d): E[u | y₀] = lift y₀
        y0 = torch.linalg.lstsq(lift, u[b].flatten() - chol @ eps_hat[b].flatten()).solution
        assert torch.allclose(process.predict(net, u, t).denoised[b, :2].flatten(), y0, atol=1e-10)
    y = torch.randn(4, *shape, generator=g, dtype=F64)
    ends = process.kernel(torch.tensor([1e-3, 1.0], dtype=F64))
    var = torch.kron(process.stationary_var, torch.ones(d, dtype=F64))
    mean = kron(ends.phi[1, :, :1]) @ y.flatten(1).T
    cov = kron(ends.cov[1])
    dense = 0.5 * ((torch.diagonal(cov) / var).sum() + (mean**2 / var[:, None]).sum(0)
                   + 3 * d * math.log(2 * math.pi) + var.log().sum())
    assert torch.allclose(process._prior_cross_entropy(y, ends), dense, atol=1e-10)


# ----- learned diffusions --------------------------------------------------------------------
@pytest.mark.parametrize("num_vars", [2, 3])
def test_learned_q_is_skew_and_d_is_positive_definite_for_random_parameters(num_vars: int) -> None:
    for seed in range(50):
        torch.manual_seed(seed)
        module = LearnedMatrices(num_vars, 1e-3, init_scale=[0.1, 1.0, 10.0][seed % 3])
        with torch.no_grad():
            module.g.normal_(0, 5.0)
            module.b.normal_(0, 5.0)
            q, d = module()
        assert torch.equal(q, -q.T)
        assert torch.linalg.eigvalsh(d).min() >= 1e-3 * (1 - 1e-6)


class _Call(nn.Module):
    """fn(process, *args) as a module, so that functional_call can swap the process's parameters."""

    def __init__(self, process: MultivariateDiffusion, fn) -> None:
        super().__init__()
        self.process, self.fn = process, fn

    def forward(self, *args):
        return self.fn(self.process, *args)


def _kernel_summary(process: MultivariateDiffusion, t: torch.Tensor) -> torch.Tensor:
    kernel = process.kernel(t)
    return torch.cat([kernel.phi.flatten(), kernel.chol.flatten(), kernel.linv.flatten()])


def _elbo(process: MultivariateDiffusion, x: torch.Tensor) -> torch.Tensor:
    net = lambda u, t: 0.3 * u + 0.1 * t.view(-1, 1, 1, 1)  # noqa: E731 (a fixed smooth ε̂)
    return process.elbo_terms(net, x, _generator(5)).nll()


def test_gradients_flow_through_expm_and_cholesky() -> None:
    """Finite differences of Φ, L, L⁻¹ (expm, Cholesky, triangular solve) and of the whole ELBO
    (uniform t, fixed noise) in the learned G and B agree with autograd."""
    process = make_process("learned3", importance="uniform", seed=2).double()
    params = tuple(p.detach().clone().requires_grad_(True) for p in (process.matrices.g, process.matrices.b))
    t = torch.tensor([0.01, 0.3, 1.0], dtype=F64)
    x = gaussian_data(2)[0].expand(4, 1, 1, 2).contiguous()
    for fn, args in ((_kernel_summary, (t,)), (_elbo, (x,))):
        module = _Call(process, fn)

        def call(g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(module, {"process.matrices.g": g, "process.matrices.b": b}, args)

        assert torch.autograd.gradcheck(call, params, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_the_process_parameters_are_trained_with_the_network() -> None:
    cfg = load_preset("mdm-mnist-learned2").with_overrides(
        ["data.name=digits", "model.channels=8", "model.channel_mult=1",
         "model.num_res_blocks=1", "model.attn_resolutions=4"])
    model = build(cfg).model
    names = {name for name, _ in model.named_parameters()}
    assert {"process.matrices.g", "process.matrices.b"} <= names
    x = torch.zeros(4, 1, 8, 8)
    model.process.loss(model.net, x, _generator(0)).mean().backward()
    for p in (model.process.matrices.g, model.process.matrices.b):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# ----- the ELBO ------------------------------------------------------------------------------
def _gaussian_batch(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    noise = torch.randn(n, cov.shape[0], generator=_generator(seed), dtype=F64)
    return (mean.flatten() + noise @ torch.linalg.cholesky(cov).T).view(n, *mean.shape)


@pytest.mark.parametrize("name", ELBO_CASES)
def test_exact_elbo_on_gaussian_data(name: str) -> None:
    """With the exact score, E[−ELBO] = H(p) + KL(q₁ ‖ π) + truncation(t_min) (Monte Carlo over data, t
    and ε, n = 40000, |error| < 4 SE), and the truncation term vanishes as t_min → 0."""
    mean, cov = gaussian_data(2)
    process = make_process(name, t_min=1e-3).double()
    exact = expected_nll(process, mean, cov, 1e-3)
    with torch.no_grad():
        nll = process.elbo_terms(ExactEps(process, mean, cov), _gaussian_batch(mean, cov, 40000, 1), _generator(2)).nll()
    se = float(nll.std()) / math.sqrt(len(nll))
    assert abs(float(nll.mean()) - exact["nll"]) < Z_LIMIT * se
    truncation = [expected_nll(make_process(name, t_min=t).double(), mean, cov, t)["truncation"]
                  for t in (0.3, 0.1, 0.01, 1e-3, 1e-4)]
    assert all(a > b >= -1e-12 for a, b in zip(truncation, truncation[1:]))
    assert truncation[-1] < 1e-3 and truncation[-1] < 1e-3 * truncation[0]


def test_the_truncation_term_is_needed_at_a_large_t_min() -> None:
    """The Monte Carlo ELBO detects the truncation term: at t_min = 0.05 (VP) it is ~30 SE."""
    mean, cov = gaussian_data(2)
    process = make_process("vp", t_min=0.05).double()
    exact = expected_nll(process, mean, cov, 0.05)
    with torch.no_grad():
        nll = process.elbo_terms(ExactEps(process, mean, cov), _gaussian_batch(mean, cov, 20000, 3), _generator(4)).nll()
    se = float(nll.std()) / math.sqrt(len(nll))
    assert abs(float(nll.mean()) - exact["nll"]) < Z_LIMIT * se
    assert abs(float(nll.mean()) - (exact["nll"] - exact["truncation"])) > 5 * Z_LIMIT * se


@pytest.mark.parametrize("name", DIFFUSIONS)
def test_the_offset_tends_to_the_auxiliary_entropy(name: str) -> None:
    """decoder(t_min) − (−H(q(v₀))) → 0 as t_min → 0: the bounds with and without offset meet."""
    mean, _ = gaussian_data(2)
    x = mean.expand(2, 1, 1, 2).contiguous()
    gaps = []
    for t_min in (0.1, 0.01, 1e-3, 1e-4):
        terms = make_process(name, t_min=t_min).double().elbo_terms(lambda u, t: torch.zeros_like(u), x)
        gaps.append(abs(float((terms.decoder[0] - terms.aux_entropy[0]).detach())))
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 0.01 and gaps[-1] < 0.01 * gaps[0]


def test_importance_sampling_is_unbiased_and_stratified() -> None:
    """E[w(t)] = 1 − t_min under the "trace" proposal, and E[w(t) f(t)] = ∫ f for f = β(t)."""
    process = make_process("cld")
    t, w = process.importance_times(20000, _generator(0), "cpu")
    assert bool(((t >= 1e-3) & (t <= 1)).all())
    for f, exact in ((torch.ones_like(t), 1 - 1e-3), (process.schedule.beta(t), float(process.schedule.integral(
            torch.tensor(1.0)) - process.schedule.integral(torch.tensor(1e-3))))):
        values = w * f
        assert abs(float(values.mean()) - exact) < Z_LIMIT * float(values.std()) / math.sqrt(len(t))


# ----- sampling ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ELBO_CASES)
@pytest.mark.parametrize("sampler,steps", [(euler_maruyama, 100), (heun, 40), (exp_ode, None), (exp_sde, None)])
def test_samplers_on_the_augmented_state_reproduce_gaussian_data(name: str, sampler, steps: int | None) -> None:
    mean, cov = gaussian_data(2)
    process = make_process(name).double()
    oracle = ExactEps(process, mean, cov)
    result = sampler(process, oracle, (4000, 1, 1, 2), steps, _generator(7))
    assert result.samples.shape == (4000, 1, 1, 2)
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < 5.0 and mean_z < 5.0


@pytest.mark.parametrize("name", ["vp", "cld", "malda", "learned2"])
def test_the_transport_carries_the_kernel_covariance(name: str) -> None:
    """Ψ(s, t) = R_s R_t⁻¹ maps Σ_t to Σ_s (Ψ Σ_t Ψᵀ = Σ_s), composes (Ψ(r, s)Ψ(s, t) = Ψ(r, t)), and for the VP
    diffusion is σ_s/σ_t (then exp_ode's first-order step is DDIM's)."""
    process = make_process(name).double()
    with torch.no_grad():
        kernel = process.kernel(torch.tensor([0.05, 0.3, 0.9], dtype=F64))
        far, _ = transport(process, 0.9, 0.05, substeps=512)
        near = transport(process, 0.3, 0.05, substeps=512)[0] @ transport(process, 0.9, 0.3, substeps=512)[0]
    assert torch.allclose(far @ kernel.cov[2] @ far.T, kernel.cov[0], rtol=1e-8, atol=1e-12)
    assert torch.allclose(near, far, rtol=1e-4, atol=1e-4)
    if name == "vp":
        sigma = kernel.chol[:, 0, 0]
        assert torch.allclose(far, (sigma[0] / sigma[2]).view(1, 1), rtol=1e-6)


@pytest.mark.parametrize("name", ["cld", "malda"])
def test_exp_ode_is_exact_for_point_data_at_any_step_count(name: str) -> None:
    """For data at one point μ the probability-flow trajectory is u_t = φ_t μ + Ψ(t, 1)(u_1 − φ_1 μ): exp_ode lands on
    it with 2 steps as with 20 (Heun does not)."""
    mean, _ = gaussian_data(2)
    process = make_process(name).double()
    oracle = ExactEps(process, mean, torch.zeros(2, 2, dtype=F64))
    start = process.prior_sample(process.state_shape((5, 1, 1, 2)), _generator(3)).double()
    t_min = process.t_min
    with torch.no_grad():
        kernel = process.kernel(torch.tensor([t_min, 1.0], dtype=F64))
        psi, _ = transport(process, 1.0, t_min, substeps=512)
    signal = lambda k: torch.kron(kernel.phi[k, :, :1], torch.ones(1, 2, dtype=F64)) * mean.view(1, 2)  # noqa: E731
    expected = signal(0) + torch.einsum("ij,bjd->bid", psi, start.view(5, process.num_vars, 2) - signal(1))
    for steps, sampler in ((2, exp_ode), (20, exp_ode)):
        u = sampler(process, oracle, (5, 1, 1, 2), steps, x_init=start, denoise=False, order=1)
        assert torch.allclose(process.to_state(u.samples)[:, :1], expected[:, :1].view(5, 1, 1, 2), atol=1e-3)
    rough = heun(process, oracle, (5, 1, 1, 2), 10, x_init=start, denoise=False).samples
    assert not torch.allclose(rough, expected[:, :1].view(5, 1, 1, 2), atol=1e-2)


def _exact_output_covariance(process, oracle, sampler, steps: int, **options) -> tuple[torch.Tensor, int]:
    """The samples' covariance of a deterministic sampler with the linear exact oracle: it is affine in the start
    state u₁ ~ N(0, Σ_∞ ⊗ I), so pushing 0 and Σ_∞^½ e_j through it gives the covariance exactly."""
    dim = process.num_vars * 2
    basis = torch.zeros(dim + 1, dim, dtype=F64)
    basis[1:] = torch.eye(dim, dtype=F64) * process.stationary_var.sqrt().repeat_interleave(2)
    result = sampler(process, oracle, (dim + 1, 1, 1, 2), steps, x_init=basis.view(dim + 1, process.num_vars, 1, 2),
                     **options)
    x = result.samples.double().flatten(1)
    return (x[1:] - x[:1]).T @ (x[1:] - x[:1]), result.nfe


def _relative_error(estimate: torch.Tensor, cov: torch.Tensor) -> float:
    return float((estimate - cov).norm() / cov.norm())


def test_exp_ode_is_second_order_on_cld() -> None:
    """CLD on Gaussian data, exact covariances: exp_ode's relative covariance error falls with order > 1.5 as its
    steps double 20 → 40 → 80 (measured 0.24, 0.076, 0.022: orders 1.67, 1.77)."""
    mean, cov = gaussian_data(2)
    process = make_process("cld").double()
    oracle = ExactEps(process, mean, cov)
    errors = [_relative_error(_exact_output_covariance(process, oracle, exp_ode, n)[0], cov) for n in (20, 40, 80)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) > 1.5, (errors, orders)


@pytest.mark.parametrize(("name", "nfes"), [("cld", (11, 21)), ("malda", (11, 21, 41))])
def test_exp_ode_beats_heun_at_equal_nfe(name: str, nfes: tuple[int, ...]) -> None:
    """At few NFE Heun (on its default grid, uniform for a multivariate diffusion) is unstable on the stiff CLD and
    MALDA kernels while exp_ode is not: measured CLD 0.34 vs 56 at 11 NFE, 0.24 vs 0.47 at 21 (at 41 Heun's 0.027 is
    below exp_ode's 0.076); MALDA 0.36 vs 6.8·10³, 0.27 vs 22, 0.080 vs 0.57 at 11, 21, 41."""
    mean, cov = gaussian_data(2)
    process = make_process(name).double()
    oracle = ExactEps(process, mean, cov)
    for nfe in nfes:
        ours, ours_nfe = _exact_output_covariance(process, oracle, exp_ode, nfe - 1)
        theirs, theirs_nfe = _exact_output_covariance(process, oracle, heun, (nfe - 1) // 2)
        assert ours_nfe == theirs_nfe == nfe
        assert _relative_error(ours, cov) < _relative_error(theirs, cov)


def test_a_wrong_score_is_detected_by_the_sampler_check() -> None:
    mean, cov = gaussian_data(2)
    process = make_process("cld").double()
    result = heun(process, ExactEps(process, mean, 1.5 * cov), (4000, 1, 1, 2), 40, _generator(7))
    assert covariance_z_scores(result.samples, mean, cov)[0] > 5.0


# ----- configuration, errors, end to end -----------------------------------------------------
def _config(diffusion: str):
    return load_preset(f"mdm-mnist-{diffusion}").process


@pytest.mark.parametrize("name", [n for n in preset_names() if n.startswith("mdm-")])
def test_presets_build_with_c_times_k_network_channels(name: str, tmp_path: Path) -> None:
    cfg = load_preset(name)
    assert cfg.process.kind == "multivariate" and cfg.description
    channels = 3 if "cifar10" in name else 1
    process = build_process(cfg.process, facts=(channels, 8, 8))
    k = NUM_VARS[cfg.process.diffusion]
    assert process.network_channels(channels) == (channels * k, channels * k)
    assert process.state_shape((5, channels, 8, 8)) == (5, channels * k, 8, 8)
    cfg.save(tmp_path / "c.yaml")
    assert RunConfig.load(tmp_path / "c.yaml") == cfg


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(ConfigError, match="process.diffusion"):
        load_preset("mdm-mnist-cld").with_overrides(["process.diffusion=cdl"])
    with pytest.raises(ConfigError, match="process.prior is a knob of the gaussian and flow families"):
        load_preset("mdm-mnist-cld").with_overrides(["process.prior=fitted"])
    with pytest.raises(ConfigError, match="process.levels=256 but the data have 17 levels"):
        build(load_preset("mdm-mnist-cld").with_overrides(["data.name=digits", "process.levels=256"]))
    process = build_process(_config("cld"), facts=(1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        process.elbo_terms(lambda u, t: u, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="logit"):
        process.elbo_terms(lambda u, t: u, torch.full((2, 1, 8, 8), 1.5))
    with pytest.raises(ValueError, match="singular"):
        make_process("alda", t_min=1e-6).kernel(torch.tensor([1e-6]))


@pytest.mark.parametrize("basis", ["pixel", "dct", "pca"])
@pytest.mark.parametrize("levels", [256, 0])
def test_data_coordinates_round_trip_with_the_logit_transform_and_a_basis(basis: str, levels: int) -> None:
    """x → y = U logit(λ + (1 − 2λ)p) → x, and log|det ∂y/∂x| equals autograd's for one pixel."""
    cfg = _config("cld")
    cfg.basis, cfg.levels = basis, levels
    data = torch.rand(64, 1, 4, 4, generator=_generator(0), dtype=F64) * 2 - 1
    facts = DataFacts(tuple(data.shape[1:]), levels or None)
    process = build_process(cfg, data, facts).double()
    y, log_det = process.encode_data(data)
    assert torch.allclose(process.decode_data(y), data, atol=1e-10)
    single = build_process(cfg, data[:, :, :1, :1], DataFacts((1, 1, 1), levels or None)).double() if basis != "pca" else None
    if single is not None:
        x = data[:1, :, :1, :1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(single.encode_data(x)[0].sum(), x)
        assert torch.allclose(single.encode_data(x)[1], grad.abs().log().flatten(), atol=1e-12)


def test_train_sample_and_evaluate_end_to_end(tmp_path: Path) -> None:
    """A few training steps on the 8×8 digits, then EM and Heun samples, and test bits/dim."""
    cfg = load_preset("mdm-mnist-learned2").with_overrides(
        ["data.name=digits", "model.channels=8", "model.channel_mult=1",
         "model.num_res_blocks=1", "model.attn_resolutions=4", "train.steps=3", "train.batch_size=16",
         "train.device=cpu", "train.checkpoint_every=3", "sample.num=0", "sample.steps=5"])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.step == 3
    for sampler in ("euler_maruyama", "heun"):
        report = sample_model(tmp_path / "run", tmp_path / f"{sampler}.npz", num=4, sampler=sampler)
        samples = np.load(report.path)["samples"]
        assert samples.shape == (4, 1, 8, 8) and np.isfinite(samples).all()
    built = build(cfg)
    process, net, images = built.model.process, built.model.net, built.dataset.images[:8]
    assert built.config.process.levels == 17  # from the digits, not the preset
    report = elbo_bpd(process, net, images, 17, generator=_generator(0), batch_size=4)
    no_offset = elbo_bpd(process, net, images, 17, generator=_generator(0), batch_size=4,
                         bound=lambda net, x, g: process.elbo_terms(net, x, g).bpd(offset=False))
    assert report.num == 8 and math.isfinite(report.value) and report.stderr > 0 and math.isfinite(no_offset.value)
