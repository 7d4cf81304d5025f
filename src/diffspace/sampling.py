"""What every family's samplers share: the result type, NFE counting, time grids, start states, fit checks,
the callback and the progress bar. Every sampler is a plain function with one signature:

    sampler(process, net, shape, steps=None, generator=None, *, grid=None, x_init=None, callback=None,
            cond=None, progress=False, **options) -> SampleResult

shape      — the data batch (B, C, H, W); the state has process.state_shape(shape).
steps      — number of steps N of the default grid (the sampler's own, e.g. t_i = 1 − i/N); or give
grid       — the times t_0 > t_1 > … > t_N explicitly (t_0 is where the start state lives).
generator  — a torch.Generator, or a `diffspace.noise.PerSampleGenerator` so that sample i does not depend
             on the batch size or split.
x_init     — a start state (default: a prior sample at t_0 = 1).
callback   — called after every step with {"i": step, "t": time reached, "x": state, "denoised": the
             estimate of the clean state at the step's last network evaluation}.
cond       — conditioning passed to the network (numbers become one value per sample).
progress   — a tqdm bar over the steps (off in the library, on in the command line).

A sampler that does not fit a process (see `process.capabilities.samplers`) raises ValueError naming those that do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from diffspace.noise import Generator
from diffspace.process import Process

Callback = Callable[[dict[str, Any]], None]


@dataclass
class SampleResult:
    """Samples in model space and the number of network evaluations (NFE) spent on them."""

    samples: Tensor
    nfe: int


Sampler = Callable[..., SampleResult]


class CountingNet:
    """Wraps a network and counts its calls (the NFE)."""

    def __init__(self, net: Callable[..., Tensor]) -> None:
        self.net, self.calls = net, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """net(*args, **kwargs), counted."""
        self.calls += 1
        return self.net(*args, **kwargs)


def require_fit(process: Process, name: str) -> None:
    """ValueError unless sampler `name` is one the process declares (capabilities.samplers)."""
    fitting = process.capabilities.samplers
    if name not in fitting:
        raise ValueError(f"sampler '{name}' does not fit {type(process).__name__}; samplers that fit it: "
                         f"{', '.join(fitting)}")


def time_grid(steps: int, rho: float = 1.0, t_end: float = 0.0, device: torch.device | str = "cpu") -> Tensor:
    """t_i = t_end + (1 − t_end)(1 − i/N)^ρ for i = 0 … N: from 1 down to t_end (ρ = 1 uniform, ρ > 1 finer near t_end)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"a sampler needs an integer number of steps ≥ 1; got {steps!r}")
    if rho <= 0 or not 0.0 <= t_end < 1.0:
        raise ValueError(f"need rho > 0 and 0 ≤ t_end < 1; got rho={rho}, t_end={t_end}")
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    return (t_end + (1 - t_end) * (1 - i) ** rho).to(device=device, dtype=torch.float32)


def check_grid(grid: Tensor, steps: int | None) -> Tensor:
    """A user's time grid as a 1-D float tensor, strictly decreasing inside [0, 1] with steps + 1 points."""
    grid = torch.as_tensor(grid, dtype=torch.float32).flatten()
    if grid.numel() < 2 or not bool((grid[1:] < grid[:-1]).all()) or grid.min() < 0 or grid.max() > 1:
        raise ValueError("a time grid must hold at least 2 strictly decreasing times in [0, 1] (t_0 = start)")
    if steps is not None and steps != grid.numel() - 1:
        raise ValueError(f"steps={steps} but the grid has {grid.numel() - 1} steps; give one of them")
    return grid


def choose_grid(steps: int | None, grid: Tensor | None, default: Callable[[int], Tensor],
                device: torch.device | str) -> Tensor:
    """The explicit `grid` if given, else default(steps), on `device`."""
    if grid is not None:
        return check_grid(grid, steps).to(device)
    if steps is None:
        raise ValueError("a sampler needs steps or an explicit grid")
    return default(steps).to(device)


def expand_cond(cond: dict[str, Any] | None, batch: int, device: torch.device) -> dict[str, Tensor]:
    """Conditioning values as (B,) float tensors: a number becomes one value per sample."""
    out = {}
    for key, value in (cond or {}).items():
        value = torch.as_tensor(value, dtype=torch.float32, device=device)
        out[key] = value.expand(batch) if value.dim() == 0 else value
    return out


def start_state(process: Process, shape: tuple[int, ...], generator: Generator, x_init: Tensor | None) -> Tensor:
    """`x_init` (checked against the state shape) or a prior sample."""
    state_shape = process.state_shape(tuple(shape))
    if x_init is None:
        return process.prior_sample(state_shape, generator)
    if tuple(x_init.shape) != tuple(state_shape):
        raise ValueError(f"x_init must have the state shape {tuple(state_shape)}; got {tuple(x_init.shape)}")
    return x_init.to(process.device)


def steps_of(count: int, progress: bool, name: str) -> Iterable[int]:
    """range(count), shown as a tqdm bar when `progress`."""
    return tqdm(range(count), desc=name, unit="step", leave=False, dynamic_ncols=True) if progress else range(count)


def report(callback: Callback | None, i: int, t: Tensor | float, x: Tensor, denoised: Tensor | None) -> None:
    """Call the callback (if any) after step i."""
    if callback is not None:
        callback({"i": i, "t": float(t), "x": x, "denoised": denoised})


__all__ = [
    "Callback", "CountingNet", "SampleResult", "Sampler", "check_grid", "choose_grid", "expand_cond", "report",
    "require_fit", "start_state", "steps_of", "time_grid",
]
