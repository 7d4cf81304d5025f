"""Which images, at which resolution and through which process, each optimizer step trains on.

`LevelPlan` serves the training loop for plain runs (one level: the data as loaded and the
model's own process) and for multilevel runs (`diffspace.multilevel.MultilevelConfig`: levels
one after another, or all of them in every step). Each level has its own batch order, so a
run resumes exactly at any step of any level.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from diffspace.multilevel import MultilevelConfig, check_resolution_free, level_images, process_at
from diffspace.noise import mix_seed
from diffspace.process import DataFacts, Process, ProcessConfig
from diffspace.training.batches import BatchOrder


@dataclass
class Level:
    """One resolution of a run: its process, its images (N, C, r, r), their batch order and the batch size."""

    resolution: int
    process: Process
    images: Tensor
    order: BatchOrder
    batch_size: int


class LevelPlan:
    """The levels a run trains, and which of them optimizer step s uses: level 0 alone ("off", the data
    as loaded and the model's own process), level(s) by the schedule ("schedule"), or all ("joint")."""

    def __init__(
        self,
        cfg: MultilevelConfig,
        process_cfg: ProcessConfig,
        model_process: Process,
        images: Tensor,
        data_name: str,
        data_levels: int | None,
        resize: str,
        batch_size: int,
        steps: int,
        seed: int,
        divisor: int = 1,
    ) -> None:
        cfg.check(steps)
        self.cfg = cfg
        if cfg.mode == "off":
            self.levels = [self._level(images.shape[-1], model_process, images, batch_size, seed, divisor,
                                       "train.batch_size")]
            return
        check_resolution_free(model_process, "multilevel training")
        channels, size = images.shape[1], tuple(images.shape[-2:])
        self.levels = []
        for index, resolution in enumerate(cfg.resolutions):
            facts = DataFacts((channels, resolution, resolution), data_levels)
            process = model_process if size == (resolution, resolution) else process_at(process_cfg, facts).to(
                images.device)
            self.levels.append(self._level(
                resolution, process, level_images(images, resolution, data_name, resize),
                cfg.batch_size(index, batch_size), mix_seed(seed, resolution), divisor,
                f"multilevel level {index} ({resolution}×{resolution}) batch size"))

    @staticmethod
    def _level(resolution: int, process: Process, images: Tensor, batch_size: int, seed: int, divisor: int,
               what: str) -> Level:
        if batch_size % divisor:
            raise ValueError(f"{what} {batch_size} must be divisible by ranks × train.grad_accum = {divisor}")
        try:
            order = BatchOrder(len(images), batch_size, seed)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
        return Level(resolution, process, images.contiguous(), order, batch_size)

    def active(self, step: int) -> list[Level]:
        """The levels optimizer step `step` (0-based) trains on."""
        if self.cfg.mode == "joint":
            return self.levels
        if self.cfg.mode == "schedule":
            return [self.levels[self.cfg.level_at(step)]]
        return self.levels[:1]

    def images_per_step(self, step: int) -> int:
        """Σ batch sizes of the levels step `step` trains on."""
        return sum(level.batch_size for level in self.active(step))

    def state_dict(self) -> dict[str, object]:
        """The batch-order positions: level 0's own dict when off (as a plain run), else one per level."""
        if self.cfg.mode == "off":
            return self.levels[0].order.state_dict()
        return {"levels": [level.order.state_dict() for level in self.levels]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore the positions saved by `state_dict`."""
        if self.cfg.mode == "off":
            self.levels[0].order.load_state_dict(state)
            return
        for level, position in zip(self.levels, state["levels"], strict=True):
            level.order.load_state_dict(position)
