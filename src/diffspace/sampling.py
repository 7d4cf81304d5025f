"""What every family's samplers share: the result type, NFE counting, time grids, start states, fit checks,
the callback and the progress bar. Every sampler is a plain function with one signature:

    sampler(process, net, shape, steps=None, generator=None, *, grid=None, x_init=None, callback=None,
            cond=None, progress=False, **options) -> SampleResult

shape      — the data batch (B, C, H, W); the state has process.state_shape(shape).
steps      — number of steps N (default: the sampler's own, `Defaults.steps`).
grid       — the times t_0 > t_1 > … > t_N explicitly (t_0 is where the start state lives), or the name of a
             grid (`GRIDS`) built with `rho` and `t_end`; default: the sampler's own (`Defaults`).
generator  — a torch.Generator, or a `diffspace.noise.PerSampleGenerator` so that sample i does not depend
             on the batch size or split.
x_init     — a start state (default: a prior sample at t_0 = 1).
callback   — called after every step with {"i": step, "t": time reached, "x": state, "denoised": the
             estimate of the clean state at the step's last network evaluation}.
cond       — conditioning passed to the network (numbers become one value per sample).
progress   — a tqdm bar over the steps (off in the library, on in the command line).

A sampler that does not fit a process (see `process.capabilities.samplers`) raises ValueError naming those that do.

Named time grids (`GRIDS`): "uniform" is defined here for every process, t_i = t_end + (1 − t_end)(1 − i/N)^ρ;
the others are the process's own (`capabilities.grids`, built by `process.time_grid`), since they follow its noise
levels: "edm" (EDM's ρ-spacing of the noise level σ/α, Karras et al. 2022), "logsnr" (uniform in log-SNR) and
"windows" (each component's active window, for component-wise schedules). A sampler's other keyword options
(`sampler_options`) are its knobs: `rho`, `t_end`, `eta`, `churn`, `snr`, `rounding`, …
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

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


#: The named time grids and the ρ each takes by default (None: it takes no ρ). "uniform" is built here for every
#: process; a process builds the others it declares in `capabilities.grids` (`process.time_grid`).
GRIDS: dict[str, float | None] = {"uniform": 1.0, "edm": 7.0, "logsnr": None, "windows": 7.0}
GRID_NAMES = tuple(GRIDS)
#: The keyword arguments every sampler takes that are not its knobs (`sampler_options`).
SHARED_ARGUMENTS = ("x_init", "callback", "cond", "progress")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Defaults:
    """A sampler's defaults: its number of steps (an int, or a function of the process such as Blackout's T) and
    its grid, by name, with the grid's ρ (None: the grid's own default, `GRIDS`)."""

    steps: int | Callable[[Process], int]
    grid: str = "uniform"
    rho: float | None = None

    def steps_for(self, process: Process) -> int:
        """The default number of steps for `process`."""
        return self.steps(process) if callable(self.steps) else self.steps


def with_defaults(steps: int | Callable[[Process], int], grid: str = "uniform",
                  rho: float | None = None) -> Callable[[F], F]:
    """Decorator: record a sampler's `Defaults` on the function (`sampler.defaults`)."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")

    def mark(fn: F) -> F:
        fn.defaults = Defaults(steps, grid, rho)  # type: ignore[attr-defined]
        return fn

    return mark


def defaults_of(sampler: Callable[..., Any]) -> Defaults | None:
    """The `Defaults` a sampler declares (None for one without them)."""
    return getattr(sampler, "defaults", None)


def default_steps(sampler: Callable[..., Any], process: Process) -> int | None:
    """The number of steps a sampler takes for `process` when none is given (None when it declares none)."""
    defaults = defaults_of(sampler)
    return None if defaults is None else defaults.steps_for(process)


