"""Multilevel training and sampling across resolutions (Hagemann et al., arXiv 2303.04772).

A model whose forward process is defined at every resolution (capabilities.resolution_free: e.g. a
Gaussian diffusion in the Fourier or DCT basis with a power-law, Laplacian or white prior) and whose
network runs on any grid (an FNO) can be trained on coarse grids first and sampled on grids it never saw.
`MultilevelConfig` is the `multilevel` section of a run:

    mode: schedule            # "off" | "schedule" | "joint"
    resolutions: [14, 28]     # one entry per level, coarse to fine
    steps: [3000, 1000]       # schedule: optimizer steps per level (scaled to sum to train.steps)
    batch_sizes: [256, 128]   # per level; empty = train.batch_size at every level

"schedule" trains level i for steps[i] steps and warm-starts level i + 1 from its weights
(and optimizer state); steps that do not sum to train.steps are proportions, scaled to it (so
`train.steps=N` alone shortens or lengthens the whole schedule); "joint" sums the mean losses of every level in each step. Data are
brought to each level's resolution from the loaded data set through `diffspace.resolution`
(spectral for function data, area for images; see `diffspace.data.transforms`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from diffspace.data.transforms import resize_images, resize_method
from diffspace.process import DataFacts, Process, ProcessConfig, build_process

MODES = ("off", "schedule", "joint")


@dataclass
class MultilevelConfig:
    """Training across resolutions (see the module docstring).

    mode        — "off" (train at data.resolution) | "schedule" (levels one after another,
                  each warm-started from the last) | "joint" (every level in every step).
    resolutions — level resolutions N (N×N grids), coarse to fine.
    steps       — "schedule": optimizer steps of each level; scaled proportionally when they do not
                  sum to train.steps; "joint": empty.
    batch_sizes — images per step at each level; empty = train.batch_size everywhere.
    """

    mode: str = field(default="off", metadata={"choices": MODES})
    resolutions: tuple[int, ...] = field(default=(), metadata={"min": 1})
    steps: tuple[int, ...] = field(default=(), metadata={"min": 1})
    batch_sizes: tuple[int, ...] = field(default=(), metadata={"min": 1})

    def __post_init__(self) -> None:
        """Lists (as YAML loads them) become tuples."""
        self.resolutions, self.steps, self.batch_sizes = tuple(self.resolutions), tuple(self.steps), tuple(self.batch_sizes)

    def check(self, train_steps: int) -> None:
        """ValueError naming the field when the levels do not fit together or with train.steps."""
        if self.mode not in MODES:
            raise ValueError(f"multilevel.mode={self.mode!r} is unknown; use one of {MODES}")
        if self.mode == "off":
            return
        levels = len(self.resolutions)
        if levels == 0:
            raise ValueError(f"multilevel.mode={self.mode} needs multilevel.resolutions, e.g. 14,28")
        if self.batch_sizes and len(self.batch_sizes) != levels:
            raise ValueError(
                f"multilevel.batch_sizes has {len(self.batch_sizes)} entries for {levels} resolutions; "
                "give one per level or none (train.batch_size at every level)"
            )
        if self.mode == "joint" and self.steps:
            raise ValueError("multilevel.steps is for mode=schedule; in joint mode every step trains every level "
                             "for train.steps steps: leave multilevel.steps empty")
        if self.mode == "schedule" and len(self.steps) != levels:
            raise ValueError(f"multilevel.steps has {len(self.steps)} entries for {levels} resolutions; "
                             "give the steps of each level")

    def batch_size(self, level: int, default: int) -> int:
        """Images per step at level `level` (train.batch_size = `default` when none are given)."""
        return self.batch_sizes[level] if self.batch_sizes else default

    def level_ends(self, train_steps: int) -> tuple[int, ...]:
        """Schedule mode: the step at which each level ends, the cumulative sums of `steps` scaled by
        train_steps / Σ steps and rounded (the last end is train_steps)."""
        total, ends, end = sum(self.steps), [], 0
        for steps in self.steps:
            end += steps
            ends.append(round(end * train_steps / total))
        return tuple(ends)

    def level_at(self, step: int, ends: tuple[int, ...] | None = None) -> int:
        """Schedule mode: the level that optimizer step `step` (0-based) trains, given the levels' end
        steps (default: the cumulative sums of `steps`); steps past the last end train the last level."""
        for level, end in enumerate(self.level_ends(sum(self.steps)) if ends is None else ends):
            if step < end:
                return level
        return len(self.steps) - 1


def check_resolution_free(process: Process, what: str) -> None:
    """ValueError unless `process` is defined at every resolution (nothing fitted to data at one, nothing learned)."""
    if not process.capabilities.resolution_free:
        raise ValueError(
            f"this process has parts estimated from the data at the training resolution (or learned with the "
            f"network), so {what} is impossible; use a resolution-free process (e.g. a Gaussian one with basis "
            "fourier or dct and prior power_law, laplacian or white)"
        )


def process_at(cfg: ProcessConfig, facts: DataFacts | tuple[int, int, int]) -> Process:
    """The forward process `cfg` (resolved) rebuilt for data with `facts` (or just a shape) at another resolution."""
    return build_process(cfg, facts=facts)


def level_images(images: Tensor, resolution: int, data_name: str, resize: str) -> Tensor:
    """Data (N, C, H, W) at resolution × resolution through diffspace.resolution (data.resize, auto by data set)."""
    return resize_images(images, resolution, resize_method(data_name, resize))


@torch.no_grad()
def validation_loss(process: Process, net: nn.Module, images: Tensor, seed: int = 0, batch_size: int = 256) -> float:
    """Mean per-sample training loss of `net` on `images` with times and noise from a generator seeded `seed`."""
    generator = torch.Generator(images.device).manual_seed(seed)
    total = 0.0
    for chunk in images.split(batch_size):
        total += float(process.loss(net, chunk, generator).sum())
    return total / images.shape[0]
