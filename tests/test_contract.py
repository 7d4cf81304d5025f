"""The process contract over every registered family, and proof that the checks catch a broken family."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import contract
from diffspace.families.gaussian import FAMILY as GAUSSIAN
from diffspace.families.gaussian.process import GaussianDiffusion
from diffspace.process import families


@pytest.mark.parametrize("check", [*contract.CHECKS, contract.check_round_trips], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(families()))
def test_family_keeps_the_contract(name: str, check, tmp_path: Path) -> None:
    record = families()[name]
    if check is contract.check_round_trips:
        check(record, tmp_path)
    else:
        check(record)


class WrongLossShape(GaussianDiffusion):
    """A Gaussian process whose loss is averaged over the batch: the training loop and the ELBO need one per sample."""

    def loss(self, net, x0, generator=None, **cond):
        return super().loss(net, x0, generator, **cond).mean()


class SharedNoise(GaussianDiffusion):
    """A Gaussian process whose prior sample ignores the per-sample generators (sample i depends on the batch)."""

    def prior_sample(self, shape, generator=None, device=None):
        return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(len(shape) + shape[0]))


def _broken(process_class: type) -> object:
    def build(cfg, facts, data, fitted):
        process = GAUSSIAN.build(cfg, facts, data, fitted)
        process.__class__ = process_class
        return process

    return dataclasses.replace(GAUSSIAN, build=build)


def test_the_checks_catch_a_family_that_breaks_the_contract(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"loss must be per sample, shape \(4,\); got \(\)"):
        contract.check_objectives(_broken(WrongLossShape))
    with pytest.raises(AssertionError, match="sample i depends on the batch"):
        contract.check_samplers(_broken(SharedNoise))