def sampler_options(sampler: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The knobs of a sampler: its keyword-only parameters other than `SHARED_ARGUMENTS` (`grid` included), by name."""
    params = inspect.signature(sampler).parameters.values()
    return {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in SHARED_ARGUMENTS}


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"a sampler needs an integer number of steps ≥ 1; got {steps!r}")


def time_grid(steps: int, rho: float = 1.0, t_end: float = 0.0, device: torch.device | str = "cpu") -> Tensor:
    """t_i = t_end + (1 − t_end)(1 − i/N)^ρ for i = 0 … N: from 1 down to t_end (ρ = 1 uniform, ρ > 1 finer near t_end)."""
    _check_steps(steps)
    if rho <= 0 or not 0.0 <= t_end < 1.0:
        raise ValueError(f"need rho > 0 and 0 ≤ t_end < 1; got rho={rho}, t_end={t_end}")
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    return (t_end + (1 - t_end) * (1 - i) ** rho).to(device=device, dtype=torch.float32)


def rho_spacing(steps: int, high: Tensor | float, low: Tensor | float, rho: float) -> Tensor:
    """EDM's noise levels σ_i = (σ_hi^{1/ρ} + (i/N)(σ_lo^{1/ρ} − σ_hi^{1/ρ}))^ρ, i = 0 … N, from `high` down to `low`
    (float64; ρ → ∞ is log-uniform spacing). Broadcasts over the shapes of `high` and `low` (leading axis: i)."""
    _check_steps(steps)
    if rho <= 0:
        raise ValueError(f"need rho > 0; got rho={rho}")
    high, low = torch.as_tensor(high, dtype=torch.float64), torch.as_tensor(low, dtype=torch.float64)
    i = (torch.arange(steps + 1, dtype=torch.float64) / steps).view(-1, *([1] * max(high.dim(), low.dim())))
    return (high ** (1 / rho) + i * (low ** (1 / rho) - high ** (1 / rho))) ** rho


def invert_increasing(fn: Callable[[Tensor], Tensor], targets: Tensor, low: float = 0.0, high: float = 1.0,
                      iterations: int = 60) -> Tensor:
    """t ∈ [low, high] with fn(t) = target for each target, fn non-decreasing and vectorised over t (T,) → (T,), by
    bisection in float64 (a target outside fn's range gives the nearer end)."""
    target = torch.as_tensor(targets, dtype=torch.float64)
    lo, hi = torch.full_like(target, low), torch.full_like(target, high)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = fn(mid).to(torch.float64).view(-1) < target.view(-1)
        below = below.view_as(target)
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def noise_grid(name: str, steps: int, rho: float | None, t_end: float, gamma: Callable[[Tensor], Tensor]) -> Tensor:
    """The grids "edm" and "logsnr" for a process whose noise coordinate γ(t) = −(log-SNR) is non-decreasing in t
    (`gamma`: times (T,) float64 → (T,)), from t = 1 down to t_end, float64:

        edm     e^{γ(t_i)/2} = EDM's ρ-spacing of the noise level (`rho_spacing`) from e^{γ(1)/2} to e^{γ(t_end)/2}
        logsnr  γ(t_i) uniform from γ(1) to γ(t_end)

    mapped back to times by bisection, with the ends pinned to 1 and t_end."""
    high, low = gamma(torch.tensor([1.0, t_end], dtype=torch.float64)).to(torch.float64)
    if name == "edm":
        targets = 2 * torch.log(rho_spacing(steps, torch.exp(high / 2), torch.exp(low / 2), rho).view(-1))
    elif name == "logsnr":
        targets = high + (low - high) * torch.arange(steps + 1, dtype=torch.float64) / steps
    else:
        raise ValueError(f"noise_grid builds the grids edm and logsnr; got {name!r}")
    return pinned(invert_increasing(gamma, targets, low=t_end), t_end)


def pinned(times: Tensor, t_end: float) -> Tensor:
    """A grid with its ends set exactly to 1 and t_end (bisection leaves them within 10⁻¹⁸)."""
    times = times.clone()
    times[0], times[-1] = 1.0, t_end
    return times


def check_grid(grid: Tensor, steps: int | None) -> Tensor:
    """A user's time grid as a 1-D float tensor, strictly decreasing inside [0, 1] with steps + 1 points."""
    if isinstance(grid, str):
        raise ValueError(f"grid {grid!r} is a grid name: this sampler takes an explicit tensor of times")
    grid = torch.as_tensor(grid, dtype=torch.float32).flatten()
    if grid.numel() < 2 or not bool((grid[1:] < grid[:-1]).all()) or grid.min() < 0 or grid.max() > 1:
        raise ValueError("a time grid must hold at least 2 strictly decreasing times in [0, 1] (t_0 = start)")
    if steps is not None and steps != grid.numel() - 1:
        raise ValueError(f"steps={steps} but the grid has {grid.numel() - 1} steps; give one of them")
    return grid


def make_grid(process: Process, name: str, steps: int, rho: float | None = None, t_end: float | None = None,
              cond: dict[str, Any] | None = None) -> Tensor:
    """The named time grid `name` (`GRIDS`) of `steps` steps from t_0 = 1 down to t_end (default 0) for `process`:
    "uniform" for every process, the others where the process declares them (capabilities.grids). `rho` = None
    takes the grid's own default; a grid without a ρ refuses one."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; choose one of {', '.join(GRIDS)}")
    offered = ("uniform", *process.capabilities.grids)
    if name not in offered:
        raise ValueError(f"grid {name!r} is not offered by {type(process).__name__}; its grids: {', '.join(offered)}")
    if rho is not None and GRIDS[name] is None:
        raise ValueError(f"grid {name!r} takes no rho")
    rho = GRIDS[name] if rho is None else rho
    t_end = 0.0 if t_end is None else t_end
    _check_steps(steps)
    if (rho is not None and rho <= 0) or not 0.0 <= t_end < 1.0:
        raise ValueError(f"need rho > 0 and 0 ≤ t_end < 1; got rho={rho}, t_end={t_end}")
    if name == "uniform":
        return time_grid(steps, rho, t_end)
    grid = process.time_grid(name, steps, rho, t_end, cond).to(torch.float32)
    return check_grid(grid, steps)


def choose_grid(process: Process, defaults: Defaults, steps: int | None, grid: Tensor | str | None,
                rho: float | None, t_end: float | None, cond: dict[str, Any] | None,
                device: torch.device | str) -> Tensor:
    """The time grid of one sampler call, on `device`: an explicit tensor (checked; then rho and t_end must be unset),
    a grid name, or the sampler's default grid (with its ρ unless `rho` is given; "uniform" with its own ρ where the
    process does not offer the default grid, e.g. a shared sampler's "edm" on a process without noise levels);
    steps default to the sampler's."""
    if grid is not None and not isinstance(grid, str):
        if rho is not None or t_end is not None:
            raise ValueError("rho and t_end shape a named grid; an explicit grid tensor takes neither")
        return check_grid(grid, steps).to(device)
    if steps is None:
        steps = defaults.steps_for(process)
    name = defaults.grid if grid is None else grid
    if grid is None and name != "uniform" and name not in process.capabilities.grids:
        name = "uniform"
    if rho is None and name == defaults.grid:
        rho = defaults.rho
    return make_grid(process, name, steps, rho, t_end, cond).to(device)


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
    "GRIDS", "GRID_NAMES", "SHARED_ARGUMENTS", "Callback", "CountingNet", "Defaults", "SampleResult", "Sampler",
    "check_grid", "choose_grid", "default_steps", "defaults_of", "expand_cond", "invert_increasing", "make_grid",
    "noise_grid", "pinned", "report", "require_fit", "rho_spacing", "sampler_options", "start_state", "steps_of",
    "time_grid",
    "with_defaults",
]
