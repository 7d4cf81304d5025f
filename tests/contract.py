"""The process contract, as checks any registered family must pass (in the spirit of diffusers' common
scheduler tests): `check_family(record)` raises AssertionError naming the first broken promise.

Each check builds the family's default config for 17-level 1×4×4 data (the digits' levels), a tiny
convolutional network with the channels the process asks for, and exercises the contract: shapes and
dtypes, coordinates, the forward marginal, a finite differentiable loss and bound, prior samples, every
fitting sampler (finite states; integer counts for discrete families; independent of the batch split),
refusal of the samplers that do not fit, every named time grid it declares, and config and state-dict round
trips.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from diffspace.build import Model
from diffspace.config import RunConfig
from diffspace.noise import PerSampleGenerator
from diffspace.process import DataFacts, Family, Process, resolve_config, samplers

LEVELS = 17
FACTS = DataFacts((1, 4, 4), LEVELS)
BATCH = 4


class TinyNet(nn.Module):
    """net(x, t) with a time-dependent bias: enough to make every output depend on x and t."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(1, out_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return 0.1 * self.conv(x) + 0.1 * self.time(t[:, None].float())[:, :, None, None].to(x.dtype)


def data(batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    """Model-space images on the 17 levels of FACTS."""
    k = torch.randint(0, LEVELS, (batch, *FACTS.shape), generator=torch.Generator().manual_seed(seed))
    return 2 * k.float() / (LEVELS - 1) - 1


def build(record: Family) -> tuple[Process, TinyNet]:
    """The family's default process for FACTS, fitted to 64 images, and a tiny network for it."""
    torch.manual_seed(0)
    cfg = record.resolve(record.config(), FACTS)
    process = record.build(cfg, FACTS, data(64, seed=1), None)
    channels_in, channels_out = process.network_channels(FACTS.shape[0])
    return process, TinyNet(channels_in, channels_out)


def check_shapes(record: Family) -> None:
    """State shape, network channels, coordinates, marginal and prior sample agree."""
    process, net = build(record)
    x = data()
    state_shape = tuple(process.state_shape((BATCH, *FACTS.shape)))
    assert process.network_channels(FACTS.shape[0])[0] == state_shape[1], "network input channels ≠ state channels"
    state = process.to_state(x)
    assert tuple(state.shape) == state_shape, f"to_state gives {tuple(state.shape)}, state_shape {state_shape}"
    back = process.from_state(state)
    assert back.shape == x.shape and torch.allclose(back.float(), x, atol=1e-4), "from_state(to_state(x)) ≠ x"
    marginal = process.marginal(x, torch.full((BATCH,), 0.5), torch.Generator().manual_seed(2))
    assert tuple(marginal.state.shape) == state_shape, "the marginal's state has the wrong shape"
    assert marginal.target.shape[0] == BATCH and torch.isfinite(marginal.target).all(), "bad marginal target"
    prior = process.prior_sample(state_shape, torch.Generator().manual_seed(3))
    assert tuple(prior.shape) == state_shape and torch.isfinite(prior).all(), "bad prior sample"
    if process.capabilities.discrete:
        assert torch.equal(prior, prior.round()) and torch.equal(marginal.state, marginal.state.round()), \
            "a discrete process's states must hold integers"


def check_objectives(record: Family) -> None:
    """loss and nll_bound: one finite value per sample; the loss is differentiable in the network."""
    process, net = build(record)
    loss = process.loss(net, data(), torch.Generator().manual_seed(4))
    assert loss.shape == (BATCH,), f"loss must be per sample, shape ({BATCH},); got {tuple(loss.shape)}"
    assert torch.isfinite(loss).all(), "loss is not finite"
    loss.mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "loss is not differentiable in the net"
    assert any(float(g.abs().sum()) > 0 for g in grads), "loss does not depend on the network"
    bound = process.nll_bound(net, data(), torch.Generator().manual_seed(5))
    assert bound.shape == (BATCH,) and torch.isfinite(bound).all(), "nll_bound must be finite, one per sample"


def check_samplers(record: Family) -> None:
    """Every fitting sampler runs, returns finite model-space samples of the data shape (integer counts for
    discrete families) with its NFE, reports the denoised estimate, and does not depend on the batch split."""
    process, net = build(record)
    shape = (BATCH, *FACTS.shape)
    assert process.capabilities.samplers == tuple(record.samplers), "capabilities.samplers ≠ the family's samplers"
    for name, sampler in record.samplers.items():
        if name in record.oracle_only:
            continue
        seen: list[dict] = []
        result = sampler(process, net, shape, 3, PerSampleGenerator.for_indices(7, range(BATCH)), callback=seen.append)
        samples = result.samples
        assert samples.shape == shape and torch.isfinite(samples).all(), f"{name}: bad samples"
        assert result.nfe >= 3 and len(seen) == 3, f"{name}: NFE {result.nfe}, {len(seen)} callbacks for 3 steps"
        assert seen[-1]["denoised"] is None or seen[-1]["denoised"].shape == seen[-1]["x"].shape
        if process.capabilities.discrete:
            counts = process.to_state(samples.clamp(-1, 1))
            assert torch.equal(counts, counts.round()), f"{name}: counts are not integers"
        halves = [sampler(process, net, (2, *FACTS.shape), 3, PerSampleGenerator.for_indices(7, rows)).samples
                  for rows in (range(0, 2), range(2, 4))]
        assert torch.allclose(torch.cat(halves), samples, atol=1e-5), f"{name}: sample i depends on the batch"


def check_refusals(record: Family) -> None:
    """A sampler of another family is refused with a ValueError that names the fitting samplers."""
    process, net = build(record)
    for name, sampler in samplers().items():
        if name in record.samplers:
            continue
        try:
            sampler(process, net, (2, *FACTS.shape), 2, torch.Generator().manual_seed(0))
        except ValueError as err:
            assert f"sampler '{name}' does not fit" in str(err) and next(iter(record.samplers)) in str(err), \
                f"{name}: unclear refusal: {err}"
        else:
            raise AssertionError(f"sampler {name} ran on a {record.name} process it does not fit")


def check_round_trips(record: Family, tmp_path: Path) -> None:
    """The family's config saves and reloads exactly inside a RunConfig; a state dict restores the same loss."""
    cfg = dataclasses.replace(RunConfig(), process=resolve_config(record.config(), FACTS))
    cfg.save(tmp_path / "config.yaml")
    assert RunConfig.load(tmp_path / "config.yaml") == cfg, "config does not round-trip through YAML"
    process, net = build(record)
    model = Model(net, process)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(99)
    other_process, other_net = build(record)
    other = Model(other_net, other_process)
    other.load_state_dict(state)
    x = data()
    a = model.process.loss(model.net, x, torch.Generator().manual_seed(6))
    b = other.process.loss(other.net, x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b), "a reloaded state dict gives another loss"


def check_grids(record: Family) -> None:
    """Every named grid the process declares (and "uniform") runs from 1 down to t_end, strictly decreasing."""
    from diffspace.sampling import GRIDS, make_grid

    process, _ = build(record)
    assert set(process.capabilities.grids) <= set(GRIDS) - {"uniform"}, "capabilities.grids names an unknown grid"
    for name in ("uniform", *process.capabilities.grids):
        grid = make_grid(process, name, 5)
        assert grid.shape == (6,) and float(grid[0]) == 1.0 and float(grid[-1]) == 0.0, f"grid {name}: bad ends"
        assert bool((grid[1:] < grid[:-1]).all()), f"grid {name} is not strictly decreasing"


CHECKS = (check_shapes, check_objectives, check_samplers, check_refusals, check_grids)


def check_family(record: Family, tmp_path: Path) -> None:
    """Every check of the contract (AssertionError on the first broken promise)."""
    for check in CHECKS:
        check(record)
    check_round_trips(record, tmp_path)
