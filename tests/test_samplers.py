"""Every sampler, driven by the exact oracle, reproduces Gaussian data in every basis and prior; the few-step
solvers converge at their order, each sampler's default grid passes the issue's spectrum check, and DPM-Solver++(2M)
beats Heun at equal NFE on it.

Measured orders (tests below; covariance error against the sampler's infinite-step limit on the 16×16 power-law
field, as steps double 10 → 20 → 40 → 80): dpmpp_2m 1.19, 1.88, 1.98 (then 1.99 to 160), dpmpp_3m 3.28, 2.46, 2.17 (its
first, first-order step bounds it by 2 asymptotically), edm_heun 2.3, 2.1, 2.05, ddim 0.83, 0.91, 0.96, heun on its
default grid (windows: edm for this scalar schedule) 1.3, 1.5, 1.9.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from host_reads import host_reads
from gaussian_cases import (
    band_errors, band_standard_errors, coefficient_variance, correlated_2d, covariance_z_scores,
    exact_sampler_variance, oracle_process, power_law_field, random_field,
)
from diffspace.families.gaussian.samplers import SAMPLERS
from diffspace.process import get_sampler
from diffspace.sampling import default_steps, time_grid

GAUSSIAN_SAMPLERS = tuple(SAMPLERS)
DETERMINISTIC = ("heun", "ddim", "dpmpp_2m", "dpmpp_3m", "edm_heun")  # at their default options
STOCHASTIC = ("euler_maruyama", "pc")


def test_every_gaussian_sampler_gets_the_default_grid_spectrum_check() -> None:
    assert sorted(DETERMINISTIC + STOCHASTIC) == sorted(GAUSSIAN_SAMPLERS)

# steps per sampler for a bias well below the SE: Heun, DPM-Solver++, EDM are 2nd order; EM, PC and DDIM first
STEPS = {"euler_maruyama": 200, "heun": 40, "pc": 100, "ddim": 200, "dpmpp_2m": 40, "dpmpp_3m": 40, "edm_heun": 60}
Z_LIMIT = 5.0  # |error| / SE over all covariance entries (a few thousand correlated statistics)


@pytest.mark.parametrize("sampler", ("euler_maruyama", "heun", "pc"))
@pytest.mark.parametrize("basis", ["pixel", "dct", "fourier", "haar", "pca"])
@pytest.mark.parametrize("prior", ["white", "fitted"])
def test_random_field_covariance_in_every_basis(sampler: str, basis: str, prior: str) -> None:
    mean, cov = random_field(8)
    network_input = "whitened" if prior == "fitted" else "data"
    process, oracle = oracle_process(mean, cov, basis=basis, prior=prior, network_input=network_input)
    result = get_sampler(sampler)(process, oracle, (3000, 1, 8, 8), STEPS[sampler], torch.Generator().manual_seed(7))
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


#: The few-step solvers on the 2-D Gaussian: each in one (basis, schedule), every schedule covered.
FEW_STEP_2D = [("ddim", "dct", "vp_linear"), ("dpmpp_2m", "fourier", "logsnr_linear"), ("dpmpp_3m", "pca", "cosine"),
               ("edm_heun", "pixel", "vp_linear"), ("dpmpp_2m", "pixel", "vp_linear")]


@pytest.mark.parametrize(("sampler", "basis", "schedule"),
                         [(sampler, basis, schedule) for sampler in ("euler_maruyama", "heun", "pc")
                          for basis in ("pixel", "dct", "fourier", "pca")
                          for schedule in ("cosine", "vp_linear", "logsnr_linear")] + FEW_STEP_2D)
def test_correlated_2d_gaussian(sampler: str, basis: str, schedule: str) -> None:
    mean, cov = correlated_2d()
    process, oracle = oracle_process(mean, cov, basis=basis, schedule=schedule)
    result = get_sampler(sampler)(process, oracle, (20000, 1, 1, 2), STEPS[sampler], torch.Generator().manual_seed(8))
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


#: Each new solver (and its stochastic variant) in one of the three designs, every design covered by several.
NEW_SOLVERS = [("ddim", {}, "pixel", "white"), ("ddim", {"eta": 1.0}, "pca", "white"),
               ("dpmpp_2m", {}, "fourier", "fitted"), ("dpmpp_2m", {"eta": 0.5}, "pixel", "white"),
               ("dpmpp_3m", {}, "pca", "white"), ("dpmpp_3m", {"eta": 0.5}, "fourier", "fitted"),
               ("edm_heun", {}, "fourier", "fitted"), ("edm_heun", {"churn": 20.0, "s_tmax": 50.0}, "pixel", "white")]


@pytest.mark.parametrize(("sampler", "options", "basis", "prior"), NEW_SOLVERS, ids=lambda v: str(v))
def test_few_step_solvers_reproduce_random_field_covariance(sampler: str, options: dict, basis: str,
                                                           prior: str) -> None:
    """DDIM (η = 0 and 1), DPM-Solver++ 2M and 3M (and their SDE variants) and EDM's Heun (with churn) sample the
    8×8 field's covariance within Z_LIMIT standard errors (2000 samples; the SE is the sample size's)."""
    mean, cov = random_field(8)
    network_input = "whitened" if prior == "fitted" else "data"
    process, oracle = oracle_process(mean, cov, basis=basis, prior=prior, network_input=network_input)
    result = get_sampler(sampler)(process, oracle, (2000, 1, 8, 8), STEPS[sampler], torch.Generator().manual_seed(7),
                                  **options)
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


@pytest.mark.parametrize("sampler", ("ddim", "dpmpp_2m", "dpmpp_3m", "edm_heun"))
@pytest.mark.parametrize("clip", [False, True])
def test_few_step_solvers_on_a_soft_schedule_with_frozen_components(sampler: str, clip: bool) -> None:
    """A component-wise (GUD soft) schedule, components clipped and frozen outside their windows or not: at the
    default grid each solver is within 2.5% of its infinite-step limit in every coefficient, and closer at twice
    the steps (exact variances; no division by zero where a component's h is 0)."""
    process, oracle, variance = power_law_field(16, schedule="soft", labels="basis", softness=2.0, clip=clip)
    limit = exact_sampler_variance(process, variance)
    steps = default_steps(get_sampler(sampler), process)
    errors = [float((coefficient_variance(sampler, process, oracle, n) / limit - 1).abs().max())
              for n in (steps, 2 * steps)]
    assert errors[0] < 0.025 and errors[1] < errors[0] / 1.8


def test_a_component_frozen_over_a_step_is_left_as_it_is() -> None:
    """With clip, a component outside its window over a whole step (h = 0) is not moved by DDIM or DPM-Solver++."""
    process, oracle, _ = power_law_field(8, schedule="soft", labels="basis", softness=0.2, clip=True)
    grid = torch.tensor([1.0, 0.97, 0.94, 0.9])
    gamma = process.noise_level(grid).gamma[:, 0]
    frozen = (gamma[0] == gamma[-1])  # never active on this grid
    assert bool(frozen.any()) and not bool(frozen.all())
    start = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for sampler in ("ddim", "dpmpp_2m", "dpmpp_3m", "edm_heun"):
        end = get_sampler(sampler)(process, oracle, (3, 1, 8, 8), grid=grid, x_init=start, denoise=False).samples
        assert torch.isfinite(end).all()
        assert torch.allclose(process.to_state(end)[:, 0][:, frozen], start[:, 0][:, frozen], atol=1e-5), sampler


@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_default_grid_reproduces_the_64x64_field_spectrum(sampler: str) -> None:
    """The issue's check, exactly: on the 64×64 power-law field (multilevel design) the sampler at its default grid
    and steps gives every octave band's power within 2% of the data's. Exact band powers (no sampling error): the
    sampler is linear and elementwise here (gaussian_cases.coefficient_variance), so every band is resolved."""
    process, oracle, variance = power_law_field(64)
    errors = band_errors(coefficient_variance(sampler, process, oracle), variance)
    assert float(errors.abs().max()) <= 0.02, errors.tolist()


def test_the_spectrum_check_fails_heun_on_the_old_uniform_grid() -> None:
    """The check has power: Heun with 40 steps on the uniform grid (ρ = 1, the default before) over-produces low
    frequencies (+10% at |k| = 0, as the issue measured with samples: +12.1 ± 3.6%)."""
    process, oracle, variance = power_law_field(64)
    errors = band_errors(coefficient_variance("heun", process, oracle, 40, grid="uniform", rho=1.0), variance)
    assert float(errors[0]) > 0.08 and float(errors.abs().max()) > 0.02


def _stochastic_spectrum_check(sampler: str, size: int, samples: int) -> None:
    """Every octave band within 2% + Z·SE of the data's (SE from the sample size: band_standard_errors); a band is
    resolved where Z·SE ≤ 2%."""
    process, oracle, variance = power_law_field(size)
    errors = band_errors(coefficient_variance(sampler, process, oracle, samples=samples, seed=3), variance)
    tolerance = 0.02 + Z_BANDS * band_standard_errors(variance, samples)
    assert bool((errors.abs() <= tolerance).all()), (errors.tolist(), tolerance.tolist())


Z_BANDS = 4.0


@pytest.mark.parametrize("sampler", STOCHASTIC)
def test_default_grid_of_a_stochastic_sampler_reproduces_the_field_spectrum(sampler: str) -> None:
    """The issue's check for Euler–Maruyama and predictor–corrector on a 16×16 field of the same law (the low
    frequencies have the same state variance at every N) with 1024 samples (the 64×64, 2048-sample check below)."""
    _stochastic_spectrum_check(sampler, 16, 1024)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DIFFSPACE_SLOW") != "1", reason="minutes on a CPU; DIFFSPACE_SLOW=1 runs it (its "
                    "16×16 version runs by default)")
@pytest.mark.parametrize("sampler", STOCHASTIC)
def test_default_grid_of_a_stochastic_sampler_on_the_64x64_field(sampler: str) -> None:
    """The issue's check as it was stated: 64×64, 2048 samples (minutes on a CPU)."""
    _stochastic_spectrum_check(sampler, 64, 2048)


def test_dpmpp_2m_is_second_order_and_beats_heun_at_equal_nfe() -> None:
    """16×16 power-law field, exact covariances. Error = relative Frobenius error of the coefficient covariance.
    Against the sampler's infinite-step limit, DPM-Solver++(2M)'s error falls as steps double 20 → 40 → 80 with
    observed order log₂(e_N/e_2N) > 1.5 (measured 1.88, 1.98); against the data, at 11 and 21 NFE it is below Heun's
    on Heun's default grid at the same NFE (5 and 10 steps; measured 0.063 vs 1.65 and 0.027 vs 0.051)."""
    process, oracle, variance = power_law_field(16)
    limit = exact_sampler_variance(process, variance)

    def error(sampler: str, steps: int, reference: torch.Tensor) -> float:
        out = coefficient_variance(sampler, process, oracle, steps)
        return float((out - reference).norm() / reference.norm())

    errors = [error("dpmpp_2m", n, limit) for n in (20, 40, 80)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) > 1.5, orders
    for dpm_steps, heun_steps in ((10, 5), (20, 10)):
        nfe = {name: get_sampler(name)(process, oracle, (1, *process.prior.shape), n).nfe
               for name, n in (("dpmpp_2m", dpm_steps), ("heun", heun_steps))}
        assert nfe["dpmpp_2m"] == nfe["heun"] == dpm_steps + 1, nfe  # the same NFE, the final denoising step included
        assert error("dpmpp_2m", dpm_steps, variance) < error("heun", heun_steps, variance)


def test_16x16_random_field_with_fitted_fourier_prior_and_soft_schedule() -> None:
    mean, cov = random_field(16)
    process, oracle = oracle_process(
        mean, cov, basis="fourier", prior="fitted", schedule="soft", labels="basis", softness=0.5,
        network_input="whitened",
    )
    result = get_sampler("heun")(process, oracle, (3000, 1, 16, 16), 40, torch.Generator().manual_seed(9))
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


def test_a_wrong_model_is_detected() -> None:
    """The covariance check has power: the oracle of a 20%-wider Gaussian fails it."""
    mean, cov = random_field(8)
    process, oracle = oracle_process(mean, 1.2 * cov, basis="dct")
    result = get_sampler("heun")(process, oracle, (3000, 1, 8, 8), 40, torch.Generator().manual_seed(7))
    assert covariance_z_scores(result.samples, mean, cov)[0] > Z_LIMIT


def test_nfe_callback_and_determinism() -> None:
    mean, cov = correlated_2d()
    process, oracle = oracle_process(mean, cov)
    seen: list[dict] = []
    for name, expected_nfe in [("euler_maruyama", 11), ("heun", 21), ("pc", 21), ("ddim", 11), ("dpmpp_2m", 11),
                               ("dpmpp_3m", 11), ("edm_heun", 21)]:
        seen.clear()
        first = get_sampler(name)(process, oracle, (5, 1, 1, 2), 10, torch.Generator().manual_seed(1), callback=seen.append)
        again = get_sampler(name)(process, oracle, (5, 1, 1, 2), 10, torch.Generator().manual_seed(1))
        assert first.nfe == expected_nfe and torch.equal(first.samples, again.samples)
        assert [s["i"] for s in seen] == list(range(10)) and seen[-1]["t"] == 0.0
    no_denoise = get_sampler("heun")(process, oracle, (5, 1, 1, 2), 10, torch.Generator().manual_seed(1), denoise=False)
    assert no_denoise.nfe == 20


def test_time_grid() -> None:
    grid = time_grid(4, rho=2.0)
    assert torch.allclose(grid, torch.tensor([1.0, 0.5625, 0.25, 0.0625, 0.0]))
    assert torch.allclose(time_grid(2, t_end=0.5), torch.tensor([1.0, 0.75, 0.5]))
    with pytest.raises(ValueError, match="number of steps ≥ 1"):
        time_grid(0)


def test_unknown_sampler_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'heun'"):
        get_sampler("huen")


@pytest.mark.parametrize("sampler", GAUSSIAN_SAMPLERS)
def test_a_sampler_step_reads_nothing_back_from_the_device(sampler: str) -> None:
    """No host read (on CUDA: no synchronisation) per step: building the grid reads it back once, and 5 and 20 steps
    make as many reads."""
    mean, cov = correlated_2d()
    process, _ = oracle_process(mean, cov)
    net = lambda x, t, **c: 0.1 * x  # noqa: E731
    reads = [host_reads(lambda: get_sampler(sampler)(process, net, (3, 1, 1, 2), steps, torch.Generator().manual_seed(0)))
             for steps in (5, 20)]
    assert reads[0] == reads[1]
