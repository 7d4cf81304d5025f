"""sample.compile: sampling through a torch.compile'd network gives the eager samples (CPU inductor)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from diffspace.build import Model, generate
from diffspace.config import RunConfig
from diffspace.families.gaussian import GaussianConfig
from diffspace.process import build_process


class SmallNet(nn.Module):
    """ε̂(x, t): a two-layer MLP on the flattened image and t."""

    def __init__(self, size: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(nn.Linear(size + 1, 32), nn.SiLU(), nn.Linear(32, size))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        flat = torch.cat([x.flatten(1), t[:, None].to(x.dtype)], dim=1)
        return self.layers(flat).view_as(x)


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m"])
def test_compiled_sampling_gives_the_eager_samples(sampler: str) -> None:
    torch._dynamo.reset()
    shape = (1, 4, 4)
    model = Model(SmallNet(16), build_process(GaussianConfig(), facts=shape))
    args = (model, shape, 6, sampler, 5, 0, 3, torch.device("cpu"))
    eager, eager_nfe = generate(*args)
    compiled, compiled_nfe = generate(*args, compile=True)
    assert compiled_nfe == eager_nfe
    assert torch.allclose(compiled, eager, rtol=1e-4, atol=1e-5), (compiled - eager).abs().max()
    assert not torch.equal(eager[:3], eager[3:])  # the samples differ from one another: the check is not vacuous


def test_sample_compile_is_a_config_knob_that_round_trips(tmp_path) -> None:
    cfg = RunConfig().with_overrides(["sample.compile=true"])
    cfg.save(tmp_path / "config.yaml")
    assert RunConfig.load(tmp_path / "config.yaml").sample.compile is True
