"""Samplers for Blackout diffusion, with the shared sampler signature of `diffspace.sampling`.

Generation starts from the empty image x = 0 at step k_0 = T (t = 1) and visits the strided steps
k_i = ⌊T(N − i)/N⌋ down to k_N = 0 (any N ≤ T; the "uniform" grid, and N = T by default), or the steps
k_i = round(t_i T) of an explicit grid. One step from t = t_k to s = t_j (j < k) adds births, never removes units: states stay
integers in [0, max] and never decrease. Between the two times, a unit still missing at t is born
by s with probability q = (p_j − p_k)/(1 − p_k), so given x_0 the births are Binomial(x_0 − x_t, q).
The samplers differ in how they replace the unknown x_0 − x_t by the network's ŷ ≈ E[x_0 − x_t | x_t]:

    binomial_bridge      Binomial(n̂, q),  n̂ = ŷ rounded (stochastically by default), ≤ max − x_t
    tau_leaping          Poisson(q ŷ)                         (clipped at max)
    stochastic_rounding  ⌊q ŷ⌋ + Bernoulli(frac(q ŷ))         (clipped at max); deterministic=True
                         rounds q ŷ to the nearest integer instead, which gives no births at all
                         while q ŷ < ½ and stays biased however many steps are taken
    exact_bridge         Binomial(x_0 − x_t, q) with x_0 ~ P(x_0 | x_t) from an exact posterior
                         (a BlackoutPosterior in place of the network; toy problems only)

The callback's "denoised" is the estimate x_t + ŷ of x_0 (clipped to [0, max]) in counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffspace.families.blackout.config import SAMPLER_NAMES
from diffspace.families.blackout.process import BlackoutDiffusion
from diffspace.noise import Generator, binomial, poisson, uniform_noise
from diffspace.sampling import (
    Callback, CountingNet, SampleResult, Sampler, check_grid, expand_cond, report, require_fit, start_state, steps_of,
    with_defaults,
)

Net = Callable[..., Tensor]
#: births(counted net, x, k, j, cond) → (births between steps k > j, the estimate of x_0 − x_t or None)
Births = Callable[[CountingNet, Tensor, int, int, dict[str, Tensor]], tuple[Tensor, Tensor | None]]

ROUNDINGS = ("stochastic", "nearest")


def strided_steps(num_steps: int, steps: int) -> list[int]:
    """The step indices k_i = ⌊T(N − i)/N⌋, i = 0…N: strictly decreasing from T to 0 for 1 ≤ N ≤ T."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"a sampler needs an integer number of steps ≥ 1; got {steps!r}")
    if steps > num_steps:
        raise ValueError(
            f"steps={steps} exceeds the process's num_steps T={num_steps}: a Blackout sampler visits a "
            f"subset of the T observation times; use steps ≤ {num_steps}"
        )
    return [num_steps * (steps - i) // steps for i in range(steps + 1)]


def grid_steps(num_steps: int, grid: Tensor, steps: int | None) -> list[int]:
    """The step indices k_i = round(t_i T) of an explicit time grid; they must be strictly decreasing."""
    ks = [int(k) for k in torch.round(check_grid(grid, steps).double() * num_steps).long()]
    if any(b >= a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"the grid's times fall on repeated observation steps k = round(tT) of T={num_steps}: {ks}")
    return ks


def stochastic_round(x: Tensor, generator: Generator) -> Tensor:
    """⌊x⌋ + Bernoulli(x − ⌊x⌋): an integer with mean x."""
    low = torch.floor(x)
    return low + (uniform_noise(tuple(x.shape), generator, x.device) < x - low).to(x.dtype)


def _integrate(process: BlackoutDiffusion, name: str, net: Net, shape: tuple[int, ...], steps: int | None,
               generator: Generator, grid: Tensor | None, x_init: Tensor | None, callback: Callback | None,
               cond: dict[str, Any] | None, progress: bool, births: Births) -> SampleResult:
    """x ← min(x + births(net, x, k, j, cond), max) over the steps, from x_init (default x = 0 at k = T)."""
    require_fit(process, name)
    counted = CountingNet(net)
    if isinstance(grid, str):
        if grid != "uniform":
            raise ValueError(f"grid {grid!r}: a Blackout sampler visits the strided steps k_i = ⌊T(N − i)/N⌋ "
                             "(grid 'uniform') or the times of an explicit grid tensor")
        grid = None
    steps = process.num_steps if steps is None and grid is None else steps
    ks = grid_steps(process.num_steps, grid, steps) if grid is not None else strided_steps(process.num_steps, steps)
    if x_init is None and ks[0] != process.num_steps:
        raise ValueError(f"a grid that starts at t = {ks[0] / process.num_steps:g} < 1 needs the counts there (x_init)")
    x = start_state(process, shape, generator, x_init)
    if x_init is not None:
        x = process.check_counts(x)
    cond = expand_cond(cond, shape[0], x.device)
    for i in steps_of(len(ks) - 1, progress, name):
        k, j = ks[i], ks[i + 1]
        born, missing = births(counted, x, k, j, cond)
        denoised = None if missing is None else torch.clamp(x + missing, 0, process.max_count)
        x = torch.clamp(x + born, max=process.max_count)
        report(callback, i, j / process.num_steps, x, denoised)
    return SampleResult(process.from_state(x), counted.calls)


def _q(process: BlackoutDiffusion, k: int, j: int, like: Tensor) -> Tensor:
    """q = (p_j − p_k)/(1 − p_k) (float64) shaped like `like`."""
    return process.birth_probability(k, j).to(like.device).expand(like.shape)


def _round(x: Tensor, rounding: str, generator: Generator) -> Tensor:
    """Stochastic (unbiased) or nearest-integer rounding."""
    return stochastic_round(x, generator) if rounding == "stochastic" else torch.round(x)


@with_defaults(steps=lambda process: process.num_steps)
@torch.no_grad()
def binomial_bridge(
    process: BlackoutDiffusion,
    net: Net,
    shape: tuple[int, ...],
    steps: int | None = None,
    generator: Generator = None,
    *,
    grid: Tensor | str | None = None,
    x_init: Tensor | None = None,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
    rounding: str = "stochastic",
) -> SampleResult:
    """Binomial bridge: x_s = x_t + Binomial(n̂, q), n̂ = clamp(round(ŷ), 0, max − x_t), q = (p_s − p_t)/(1 − p_t)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; choose one of {ROUNDINGS}")

    def births(counted: CountingNet, x: Tensor, k: int, j: int, cond: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        expected = process.remaining(counted, x, k, cond)
        missing = torch.minimum(_round(expected, rounding, generator).clamp_min(0), process.max_count - x)
        return binomial(missing.double(), _q(process, k, j, x), generator).to(x.dtype), expected

    return _integrate(process, "binomial_bridge", net, shape, steps, generator, grid, x_init, callback, cond,
                      progress, births)


@with_defaults(steps=lambda process: process.num_steps)
@torch.no_grad()
def tau_leaping(
    process: BlackoutDiffusion,
    net: Net,
    shape: tuple[int, ...],
    steps: int | None = None,
    generator: Generator = None,
    *,
    grid: Tensor | str | None = None,
    x_init: Tensor | None = None,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
) -> SampleResult:
    """Poisson τ-leaping: x_s = min(x_t + Poisson(q ŷ), max), the births' mean held at the bridge's q ŷ."""

    def births(counted: CountingNet, x: Tensor, k: int, j: int, cond: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        expected = process.remaining(counted, x, k, cond)
        return poisson(_q(process, k, j, x).to(x.dtype) * expected, generator), expected

    return _integrate(process, "tau_leaping", net, shape, steps, generator, grid, x_init, callback, cond, progress,
                      births)


@with_defaults(steps=lambda process: process.num_steps)
@torch.no_grad()
def stochastic_rounding(
    process: BlackoutDiffusion,
    net: Net,
    shape: tuple[int, ...],
    steps: int | None = None,
    generator: Generator = None,
    *,
    grid: Tensor | str | None = None,
    x_init: Tensor | None = None,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
    deterministic: bool = False,
) -> SampleResult:
    """x_s = min(x_t + SR(q ŷ), max), SR(v) = ⌊v⌋ + Bernoulli(v − ⌊v⌋); deterministic=True: round(q ŷ) (biased)."""
    rounding = "nearest" if deterministic else "stochastic"

    def births(counted: CountingNet, x: Tensor, k: int, j: int, cond: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        expected = process.remaining(counted, x, k, cond)
        return _round(_q(process, k, j, x).to(x.dtype) * expected, rounding, generator), expected

    return _integrate(process, "stochastic_rounding", net, shape, steps, generator, grid, x_init, callback, cond,
                      progress, births)


@with_defaults(steps=lambda process: process.num_steps)
@torch.no_grad()
def exact_bridge(
    process: BlackoutDiffusion,
    net: Net,
    shape: tuple[int, ...],
    steps: int | None = None,
    generator: Generator = None,
    *,
    grid: Tensor | str | None = None,
    x_init: Tensor | None = None,
    callback: Callback | None = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
) -> SampleResult:
    """Exact-posterior bridge: x_0 ~ P(x_0 | x_t), x_s = x_t + Binomial(x_0 − x_t, q); exact at any step count.

    `net` must offer `posterior(n, k)` (a BlackoutPosterior); each step draws x_0 by inverting
    the posterior's CDF at one uniform per pixel.
    """
    require_fit(process, "exact_bridge")
    posterior = getattr(net, "posterior", None)
    if not callable(posterior):
        raise ValueError(
            "exact_bridge needs an exact posterior in place of the network (a BlackoutPosterior with "
            "posterior(n, k)); a trained network only estimates E[x_0 − x_t | x_t]: use binomial_bridge"
        )

    def births(counted: CountingNet, x: Tensor, k: int, j: int, cond: dict[str, Tensor]) -> tuple[Tensor, None]:
        counted.calls += 1
        cdf = posterior(x, k).cumsum(-1)
        u = uniform_noise(tuple(x.shape), generator, x.device, torch.float64).unsqueeze(-1) * cdf[..., -1:]
        x0 = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=process.max_count).to(torch.float64)
        return binomial((x0 - x).clamp_min(0), _q(process, k, j, x), generator).to(x.dtype), None

    return _integrate(process, "exact_bridge", net, shape, steps, generator, grid, x_init, callback, cond, progress,
                      births)


SAMPLERS: dict[str, Sampler] = dict(zip(SAMPLER_NAMES, (binomial_bridge, tau_leaping, stochastic_rounding,
                                                         exact_bridge), strict=True))

__all__ = ["SAMPLERS", "binomial_bridge", "exact_bridge", "grid_steps", "stochastic_rounding", "strided_steps",
           "tau_leaping"]
