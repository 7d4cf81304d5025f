"""The training loop: AdamW with warm-up, clipping, EMA, accumulation, bf16, DDP, resume.

One optimizer step consumes one global batch of B = train.batch_size images: R ranks × A micro-batches
of B/(R·A) images (see `batches`). The loss of a step is the mean per-sample loss over the global
batch; each micro-batch contributes mean/A to the gradient, and DDP averages over ranks. The loss
randomness of each sample (its time, noise, dequantization) is drawn from its own stream seeded by
(seed, step, its row in the global batch), so an N-process run equals the 1-process run of the same
config, whatever R and A, up to float summation order.
A step whose gradient norm is NaN/Inf is skipped (no update, no EMA); `max_nonfinite` such
steps in a row stop training with a checkpoint and a TrainingError, and a NaN/Inf step whose
batch holds NaN/Inf input stops at once with a checkpoint and a DataError. One trainer at a time
holds a run directory (`RunLock`); SIGINT/SIGTERM end training with a checkpoint after the current
step, or at the next network call of a sample grid.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from diffspace.build import CONFIG_FILE, Built, Model, build, generate
from diffspace.checkpoint import (
    CHECKPOINT_DIR, check_writable, latest_checkpoint, load_latest, rng_state, save_checkpoint, set_rng_state,
)
from diffspace.config import ConfigError, RunConfig, differences, flatten
from diffspace.data import DataError
from diffspace.data.stream import StepLoader
from diffspace.images import save_grid
from diffspace.model import RUN_MODEL_DIR, ModelCard, save_model
from diffspace.noise import PerSampleGenerator, mix_seed
from diffspace.training import distributed
from diffspace.training.ema import EMA
from diffspace.training.levels import Level, LevelPlan
from diffspace.training.lock import RunLock
from diffspace.training.logs import MetricsLog, Progress
from diffspace.training.precision import LossModule, NetCall

#: Config keys (or key prefixes) that may change when a run resumes: they change when or what
#: is logged and how long training lasts, not what the steps compute — except train.lr, which may
#: change so that a run stopped by NaN/Inf steps continues in its own directory at a lower rate.
RESUMABLE = ("description", "train.steps", "train.log_every", "train.sample_every",
             "train.checkpoint_every", "train.keep_last", "train.max_nonfinite",
             "train.tensorboard", "train.compile", "train.device", "train.lr", "sample.")

FINAL_GRID = "samples/final.png"


class TrainingError(RuntimeError):
    """Training stopped before its last step; the message says why and where the checkpoint is."""


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM: a checkpoint was saved at the end of the current step."""


class GridStopped(Exception):
    """A stop was requested while a sample grid was being drawn (raised at its next network call)."""


class StopAtCall(nn.Module):
    """`net` that raises GridStopped instead of running once `stopped()` is true, so that a sample
    grid ends at its next network call when a stop is requested."""

    def __init__(self, net: nn.Module, stopped: Callable[[], bool]) -> None:
        super().__init__()
        self.net = net
        self.stopped = stopped

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """net(*args, **kwargs), or GridStopped."""
        if self.stopped():
            raise GridStopped
        return self.net(*args, **kwargs)


@dataclass
class TrainResult:
    """Where a finished run left its outputs."""

    run_dir: Path
    step: int
    resumed_from: int | None
    checkpoint: Path | None
    model_dir: Path | None
    grid: Path | None
    images_per_sec: float


def resolve_device(name: str) -> str:
    """"auto" → "cuda" when available, else "cpu"; "cuda" without CUDA is a ConfigError."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    return name


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The LR multiplier min(1, (step + 1)/warmup_steps) (1 without warm-up)."""
    return 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)


def check_resumable(saved: RunConfig, given: RunConfig, run_dir: Path) -> None:
    """ConfigError unless `given` differs from the run's saved config only in RESUMABLE keys."""
    saved_values, given_values = flatten(saved), flatten(given)
    changed = [k for k in differences(saved, given) if not k.startswith(RESUMABLE)]
    if changed:
        detail = "; ".join(f"{k}: run has {saved_values[k]!r}, given {given_values[k]!r}" for k in changed)
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({detail}); resume it with its own config "
            f"(`diffspace train --run-dir {run_dir}` without --preset) or choose a new --run-dir"
        )


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    quiet: bool = False,
    built: Built | None = None,
) -> TrainResult:
    """Train (or resume, if `run_dir` has a checkpoint) the run `cfg` describes; under torchrun
    every process calls this. `built` replaces `build(cfg, data_dir)` (data set and model; `cfg` is then
    taken as resolved against the data as it is). Rank 0 first checks that the run directory is writable
    and takes its lock (RunError otherwise)."""
    device = resolve_device(cfg.train.device)
    run_dir = Path(run_dir)
    world = distributed.start(device)
    try:
        if world.main:
            check_run_dir(run_dir)
        with RunLock(run_dir) if world.main else nullcontext():
            return Trainer(cfg, run_dir, world, device, data_dir, quiet, built).run()
    finally:
        distributed.stop(world)


