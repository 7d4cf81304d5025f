"""Named time grids: the shared "uniform" grid, the Gaussian family's edm / logsnr / windows grids in the process's own
noise levels, the multivariate family's edm / logsnr grids in its data log-SNR, and how samplers choose and refuse
them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gaussian_cases import power_law_field
from multivariate_cases import make_process
from diffspace.families.gaussian import GaussianConfig
from diffspace.families.gaussian.grids import mean_gamma, window_progress
from diffspace.process import DataFacts, build_process, get_sampler
from diffspace.sampling import GRIDS, choose_grid, defaults_of, make_grid, rho_spacing


def _gaussian(**options) -> torch.nn.Module:
    return build_process(GaussianConfig(**options), facts=(1, 4, 4))


@pytest.mark.parametrize("schedule", ["cosine", "vp_linear", "logsnr_linear"])
@pytest.mark.parametrize("name", ["uniform", "edm", "logsnr", "windows"])
def test_every_grid_runs_from_one_to_t_end_strictly_decreasing(schedule: str, name: str) -> None:
    process = _gaussian(schedule=schedule)
    for t_end in (0.0, 0.01):
        grid = make_grid(process, name, 12, t_end=t_end)
        assert grid.shape == (13,) and float(grid[0]) == 1.0 and math.isclose(float(grid[-1]), t_end, abs_tol=1e-7)
        assert bool((grid[1:] < grid[:-1]).all())


@pytest.mark.parametrize("schedule", ["cosine", "vp_linear"])
def test_edm_grid_spaces_the_noise_level_as_edm_does(schedule: str) -> None:
    """σ(t_i) = e^{γ(t_i)/2} equals EDM's (σ_max^{1/ρ} + i/N (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, σ = σ/α of the schedule."""
    process = _gaussian(schedule=schedule)
    grid = make_grid(process, "edm", 10, rho=7.0).double()
    sigma = torch.exp(process.noise_level(grid).gamma.view(-1) / 2)
    expected = rho_spacing(10, sigma[0], sigma[-1], 7.0).view(-1)
    assert torch.allclose(sigma, expected, rtol=1e-5)


def test_logsnr_grid_is_uniform_in_log_snr() -> None:
    process = _gaussian(schedule="cosine")
    gamma = process.noise_level(make_grid(process, "logsnr", 8).double()).gamma.view(-1)
    assert torch.allclose(gamma[1:] - gamma[:-1], torch.full((8,), -20.0 / 8, dtype=torch.float64), atol=1e-4)


def test_windows_grid_is_the_edm_grid_for_a_scalar_schedule() -> None:
    """One window for every component: the mean EDM progress is EDM's own spacing."""
    process = _gaussian(schedule="vp_linear")
    assert torch.allclose(make_grid(process, "windows", 15), make_grid(process, "edm", 15), atol=1e-6)


def test_windows_grid_gives_disjoint_windows_steps_in_proportion_to_their_components() -> None:
    """Autoregressive soft conditioning (pixel columns, softness 0.05: each column's window is its own): every window
    gets N/(columns) of the steps, and steps fall only where some component is active."""
    process = build_process(GaussianConfig(basis="pixel", schedule="soft", labels="column", softness=0.05, clip=True),
                            facts=(1, 2, 4))
    start, end = (w[0, 0] for w in process.schedule.active_window())  # (columns,) windows of row 0
    assert bool((start[:-1] >= end[1:]).all())  # disjoint: column c + 1 after column c in reverse time
    grid = make_grid(process, "windows", 40).double()
    inside = [int(((grid > a) & (grid < b)).sum()) for a, b in zip(start, end)]
    assert all(abs(count - 10) <= 1 for count in inside), inside
    progress = window_progress(process, 7.0, 0.0, None)(grid)
    assert torch.allclose(progress, torch.linspace(0, 1, 41, dtype=torch.float64), atol=1e-4)


