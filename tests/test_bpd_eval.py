"""Bits/dim evaluation: explicit dequantization, the discrete offset, standard errors, and the PF-ODE route."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import gen
from diffspace.metrics.bpd import elbo_bpd, ode_bpd
from diffspace.process import Capabilities
from gaussian_cases import correlated_2d, oracle_process


class UniformModel(torch.nn.Module):
    """A 'process' whose density is uniform on the dequantized support [−1 − 1/255, 1 + 1/255]^D of 8-bit
    data: −log₂ p/D = log₂(2·256/255) for every input; it records what nll_bound was given."""

    def __init__(self, discrete: bool = False) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))
        self.inputs: list[torch.Tensor] = []
        self.capabilities = Capabilities(discrete=discrete, ode_likelihood=False, resolution_free=True, samplers=())

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def nll_bound(self, net, x, generator=None, **cond) -> torch.Tensor:
        self.inputs.append(x.clone())
        return torch.full((x.shape[0],), math.log2(2 * 256 / 255), dtype=torch.float64)


def eight_bit_images(n: int) -> torch.Tensor:
    k = torch.randint(0, 256, (n, 1, 2, 3), generator=gen(1))
    return 2 * k.float() / 255 - 1


def test_uniform_model_costs_exactly_eight_bits_on_8bit_data() -> None:
    """The +8-bit conversion: continuous log₂(512/255) bits/dim in model space ↦ 8 bits/dim of the levels."""
    model, x = UniformModel(), eight_bit_images(10)
    result = elbo_bpd(model, None, x, 256, generator=gen(2), batch_size=4, repeats=2)
    assert result.value == pytest.approx(8.0, abs=1e-12) and result.stderr == pytest.approx(0.0, abs=1e-12)
    assert result.num == 10 and result.dequantized and result.nfe == 2.0
    seen = torch.cat(model.inputs[::2])  # first repeat of each batch
    assert not torch.equal(seen, x) and (seen - x).abs().max() <= 1 / 255 + 1e-7  # dequantized within its bin


def test_discrete_processes_are_evaluated_on_the_levels_as_they_are() -> None:
    model, x = UniformModel(discrete=True), eight_bit_images(6)
    result = elbo_bpd(model, None, x, 256)
    assert result.value == pytest.approx(math.log2(512 / 255)) and not result.dequantized
    assert torch.equal(model.inputs[0], x)


def test_standard_error_is_that_of_the_per_image_mean() -> None:
    class Ramp(UniformModel):
        def nll_bound(self, net, x, generator=None, **cond):
            return x.flatten(1)[:, 0] + 1.0  # per image: its first value (+ 1)

    x = eight_bit_images(50)
    result = elbo_bpd(Ramp(), None, x, None, batch_size=7)
    values = x.flatten(1)[:, 0].double() + 1.0
    assert result.value == pytest.approx(float(values.mean()))
    assert result.stderr == pytest.approx(float(values.std() / math.sqrt(50)))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="N ≥ 1"):
        elbo_bpd(UniformModel(), None, torch.zeros(0, 1, 2, 2), 256)
    with pytest.raises(ValueError, match="levels"):
        elbo_bpd(UniformModel(), None, torch.zeros(2, 1, 2, 2), 1)


def test_ode_bits_per_dim_of_continuous_data_are_the_exact_density() -> None:
    """Continuous data (levels = None): PF-ODE bits/dim with the exact ε̂ equals −log₂ p₀(x)/D (the t = 0
    marginal) to the ODE tolerance; the standard error is the spread of the exact values over √n."""
    mean, cov = correlated_2d()
    process, oracle = oracle_process(mean, cov, gamma_max=16.0)
    process, oracle = process.double(), oracle.double()
    x = oracle.sample(40, gen(4))
    result = ode_bpd(process, oracle, x, None, divergence="exact", rtol=1e-7, atol=1e-7)
    sigma0_sq = float(process.noise_level(torch.zeros(1, dtype=torch.float64)).sigma ** 2)
    alpha0 = math.sqrt(1 - sigma0_sq)
    marginal_cov = alpha0**2 * cov + sigma0_sq * torch.eye(2, dtype=torch.float64)
    marginal = torch.distributions.MultivariateNormal(alpha0 * mean.flatten(), marginal_cov)
    exact = -marginal.log_prob(x.flatten(1)) / (2 * math.log(2))
    assert torch.allclose(result.per_image, exact, atol=1e-3)
    assert result.stderr == pytest.approx(float(exact.std() / math.sqrt(40)), rel=1e-2)
    assert result.nfe > 0 and not result.dequantized
