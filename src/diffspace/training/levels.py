"""Which images, at which resolution and through which process, each optimizer step trains on.

`LevelPlan` serves the training loop for plain runs (one level: the data as loaded and the
model's own process) and for multilevel runs (`diffspace.multilevel.MultilevelConfig`: levels
one after another, or all of them in every step). Each level has its own batch order, so a
run resumes exactly at any step of any level. A schedule's level ends are fixed when the run
starts (multilevel.steps scaled to train.steps) and saved with the batch positions, so a
resumed run keeps them whatever train.steps says now: steps beyond the last end train the last
level (a finished run is extended by raising train.steps).
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
        self.cfg, self.steps = cfg, steps
        self.ends = cfg.level_ends(steps) if cfg.mode == "schedule" else ()
        if cfg.mode == "off":
            self.levels = [self._level(images.shape[-1], model_process, images, batch_size, seed, divisor,
                                       "train.batch_size")]
            return
        if not isinstance(images, Tensor):
            raise ValueError("multilevel training resizes the data set in memory: leave data.stream off (or "
                             "multilevel.mode off)")
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
            return [self.levels[self.cfg.level_at(step, self.ends)]]
        return self.levels[:1]

    def images_per_step(self, step: int) -> int:
        """Σ batch sizes of the levels step `step` trains on."""
        return sum(level.batch_size for level in self.active(step))

    def note(self, resumed_from: int | None) -> str | None:
        """A line on how the schedule differs from multilevel.steps as given: scaled to train.steps (a new
        run), or extended or cut short by train.steps (a resumed one); None when it does not."""
        if self.cfg.mode != "schedule":
            return None
        given, ends = self.cfg.level_ends(sum(self.cfg.steps)), self.ends
        if resumed_from is None:
            if ends == given:
                return None
            per_level = [b - a for a, b in zip((0, *ends), ends)]
            return (f"multilevel: train.steps={self.steps} scales multilevel.steps {_listed(self.cfg.steps)} "
                    f"(sum {sum(self.cfg.steps)}) to {_listed(per_level)}")
        if self.steps > ends[-1]:
            last = self.levels[-1].resolution
            return (f"multilevel: steps {ends[-1] + 1}–{self.steps} go beyond this run's level schedule (which ends "
                    f"at step {ends[-1]}) and train the last level, {last}×{last}")
        if self.steps < ends[-1]:
            level = self.cfg.level_at(self.steps - 1, ends)
            return (f"multilevel: this run's level schedule ends at step {ends[-1]}; train.steps={self.steps} stops "
                    f"it in level {level} ({self.levels[level].resolution}×{self.levels[level].resolution})")
        return None

    def state_dict(self) -> dict[str, object]:
        """The batch-order positions: level 0's own dict when off (as a plain run), else one per level,
        with the level ends of a schedule."""
        if self.cfg.mode == "off":
            return self.levels[0].order.state_dict()
        state: dict[str, object] = {"levels": [level.order.state_dict() for level in self.levels]}
        if self.cfg.mode == "schedule":
            state["ends"] = list(self.ends)
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore the positions and level ends saved by `state_dict` (a checkpoint without ends comes from
        a run whose multilevel.steps summed to train.steps: its ends are their cumulative sums)."""
        if self.cfg.mode == "off":
            self.levels[0].order.load_state_dict(state)
            return
        for level, position in zip(self.levels, state["levels"], strict=True):
            level.order.load_state_dict(position)
        if self.cfg.mode == "schedule":
            self.ends = tuple(int(end) for end in state.get("ends", self.cfg.level_ends(sum(self.cfg.steps))))


def _listed(values: tuple[int, ...] | list[int]) -> str:
    """Integers as "a,b,c" (the command-line form of a tuple)."""
    return ",".join(str(v) for v in values)