def test_the_mean_noise_level_of_a_soft_schedule_stays_in_the_schedule_range() -> None:
    """Clamped to [γ_min, γ_max] component by component, the mean noise coordinate of a soft schedule with a wide
    label range spans that range (unclamped it would span ±60)."""
    process, _, _ = power_law_field(8, schedule="soft", labels="basis", softness=0.1)
    ends = mean_gamma(process)(torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert -10.0 <= float(ends[1]) < float(ends[0]) <= 10.0


def test_grid_refusals_are_clear() -> None:
    gaussian = _gaussian()
    with pytest.raises(ValueError, match="unknown grid 'edn'; choose one of uniform, edm, logsnr, windows"):
        make_grid(gaussian, "edn", 4)
    with pytest.raises(ValueError, match="grid 'logsnr' takes no rho"):
        make_grid(gaussian, "logsnr", 4, rho=3.0)
    multivariate = make_process("cld")
    with pytest.raises(ValueError, match="grid 'windows' is not offered by MultivariateDiffusion; its grids: uniform, "
                                         "edm, logsnr"):
        make_grid(multivariate, "windows", 4)
    defaults = defaults_of(get_sampler("dpmpp_2m"))
    with pytest.raises(ValueError, match="an explicit grid tensor takes neither"):
        choose_grid(gaussian, defaults, None, torch.tensor([1.0, 0.5, 0.0]), 3.0, None, None, "cpu")


def test_a_sampler_takes_its_default_grid_a_named_grid_or_a_tensor() -> None:
    """dpmpp_2m defaults to 25 steps on the logsnr grid; grid="edm" with rho and t_end builds that grid instead; heun
    defaults to 40 steps on the windows grid (ρ = 7, or the ρ given): the edm grid for a scalar schedule, EDM-spaced
    inside each window for a component-wise one."""
    process = _gaussian()
    defaults = defaults_of(get_sampler("dpmpp_2m"))
    default = choose_grid(process, defaults, None, None, None, None, None, "cpu")
    assert torch.equal(default, make_grid(process, "logsnr", 25))
    named = choose_grid(process, defaults, 6, "edm", 5.0, 0.01, None, "cpu")
    assert torch.equal(named, make_grid(process, "edm", 6, 5.0, 0.01))
    heun = defaults_of(get_sampler("heun"))
    assert torch.equal(choose_grid(process, heun, None, None, None, None, None, "cpu"),
                       make_grid(process, "windows", 40, 7.0))
    assert torch.allclose(make_grid(process, "windows", 40, 7.0), make_grid(process, "edm", 40, 7.0), atol=1e-6)
    assert torch.equal(choose_grid(process, heun, 4, None, 3.0, None, None, "cpu"), make_grid(process, "windows", 4, 3.0))
    soft = build_process(GaussianConfig(basis="pixel", schedule="soft", labels="column", softness=0.05, clip=True),
                         facts=(1, 2, 4))
    assert torch.equal(choose_grid(soft, heun, 12, None, None, None, None, "cpu"), make_grid(soft, "windows", 12))
    assert not torch.allclose(make_grid(soft, "windows", 12), make_grid(soft, "edm", 12), atol=1e-3)


def test_a_default_grid_the_process_does_not_offer_falls_back_to_uniform() -> None:
    """Heun's default "windows" grid on a process that builds no grids of its own is the uniform grid at ρ = 1; a
    grid asked for by name is refused instead."""
    process = _gaussian()
    process.capabilities = dataclasses.replace(process.capabilities, grids=())
    heun = defaults_of(get_sampler("heun"))
    assert torch.equal(choose_grid(process, heun, 6, None, None, None, None, "cpu"), make_grid(process, "uniform", 6))
    with pytest.raises(ValueError, match="grid 'edm' is not offered by GaussianDiffusion; its grids: uniform"):
        choose_grid(process, heun, 6, "edm", None, None, None, "cpu")


def test_a_softness_in_cond_sets_the_grid_of_its_schedule() -> None:
    """A softness-conditioned model's grid follows the softness it samples at, when all samples share it."""
    process, _, _ = power_law_field(8, schedule="soft", labels="basis", softness=1.0)
    own = make_grid(process, "windows", 10)
    assert torch.equal(make_grid(process, "windows", 10, cond={"softness": torch.full((3,), 1.0)}), own)
    other = make_grid(process, "windows", 10, cond={"softness": torch.full((3,), 0.3)})
    assert not torch.allclose(other, own)
    assert torch.equal(make_grid(process, "windows", 10, cond={"softness": torch.tensor([0.3, 1.0])}), own)


@pytest.mark.parametrize("name", ["cld", "malda", "vp"])
def test_multivariate_grids_follow_the_data_log_snr(name: str) -> None:
    """λ(t) = log φᵀΣ⁻¹φ decreases in t (for VP it is the closed-form log SNR); "logsnr" spaces it uniformly and
    "edm" spaces e^{−λ/2} as EDM does."""
    process = make_process(name)
    t = torch.linspace(process.t_min, 1.0, 50, dtype=torch.float64)
    snr = process.log_snr(t)
    assert bool((snr[1:] < snr[:-1]).all())
    if name == "vp":
        b = process.schedule.integral(t)
        assert torch.allclose(snr, torch.log(torch.exp(-b) / -torch.expm1(-b)), atol=1e-8)
    t_min = process.t_min
    lam = process.log_snr(make_grid(process, "logsnr", 8, t_end=t_min).double())
    assert torch.allclose(lam[1:] - lam[:-1], torch.full((8,), float(lam[-1] - lam[0]) / 8, dtype=torch.float64),
                          rtol=1e-4)
    sigma = torch.exp(-process.log_snr(make_grid(process, "edm", 8, t_end=t_min).double()) / 2)
    assert torch.allclose(sigma, rho_spacing(8, sigma[0], sigma[-1], 7.0).view(-1), rtol=1e-4)


def test_blackout_samplers_take_the_uniform_grid_by_name_and_t_steps_by_default() -> None:
    from diffspace.families.blackout import BlackoutConfig

    process = build_process(BlackoutConfig(num_steps=20), facts=DataFacts((1, 2, 2), 4))
    net = lambda x, t, **c: torch.zeros_like(x)  # noqa: E731
    sampler = get_sampler("tau_leaping")
    seen: list[dict] = []
    result = sampler(process, net, (2, 1, 2, 2), None, torch.Generator().manual_seed(0), callback=seen.append)
    assert result.nfe == 20 and len(seen) == 20
    assert sampler(process, net, (2, 1, 2, 2), 5, torch.Generator().manual_seed(0), grid="uniform").nfe == 5
    with pytest.raises(ValueError, match="grid 'edm': a Blackout sampler visits the strided steps"):
        sampler(process, net, (2, 1, 2, 2), 5, torch.Generator().manual_seed(0), grid="edm")


def test_every_grid_name_has_a_default_rho_or_none() -> None:
    assert GRIDS == {"uniform": 1.0, "edm": 7.0, "logsnr": None, "windows": 7.0}
