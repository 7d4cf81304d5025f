"""Bits/dim of a data set under a trained model: the ELBO of any process family and the PF-ODE likelihood.

Discrete data on L levels (model space x = 2k/(L − 1) − 1) are dequantized explicitly: each
evaluation draws y = x + u·2/(L − 1), u ~ U[−½, ½)^D, and the bound of the continuous density
p(y) in model space converts to the discrete one by −log₂ P(k)/D ≤ −log₂ p(y)/D + log₂((L − 1)/2)
(`diffspace.likelihood.discrete_bpd`): the offset is log₂((L − 1)/2) = 6.994 bits for 8-bit
data in [−1, 1], the familiar "+8 bits" for data scaled by 1/256 to [0, 1). Processes whose
state is already discrete (capabilities.discrete: counts) bound −log₂ P(k)/D directly and are
evaluated on the data as they are. Continuous fields (levels = None) are evaluated as they are, in
continuous bits/dim. Standard errors are s/√n over the n images (each image's value averaged
over `repeats` independent draws).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from diffspace.likelihood import dequantize, discrete_bpd, ode_nll
from diffspace.noise import Generator
from diffspace.process import ContinuousProcess, Process

#: bound(net, x, generator, **cond) → per-sample bits/dim: `process.nll_bound` or a variant of it.
Bound = Callable[..., Tensor]


@dataclass
class BpdResult:
    """Mean bits/dim, its standard error s/√n, the number of images, how it was computed and the NFE."""

    value: float
    stderr: float
    num: int
    method: str
    dequantized: bool
    nfe: float | None
    per_image: Tensor


def _summary(values: Tensor, method: str, dequantized: bool, nfe: float | None) -> BpdResult:
    values = values.to(torch.float64)
    n = values.numel()
    stderr = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    return BpdResult(float(values.mean()), stderr, n, method, dequantized, nfe, values)


def _check(images: Tensor, levels: int | None, batch_size: int, repeats: int) -> None:
    if images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"bits/dim needs images (N ≥ 1, C, H, W); got shape {tuple(images.shape)}")
    if levels is not None and levels < 2:
        raise ValueError(f"levels must be ≥ 2 (or None for continuous data); got {levels}")
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"need batch_size ≥ 1 and repeats ≥ 1; got {batch_size}, {repeats}")


@torch.no_grad()
def elbo_bpd(
    process: Process,
    net: Callable[..., Tensor],
    images: Tensor,
    levels: int | None,
    *,
    generator: Generator = None,
    batch_size: int = 256,
    repeats: int = 1,
    cond: dict[str, Any] | None = None,
    bound: Bound | None = None,
) -> BpdResult:
    """Mean −ELBO in bits/dim of the discrete data (module doc) from `bound` (default `process.nll_bound`), ± s/√n;
    dequantized unless the process's state is discrete or the data are continuous (levels None)."""
    _check(images, levels, batch_size, repeats)
    bound = process.nll_bound if bound is None else bound
    device = process.device
    discrete = process.capabilities.discrete
    dim = images[0].numel()
    values = []
    for chunk in images.split(batch_size):
        x = chunk.to(device, torch.float32)
        total = torch.zeros(len(x), dtype=torch.float64, device=device)
        for _ in range(repeats):
            if discrete or levels is None:
                bits = bound(net, x, generator, **(cond or {}))
            else:
                bits = bound(net, dequantize(x, levels, generator), generator, **(cond or {}))
                bits = discrete_bpd(bits.double() * dim * math.log(2.0), dim, levels)
            total += bits.double() / repeats
        values.append(total.cpu())
    dequantized = not discrete and levels is not None
    return _summary(torch.cat(values), f"elbo ({type(process).__name__})", dequantized, float(repeats))


def ode_bpd(
    process: ContinuousProcess,
    net: Callable[..., Tensor],
    images: Tensor,
    levels: int | None,
    *,
    divergence: str = "hutchinson",
    generator: Generator = None,
    batch_size: int = 64,
    cond: dict[str, Any] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> BpdResult:
    """Mean −log₂ P/D of the dequantized data under the probability-flow ODE (dopri5), ± s/√n; NFE per batch."""
    _check(images, levels, batch_size, 1)
    device = process.device
    dim = images[0].numel()
    values, calls = [], []
    for chunk in images.split(batch_size):
        x = chunk.to(device, torch.float32)
        if levels is not None:
            x = dequantize(x, levels, generator)
        result = ode_nll(process, net, x, divergence=divergence, generator=generator, cond=cond, rtol=rtol, atol=atol)
        nll = result.nll.detach().double()
        values.append((discrete_bpd(nll, dim, levels) if levels is not None else nll / (dim * math.log(2.0))).cpu())
        calls.append(result.nfe)
    return _summary(torch.cat(values), f"pf-ode dopri5 ({divergence})", levels is not None,
                    sum(calls) / len(calls))
