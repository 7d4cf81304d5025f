"""Every sampler, driven by the exact oracle, reproduces Gaussian data in every basis and prior."""

from __future__ import annotations

import pytest
import torch

from gaussian_cases import correlated_2d, covariance_z_scores, oracle_process, random_field
from diffspace.families.gaussian.samplers import SAMPLERS
from diffspace.process import get_sampler
from diffspace.sampling import time_grid

GAUSSIAN_SAMPLERS = tuple(SAMPLERS)

# steps per sampler: Heun is 2nd order; EM and PC need finer grids for a bias well below the SE
STEPS = {"euler_maruyama": 200, "heun": 40, "pc": 100}
Z_LIMIT = 5.0  # |error| / SE over all covariance entries (a few thousand correlated statistics)


@pytest.mark.parametrize("sampler", GAUSSIAN_SAMPLERS)
@pytest.mark.parametrize("basis", ["pixel", "dct", "fourier", "haar", "pca"])
@pytest.mark.parametrize("prior", ["white", "fitted"])
def test_random_field_covariance_in_every_basis(sampler: str, basis: str, prior: str) -> None:
    mean, cov = random_field(8)
    network_input = "whitened" if prior == "fitted" else "data"
    process, oracle = oracle_process(mean, cov, basis=basis, prior=prior, network_input=network_input)
    result = get_sampler(sampler)(process, oracle, (3000, 1, 8, 8), STEPS[sampler], torch.Generator().manual_seed(7))
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


@pytest.mark.parametrize("sampler", GAUSSIAN_SAMPLERS)
@pytest.mark.parametrize("basis", ["pixel", "dct", "fourier", "pca"])
@pytest.mark.parametrize("schedule", ["cosine", "vp_linear", "logsnr_linear"])
def test_correlated_2d_gaussian(sampler: str, basis: str, schedule: str) -> None:
    mean, cov = correlated_2d()
    process, oracle = oracle_process(mean, cov, basis=basis, schedule=schedule)
    result = get_sampler(sampler)(process, oracle, (20000, 1, 1, 2), STEPS[sampler], torch.Generator().manual_seed(8))
    cov_z, mean_z = covariance_z_scores(result.samples, mean, cov)
    assert cov_z < Z_LIMIT and mean_z < Z_LIMIT


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
    for name, expected_nfe in [("euler_maruyama", 11), ("heun", 21), ("pc", 21)]:
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