def check_run_dir(run_dir: Path) -> None:
    """RunError unless the run directory and the folders in it that training writes can be written."""
    check_writable(run_dir, "run directory", folder=True)
    for sub in (CHECKPOINT_DIR, Path(FINAL_GRID).parent):
        if (run_dir / sub).exists():
            check_writable(run_dir / sub, "run directory", folder=True)


class Interval:
    """Sums over the steps since the last log row; summed on the device (no sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.grad_norm = torch.zeros((), device=device)
        self.steps = 0
        self.images = 0
        self.seconds = 0.0

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, seconds: float, images: int) -> None:
        """Count one step of `images` images."""
        self.loss += loss
        self.grad_norm += grad_norm
        self.steps += 1
        self.images += images
        self.seconds += seconds

    def row(self, step: int, lr: float, world: distributed.World) -> dict[str, float]:
        """The metrics row: mean loss over the interval (over all ranks), mean gradient norm,
        the last step's lr and images per second of step time."""
        return {"step": step, "loss": distributed.mean(self.loss / self.steps, world).item(), "lr": lr,
                "grad_norm": (self.grad_norm / self.steps).item(),
                "images_per_sec": self.images / self.seconds}


class Trainer:
    """The state of one training session; `run` drives it to cfg.train.steps."""

    def __init__(self, cfg: RunConfig, run_dir: Path, world: distributed.World, device: str,
                 data_dir: str | Path | None, quiet: bool, built: Built | None) -> None:
        t = cfg.train
        if t.batch_size % (world.size * t.grad_accum):
            raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by ranks × train.grad_accum "
                              f"= {world.size} × {t.grad_accum}")
        self.cfg, self.run_dir, self.world, self.quiet = cfg, run_dir, world, quiet
        self.progress: Progress | None = None
        self.device = torch.device(f"cuda:{world.local_rank}" if device == "cuda" else "cpu")
        found = load_latest(run_dir, set_aside=world.main, report=self._warn)
        state = found[1] if found is not None else None
        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        random.seed(t.seed)
        if built is None:
            built = build(cfg, data_dir)
            self.cfg = cfg = built.config
        saved = RunConfig.from_dict(state["config"]) if state is not None else None
        if saved is not None:
            check_resumable(saved, cfg, run_dir)
        self.info = built.dataset.info
        self.facts = {"shape": list(built.dataset.images.shape[1:]), "levels": self.info.levels}
        self.images = built.dataset.images.to(self.device) if not built.dataset.streamed else built.dataset.images
        self.loader: StepLoader | None = None
        self.model = built.model.to(self.device)
        try:
            self.levels = LevelPlan(cfg.multilevel, cfg.process, self.model.process, self.images, cfg.data.name,
                                    self.info.levels, cfg.data.resize, t.batch_size, t.steps, t.seed, world.size * t.grad_accum)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, weight_decay=t.weight_decay,
                                           fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_factor(step, t.warmup_steps))
        self.ema = EMA(self.model, t.ema_decay, t.ema_power, t.ema_inv_gamma)
        bf16 = t.bf16 == "on" or (t.bf16 == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported())
        loss = LossModule(self.model, NetCall(self.model.net, self.device.type, bf16, t.compile))
        self.forward: Any = loss
        if world.size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(loss, device_ids=ids)
        self.step, self.nonfinite, self.resumed_from = 0, 0, None
        self.bad_input: str | None = None
        if state is not None:
            self._restore(state)
            if saved.train.lr != t.lr:
                self._set_lr(t.lr)
                self._warn(f"train.lr changed from {saved.train.lr!r} to {t.lr!r} at step {self.step}")
        note = self.levels.note(self.resumed_from)
        if note:
            self._warn(note)
        self.log = None
        if world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(run_dir / CONFIG_FILE)
            self.log = MetricsLog(run_dir, self.resumed_from, t.tensorboard)
        self.stop_requested = False

    def _restore(self, state: dict[str, Any]) -> None:
        """Load every piece of training state from a checkpoint dict."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.levels.load_state_dict(state["data"])
        self.step = self.resumed_from = state["step"]
        self.nonfinite = state["nonfinite"]
        states = state["rng"]
        set_rng_state(states[self.world.rank] if len(states) == self.world.size else states[0])

    def _set_lr(self, lr: float) -> None:
        """Make `lr` the base learning rate of the restored optimizer and warm-up schedule."""
        self.scheduler.base_lrs = [lr] * len(self.optimizer.param_groups)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = lr
            group["lr"] = lr * warmup_factor(self.scheduler.last_epoch, self.cfg.train.warmup_steps)

    def checkpoint(self) -> Path | None:
        """Save the full training state (every rank's RNG states included); the path on rank 0.
        TrainingError when the write fails (e.g. a full disk), naming the newest complete checkpoint."""
        states = distributed.gather(rng_state(), self.world)
        if not self.world.main:
            return None
        state = {
            "version": 1, "step": self.step, "data": self.levels.state_dict(),
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "nonfinite": self.nonfinite, "rng": states, "config": self.cfg.to_dict(), "facts": self.facts,
        }
        try:
            return save_checkpoint(self.run_dir, self.step, state, self.cfg.train.keep_last)
        except OSError as err:
            newest = latest_checkpoint(self.run_dir)
            raise TrainingError(
                f"could not write the checkpoint of step {self.step} ({err.strerror or err}); the newest complete "
                f"checkpoint is {newest or 'none'}; free disk space and run the same command to resume"
            ) from None

    def _generator(self, level: Level, rows: range) -> PerSampleGenerator:
        """The loss randomness of rows `rows` of this step's global batch at `level`: one stream per sample, seeded
        by (seed, level, step, row), so a step computes the same per-sample losses however the batch is split over
        ranks and micro-batches."""
        seed = mix_seed(self.cfg.train.seed, level.resolution)
        return PerSampleGenerator.for_batch_rows(seed, self.step, rows, level.batch_size, self.device)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step on the next global batch of each level it trains (one level unless
        multilevel.mode = joint, whose loss sums the levels' mean losses): (local mean loss,
        gradient norm, lr used)."""
        t, world = self.cfg.train, self.world
        streamed = self._streamed_batch()
        batches = [(level, level.order.next().to(self.device), level.batch_size // (world.size * t.grad_accum))
                   for level in self.levels.active(self.step)]
        total = torch.zeros((), device=self.device)
        for a in range(t.grad_accum):
            chunk = world.rank * t.grad_accum + a
            last = a == t.grad_accum - 1
            with nullcontext() if world.size == 1 or last else self.forward.no_sync():
                loss = sum(self.forward(self._inputs(level, batch, rows, streamed, a * micro),
                                        self._generator(level, rows),
                                        level.process).mean()
                           for level, batch, micro in batches
                           for rows in (range(chunk * micro, (chunk + 1) * micro),))
                (loss / t.grad_accum).backward()
            total += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip if t.grad_clip > 0 else math.inf)
        lr = self.optimizer.param_groups[0]["lr"]
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.ema.update(self.model)
            self.nonfinite = 0
        else:
            self.nonfinite += 1
            self.bad_input = self._nonfinite_input(batches)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return total / t.grad_accum, grad_norm, lr

    def _streamed_batch(self) -> Tensor | None:
        """This rank's images of the coming step when the data are streamed (`diffspace.data.stream`), else None;
        the loader starts at the batch order's position the first time, after any checkpoint was restored."""
        level = self.levels.levels[0]
        if isinstance(level.images, Tensor):
            return None
        if self.loader is None:
            share = level.batch_size // self.world.size
            self.loader = StepLoader(level.images, level.order, range(self.world.rank * share,
                                     (self.world.rank + 1) * share), self.cfg.data.workers,
                                     pin_memory=self.device.type == "cuda")
        return self.loader.next().to(self.device, non_blocking=True)

    def _inputs(self, level: Level, batch: Tensor, rows: range, streamed: Tensor | None, offset: int) -> Tensor:
        """The images of rows `rows` of the step's global batch: indexed in memory, or the micro-batch at `offset`
        of this rank's streamed share."""
        if streamed is None:
            return level.images[batch[rows]]
        return streamed[offset:offset + len(rows)]

    def _nonfinite_input(self, batches: list[tuple[Level, Tensor, int]]) -> str | None:
        """What is wrong with this step's input when its global batch holds NaN/Inf values, else None."""
        for level, batch, _ in batches:
            bad = ~torch.isfinite(level.images[batch]).flatten(1)
            if bad.any():
                first = int(batch[bad.any(1)][0])
                return (f"step {self.step + 1}: the batch holds {int(bad.sum())} NaN/Inf input values (first in item "
                        f"{first} of data set {self.info.name}); the loss is not finite because of the data, "
                        "not the learning rate: remove or repair those items")
        return None

    def grid(self, paths: list[Path]) -> bool:
        """Sample cfg.sample.num images from the EMA model (fixed seed) and save them to `paths`; False,
        with nothing saved, when a stop request ended the sampling at a network call."""
        s = self.cfg.sample
        ema = self.ema.module
        model = Model(StopAtCall(ema.net, lambda: self.stop_requested), ema.process).train(ema.training)
        try:
            samples, _ = generate(model, tuple(self.images.shape[1:]), s.num, s.sampler, s.steps,
                                  s.seed, s.batch_size, self.device, options=s.sampler_options(), compile=s.compile)
        except GridStopped:
            self._warn("sample grid abandoned")
            return False
        for path in paths:
            save_grid(samples, path, self.info.levels)
        return True

    def run(self) -> TrainResult:
        """Train until cfg.train.steps, logging, sampling and checkpointing on the way."""
        t, s = self.cfg.train, self.cfg.sample
        final = self.run_dir / FINAL_GRID
        self.progress = Progress(t.steps, self.step, enabled=not self.quiet and self.world.main)
        handlers = self._catch_signals()
        interval = Interval(self.device)
        total_images, total_time = 0, 0.0
        try:
            while self.step < t.steps:
                began = time.perf_counter()
                images = self.levels.images_per_step(self.step)
                loss, grad_norm, lr = self.train_step()
                interval.add(loss, grad_norm, time.perf_counter() - began, images)
                self.progress.step()
                if self.nonfinite and self.bad_input is None:
                    self._warn(f"step {self.step}: NaN/Inf gradient norm, step skipped "
                               f"({self.nonfinite} in a row; limit train.max_nonfinite={t.max_nonfinite})")
                if self.step % t.log_every == 0 or self.step == t.steps:
                    row = interval.row(self.step, lr, self.world)
                    total_images, total_time = total_images + interval.images, total_time + interval.seconds
                    if self.log is not None:
                        self.log.write(row)
                    self.progress.row(row)
                    interval = Interval(self.device)
                paths = []
                if t.sample_every and self.step % t.sample_every == 0 and s.num:
                    paths.append(self.run_dir / "samples" / f"step-{self.step:06d}.png")
                if self.step == t.steps and s.num:
                    paths.append(final)
                if paths and self.world.main:
                    self.grid(paths)
                stop = distributed.any_true(self.stop_requested, self.world, self.device)
                failed = self.nonfinite >= t.max_nonfinite
                if (self.step % t.checkpoint_every == 0 or self.step == t.steps or stop or failed
                        or self.bad_input is not None):
                    path = self.checkpoint()
                if self.bad_input is not None:
                    raise DataError(f"{self.bad_input} (checkpoint: {path})")
                if failed:
                    raise TrainingError(
                        f"{self.nonfinite} steps in a row had a NaN/Inf gradient; stopped at step {self.step} "
                        f"(checkpoint: {path}); try a lower learning rate in this run directory, e.g. "
                        f"`diffspace train --run-dir {self.run_dir} train.lr={t.lr / 4:g}`")
                if stop:
                    raise TrainingInterrupted(
                        f"interrupted at step {self.step}; checkpoint: {path}; run the same command to resume")
            if self.world.main and s.num and not final.exists() and not self.grid([final]):
                raise TrainingInterrupted(f"interrupted while drawing {final} (training is complete, step "
                                          f"{self.step} is saved); run the same command to draw it")
        finally:
            self.progress.close()
            self._restore_signals(handlers)
            if self.log is not None:
                self.log.close()
        model_dir = None
        if self.world.main:
            card = ModelCard(self.cfg.process.kind, self.cfg.data.name, tuple(self.facts["shape"]), self.info.levels,
                             self.step)
            model_dir = save_model(self.run_dir / RUN_MODEL_DIR, self.cfg, self.ema.module.state_dict(), card)
        return TrainResult(self.run_dir, self.step, self.resumed_from, latest_checkpoint(self.run_dir),
                           model_dir, final if final.exists() else None,
                           total_images / total_time if total_time else 0.0)

    def _warn(self, message: str) -> None:
        """Print a warning line on stderr (rank 0), above the progress bar if there is one."""
        if not self.world.main:
            return
        if self.progress is not None:
            self.progress.write(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def _catch_signals(self) -> dict[int, Any]:
        """Turn the first SIGINT/SIGTERM into a checkpoint at the end of the current step, or at the
        next network call of a sample grid; the second SIGINT stops at once (KeyboardInterrupt, raised
        once: later signals are ignored). Only possible in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        raised = []

        def handler(signum: int, frame: Any) -> None:
            if raised:
                return
            if self.stop_requested and signum == signal.SIGINT:
                raised.append(signum)
                raise KeyboardInterrupt
            if self.stop_requested:
                return
            self.stop_requested = True
            self._warn("stopping: saving a checkpoint after this step (press Ctrl-C again to stop at once)")

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(handlers: dict[int, Any]) -> None:
        """Put back the signal handlers `_catch_signals` replaced."""
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
