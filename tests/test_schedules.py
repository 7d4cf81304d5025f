"""Schedules: α² + σ² = 1, γ′ against finite differences, GUD soft-conditioning identities."""

from __future__ import annotations

import math

import pytest
import torch

from diffspace.families.gaussian.schedules import Cosine, LogSNRLinear, SoftConditioning, VPLinear, alpha_sigma

LABELS = torch.tensor([0.0, 1.0, 2.5, 4.0], dtype=torch.float64).view(1, 2, 2)


def all_schedules():
    return [
        LogSNRLinear(),
        Cosine(),
        VPLinear(),
        SoftConditioning(LABELS, softness=0.7),
        SoftConditioning(LABELS, softness=0.2, clip=True),
    ]


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: type(s).__name__)
def test_variance_preserving(schedule) -> None:
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha, sigma = alpha_sigma(schedule.gamma(t))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(alpha), atol=1e-12)


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: type(s).__name__)
def test_derivative_matches_finite_difference(schedule) -> None:
    t = torch.linspace(0.013, 0.987, 57, dtype=torch.float64)
    h = 1e-6
    numeric = (schedule.gamma(t + h) - schedule.gamma(t - h)) / (2 * h)
    _, analytic = schedule(t)
    kink = torch.zeros_like(numeric, dtype=torch.bool)
    if getattr(schedule, "clip", False):  # a clamped γ has a kink at each window edge
        start, end = schedule.active_window()
        tt = t.view(-1, 1, 1, 1)
        kink = ((tt - start).abs() < 2 * h) | ((tt - end).abs() < 2 * h)
    assert torch.allclose(numeric[~kink], analytic.expand_as(numeric)[~kink], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("schedule", [LogSNRLinear(-7, 9), Cosine(-7, 9), VPLinear(-7, 9)], ids=str)
def test_scalar_endpoints_and_monotone(schedule) -> None:
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    gamma = schedule.gamma(t).flatten()
    assert gamma[0].item() == pytest.approx(-7, abs=1e-6) and gamma[-1].item() == pytest.approx(9, abs=1e-6)
    assert bool((gamma[1:] > gamma[:-1]).all())
    back = schedule.time_of_gamma(gamma)
    assert torch.allclose(back, t, atol=1e-9)


def test_vp_linear_is_the_usual_vp_sde() -> None:
    schedule = VPLinear(gamma_min=-10, gamma_max=10, beta_min=0.1)
    assert schedule.beta_max == pytest.approx(19.9, abs=0.01)
    t = torch.tensor([0.3], dtype=torch.float64)
    integral = schedule.b0 + 0.1 * 0.3 + 0.5 * (schedule.beta_max - 0.1) * 0.09
    alpha, _ = alpha_sigma(schedule.gamma(t))
    assert alpha.item() ** 2 == pytest.approx(math.exp(-integral), rel=1e-10)


def test_soft_endpoint_targets() -> None:
    """Every component starts at or below γ_min and ends at or above γ_max; the extremes hit them."""
    schedule = SoftConditioning(LABELS, softness=0.5, gamma_min=-8, gamma_max=6)
    start = schedule.gamma(torch.zeros(1, dtype=torch.float64))
    end = schedule.gamma(torch.ones(1, dtype=torch.float64))
    assert start.max().item() == pytest.approx(-8) and bool((start <= -8 + 1e-9).all())
    assert end.min().item() == pytest.approx(6) and bool((end >= 6 - 1e-9).all())


def test_large_softness_gives_equal_snr() -> None:
    schedule = SoftConditioning(LABELS, softness=1e7)
    gamma = schedule.gamma(torch.linspace(0, 1, 11, dtype=torch.float64))
    reference = LogSNRLinear().gamma(torch.linspace(0, 1, 11, dtype=torch.float64))
    assert (gamma - reference).abs().max() < 1e-5


def test_unit_hierarchy_with_log_variance_labels_is_standard_diffusion() -> None:
    """a = 1, l = −log λ: γ_i(t) + log λ_i is one scalar log-SNR-linear schedule for all i."""
    variance = torch.tensor([4.0, 1.0, 0.25, 0.01], dtype=torch.float64).view(1, 2, 2)
    labels = -variance.log()
    schedule = SoftConditioning(labels, softness=1.0, gamma_min=-10, gamma_max=10)
    t = torch.linspace(0, 1, 21, dtype=torch.float64)
    unwhitened = schedule.gamma(t) + variance.log()
    standard = LogSNRLinear(-10 - labels.max().item(), 10 - labels.min().item()).gamma(t)
    assert torch.allclose(unwhitened, standard.expand_as(unwhitened), atol=1e-5)


@pytest.mark.parametrize("softness", [0.05, 0.1, 0.2, 0.5, 2.0])
def test_overlap_rule(softness: float) -> None:
    """Windows of i and j overlap iff a |l_i − l_j| < γ_max − γ_min, checked on a fine time grid."""
    labels = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64).view(1, 1, 4)
    schedule = SoftConditioning(labels, softness=softness, gamma_min=-5, gamma_max=5)
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    gamma = schedule.gamma(t).view(len(t), 4)
    active = (gamma > -5) & (gamma < 5)
    for i in range(4):
        for j in range(i + 1, 4):
            overlap = bool((active[:, i] & active[:, j]).any())
            assert overlap == (abs(labels.flatten()[i] - labels.flatten()[j]).item() / softness < 10)


def test_clipping_freezes_components_outside_their_window() -> None:
    schedule = SoftConditioning(LABELS, softness=0.1, clip=True)
    t = torch.linspace(0, 1, 401, dtype=torch.float64)
    gamma, dgamma = schedule(t)
    start, end = schedule.active_window()
    inside = (t.view(-1, 1, 1, 1) > start) & (t.view(-1, 1, 1, 1) < end)
    assert bool((dgamma[~inside] == 0).all()) and bool((dgamma[inside] > 0).all())
    assert bool(((gamma >= -10) & (gamma <= 10)).all())


def test_invalid_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="softness"):
        SoftConditioning(LABELS, softness=0.0)
    with pytest.raises(ValueError, match="gamma_min < gamma_max"):
        Cosine(3.0, 1.0)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        Cosine()(torch.zeros(2, 2))
