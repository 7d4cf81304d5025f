"""The GPU suite: every speed figure and a short quality run per family, in one command and one JSON record.

    python benchmarks/suite.py --smoke                                   # toy sizes on the CPU, well under a minute
    python benchmarks/suite.py --device cuda --budget 480 --data-dir ../shared/data      # one H200: inside 8 minutes

Items (targets printed beside the figures; "nominal" is the size the issue names, cut to fit the time budget):

    unet_ddpmpp_train          DDPM++-size U-Net (model.size=ddpmpp, 3×32×32, batch 128) training images/s, bf16,
    unet_ddpmpp_train_compile  compile off / on (≥ 2,000 images/s; EDM's SongUNet ≈ 950 on an H100)
    fno_train                  FNO (14 modes, width 32, 4 layers), 32×32, batch 128, training images/s (≥ 18,000)
    fno_sample                 the same FNO sampling 1,000 images at 64×64 with 200 Euler–Maruyama steps (≥ 300/s)
    blackout_sample            Blackout binomial-bridge sampling, 1,000 steps, the CIFAR-size U-Net, images/s
    multivariate_step          a training step of CLD and of the learned K = 2 diffusion (paper U-Net, 28×28,
                               batch 128) and the share of it spent on the K×K kernel maths (< 5%)
    quality_mnist              the `mnist` preset: domain FID and bits/dim
    quality_gud                a GUD softness point (gud-mnist-pca at a = 1): domain FID and bits/dim
    quality_multivariate       CLD vs learned K = 2 bits/dim at equal steps (mdm-mnist-cld, mdm-mnist-learned2)
    quality_multilevel         multilevel-mnist (14 → 28) sampled at 28 and at 56: SW₂ and spectrum error
    quality_blackout           blackout-binarized-mnist: NLL bound in bits/dim

How it fits a budget: each item gets a share of the time left (its weight over the weights of the items still to
run, so time an item leaves unused goes to the later ones) and plans its sizes from a measurement: speed items time
a few steps after warming up and then time as many steps (or samples) as fit; quality items time a few training
steps (`Trainer.train_step` on the built model) and then train (`diffspace.training.train`) for as many steps as
fit in 55% of the item's time, and time a short sampling call to choose the number of samples and sampler steps
for the evaluation (`evaluate_model`, `generate`, `elbo_bpd`). Every cut is recorded beside the nominal size
(`cuts`), so a figure says what it measured. Every item runs in try/except (the message goes into the record and
the suite goes on), under an alarm at 1.5× its share (a hung item is stopped and recorded as timed out), and
nothing starts after the global deadline; the compile item runs in a subprocess with a hard timeout (a cold
compile cannot be interrupted). The record is rewritten after every item, so a killed run leaves what it measured.
With `--smoke` the same code runs at toy sizes on the CPU (the compile item is skipped: a cold inductor compile
takes 25–90 s on a 2-core CPU; tests/test_training.py trains with train.compile=true). A data set that is missing
skips the items that need it, naming it.

Prints one table and writes benchmarks/results/suite-<device>.json (or --out) through records.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import device_name, record_path, write_record  # noqa: E402

#: Fraction of the budget the plan spends; the rest is slack for start-up and overruns.
PLANNED = 0.93
#: An item is stopped (and recorded as timed out) after this multiple of its share, plus GRACE seconds.
HARD_FACTOR, GRACE = 1.5, 10.0


class ItemTimeout(Exception):
    """An item ran past its hard limit."""


class Skip(Exception):
    """An item cannot run here (a missing data set, no time left); the message says why."""


@dataclass
class Figure:
    """One measured number, with the target it is compared with (None: no target)."""

    name: str
    value: float | None
    unit: str
    stderr: float | None = None
    target: str | None = None
    met: bool | None = None


@dataclass
class Result:
    """What an item reports: figures, the sizes it cut (nominal → used) and details."""

    figures: list[Figure] = field(default_factory=list)
    cuts: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What every item shares: options, device, data and work folders, the clock of this item."""

    device: str
    smoke: bool
    data_dir: str | None
    work: Path
    budget: float = 0.0
    started: float = 0.0

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def left(self) -> float:
        """Seconds left of this item's share."""
        return self.budget - (time.perf_counter() - self.started)

    def sync(self) -> None:
        """Wait for queued device work (timings are real)."""
        if self.cuda:
            torch.cuda.synchronize()


def cut(result: Result, name: str, nominal: Any, used: Any) -> Any:
    """Record `name` at `used` against its `nominal` size (only when they differ); return `used`."""
    if used != nominal:
        result.cuts[name] = {"nominal": nominal, "used": used}
    return used


def at_least(value: float, target: float, unit: str, note: str = "") -> tuple[str, bool]:
    """(target text, met) for a figure that should reach `target`."""
    return f"≥ {target:,.0f} {unit}" + (f" ({note})" if note else ""), value >= target


def fits(seconds: float, per_unit: float, nominal: int, floor: int) -> int:
    """How many units of `per_unit` seconds fit in `seconds`: at most nominal, at least min(floor, nominal)."""
    if per_unit <= 0 or seconds / per_unit >= nominal:
        return nominal
    return int(max(min(floor, nominal), math.floor(seconds / per_unit)))


# ----- training steps on random data (speed items) ----------------------------------------------------------------
def random_trainer(ctx: Context, cfg: Any, shape: tuple[int, int, int], levels: int | None) -> Any:
    """A `Trainer` of `cfg` (a RunConfig) on random images of `shape` (throughput does not depend on pixel values;
    no data set on disk): the real step, with its clipping, AdamW (fused on CUDA), EMA and NaN guard."""
    from diffspace.build import Built, Model
    from diffspace.data import DatasetInfo, ImageDataset
    from diffspace.nets import build_net
    from diffspace.process import DataFacts, build_process, resolve_config
    from diffspace.training.distributed import World
    from diffspace.training.loop import Trainer

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(max(cfg.train.batch_size, 256), *shape, generator=generator) * 2 - 1
    if levels:
        images = torch.round((images + 1) * (levels - 1) / 2) * (2 / (levels - 1)) - 1
    facts = DataFacts(shape, levels)
    cfg = dataclasses.replace(cfg, process=resolve_config(cfg.process, facts))
    torch.manual_seed(0)
    process = build_process(cfg.process, facts=facts)
    net = build_net(cfg.model, *process.network_channels(shape[0]), shape[1:])
    info = DatasetInfo("random", shape[0], shape[1:], (-1.0, 1.0), levels, None)
    run_dir = Path(tempfile.mkdtemp(dir=ctx.work))
    return Trainer(cfg, run_dir, World(), ctx.device, None, True, Built(ImageDataset(images, None, info),
                                                                          Model(net, process), cfg))


def time_steps(ctx: Context, trainer: Any, steps: int) -> float:
    """Seconds per training step over `steps` steps."""
    ctx.sync()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    ctx.sync()
    return (time.perf_counter() - start) / steps


def train_speed(ctx: Context, result: Result, trainer: Any, nominal_steps: int, warmup: int) -> float:
    """Images/s of `trainer` over as many of `nominal_steps` timed steps as fit (after `warmup` untimed steps,
    which compile); records warm-up time, step time, peak memory and parameters."""
    began = time.perf_counter()
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        trainer.train_step()
    ctx.sync()
    result.details["warmup_s"] = round(time.perf_counter() - began, 2)
    probe = time_steps(ctx, trainer, 2)
    steps = cut(result, "timed_steps", nominal_steps, fits(0.8 * ctx.left(), probe, nominal_steps, 3))
    per_step = time_steps(ctx, trainer, steps)
    batch = trainer.cfg.train.batch_size
    result.details.update({
        "batch": batch, "step_ms": round(1000 * per_step, 3), "bf16": trainer.forward.call.bf16,
        "compile": trainer.cfg.train.compile, "fused_adamw": bool(trainer.optimizer.defaults.get("fused")),
        "params_M": round(sum(p.numel() for p in trainer.model.net.parameters()) / 1e6, 3)})
    if ctx.cuda:
        result.details["peak_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return batch / per_step


def unet_ddpmpp(ctx: Context, compile: bool) -> Result:
    """DDPM++-size U-Net training images/s (bf16 on CUDA)."""
    from diffspace.config import load_preset

    result = Result()
    size, batch, side = ("ddpmpp", 128, 32) if not ctx.smoke else ("tiny", 4, 16)
    cfg = load_preset("mnist").with_overrides(
        [f"model.size={size}", f"train.batch_size={batch}", f"train.device={ctx.device}", "train.bf16=auto",
         f"train.compile={compile}", "sample.num=0"])
    cut(result, "size", "ddpmpp, 3×32×32, batch 128", f"{size}, 3×{side}×{side}, batch {batch}")
    trainer = random_trainer(ctx, cfg, (3, side, side), 256)
    images_per_sec = train_speed(ctx, result, trainer, 50 if not ctx.smoke else 3, 3 if compile else 2)
    target, met = at_least(images_per_sec, 2000, "images/s", "EDM's SongUNet ≈ 950 on an H100")
    result.figures.append(Figure(f"train images/s, bf16 {'on' if trainer.forward.call.bf16 else 'off'}, compile "
                                 f"{'on' if compile else 'off'}", images_per_sec, "images/s", target=target,
                                 met=met if ctx.cuda and not ctx.smoke else None))
    return result


def fno_config(ctx: Context) -> Any:
    """The multilevel-grf preset with the issue's FNO (14 modes, width 32, 4 layers), one level."""
    from diffspace.config import load_preset

    modes, width, layers, batch = (14, 32, 4, 128) if not ctx.smoke else (4, 8, 2, 8)
    return load_preset("multilevel-grf").with_overrides(
        [f"model.modes={modes}", f"model.width={width}", f"model.layers={layers}", f"train.batch_size={batch}",
         "multilevel.mode=off", "multilevel.resolutions=", "multilevel.steps=", "multilevel.batch_sizes=",
         f"train.device={ctx.device}", "train.bf16=auto", "sample.num=0"])


def fno_train(ctx: Context) -> Result:
    """FNO training images/s at 32×32, batch 128."""
    result = Result()
    side = 32 if not ctx.smoke else 16
    cfg = fno_config(ctx)
    cut(result, "size", "modes 14, width 32, 4 layers, 32×32, batch 128",
        f"modes {cfg.model.modes}, width {cfg.model.width}, {cfg.model.layers} layers, {side}×{side}, "
        f"batch {cfg.train.batch_size}")
    trainer = random_trainer(ctx, cfg, (1, side, side), None)
    images_per_sec = train_speed(ctx, result, trainer, 100 if not ctx.smoke else 3, 3)
    target, met = at_least(images_per_sec, 18000, "images/s", "the multilevel code ≈ 6,000 on an H100")
    result.figures.append(Figure("train images/s", images_per_sec, "images/s", target=target,
                                 met=met if ctx.cuda and not ctx.smoke else None))
    return result


def fno_sample(ctx: Context) -> Result:
    """FNO Euler–Maruyama sampling images/s at 64×64 (200 steps, 1,000 samples), through `generate`."""
    from diffspace.build import Model, generate
    from diffspace.multilevel import process_at
    from diffspace.nets import build_net

    result = Result()
    cfg = fno_config(ctx)
    side, nominal_num, nominal_steps = (64, 1000, 200) if not ctx.smoke else (16, 8, 4)
    torch.manual_seed(0)
    net = build_net(cfg.model, 1, 1, (side, side))
    model = Model(net, process_at(cfg.process, (1, side, side))).to(ctx.device)
    device = torch.device(ctx.device)
    ctx.sync()
    began = time.perf_counter()
    generate(model, (1, side, side), nominal_num, "euler_maruyama", 2, 0, nominal_num, device)  # warm-up, 3 NFE
    ctx.sync()
    per_nfe = (time.perf_counter() - began) / 3
    steps = cut(result, "steps_timed", nominal_steps, fits(0.7 * ctx.left(), per_nfe, nominal_steps, 5))
    num = nominal_num
    if steps == 5 and per_nfe * 6 > 0.7 * ctx.left():  # even 5 steps of the full batch do not fit
        num = cut(result, "samples", nominal_num, max(16, int(nominal_num * 0.7 * ctx.left() / (per_nfe * 6))))
    ctx.sync()
    began = time.perf_counter()
    generate(model, (1, side, side), num, "euler_maruyama", steps, 0, num, device)
    ctx.sync()
    seconds = time.perf_counter() - began
    per_image_200 = seconds / num * (nominal_steps + 1) / (steps + 1)  # + the final denoising evaluation
    images_per_sec = 1 / per_image_200
    result.details.update({"batch": num, "seconds": round(seconds, 3), "nfe": steps + 1,
                           "note": f"images/s for {nominal_steps} steps, from {steps} timed"})
    target, met = at_least(images_per_sec, 300, "images/s", "the multilevel code ≈ 85 on an H100")
    result.figures.append(Figure(f"sample images/s at {side}×{side}, {nominal_steps} EM steps", images_per_sec,
                                 "images/s", target=target, met=met if ctx.cuda and not ctx.smoke else None))
    return result


def blackout_sample(ctx: Context) -> Result:
    """Blackout binomial-bridge sampling images/s over 1,000 steps with the CIFAR-size U-Net (untrained weights: the
    cost does not depend on them), through `generate`."""
    from diffspace.build import Model, generate
    from diffspace.config import load_preset
    from diffspace.nets import build_net
    from diffspace.process import DataFacts, build_process, resolve_config

    result = Result()
    cfg = load_preset("blackout-cifar10")
    side, nominal_num = (32, 256) if not ctx.smoke else (8, 4)
    if ctx.smoke:
        cfg = cfg.with_overrides(["model.size=tiny"])
    facts = DataFacts((3, side, side), 256)
    torch.manual_seed(0)
    process = build_process(resolve_config(cfg.process, facts), facts=facts)
    net = build_net(cfg.model, 3, 3, (side, side))
    model = Model(net, process).to(ctx.device)
    device, nominal_steps = torch.device(ctx.device), process.num_steps
    ctx.sync()
    began = time.perf_counter()
    generate(model, facts.shape, nominal_num, "binomial_bridge", 3, 0, nominal_num, device)
    ctx.sync()
    per_step = (time.perf_counter() - began) / 3
    most = nominal_steps if not ctx.smoke else 10
    steps = cut(result, "steps_timed", nominal_steps, fits(0.7 * ctx.left(), per_step, most, 3))
    ctx.sync()
    began = time.perf_counter()
    generate(model, facts.shape, nominal_num, "binomial_bridge", steps, 0, nominal_num, device)
    ctx.sync()
    seconds = time.perf_counter() - began
    images_per_sec = nominal_num / (seconds * nominal_steps / steps)
    result.details.update({"batch": nominal_num, "seconds": round(seconds, 3), "net": cfg.model.size,
                           "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
                           "note": f"images/s for {nominal_steps} steps, from {steps} timed"})
    result.figures.append(Figure(f"sample images/s, {nominal_steps} binomial-bridge steps, 3×{side}×{side}",
                                 images_per_sec, "images/s"))
    return result


def multivariate_step(ctx: Context) -> Result:
    """Training step time of CLD and learned K = 2 and the share of their K×K kernel work."""
    from diffspace.config import load_preset
    from mdm import kernel_seconds

    result = Result()
    side, batch, net = (28, 128, []) if not ctx.smoke else (8, 8, ["model.size=tiny"])
    cut(result, "size", "paper U-Net, 1×28×28, batch 128", f"{'paper' if not net else 'tiny'} U-Net, 1×{side}×{side}, "
        f"batch {batch}")
    for name in ("cld", "learned2"):
        cfg = load_preset(f"mdm-mnist-{name}").with_overrides(
            [*net, f"train.batch_size={batch}", f"train.device={ctx.device}", "train.bf16=auto", "sample.num=0"])
        trainer = random_trainer(ctx, cfg, (1, side, side), 256)
        share_of_time = ctx.left() / (2 if name == "cld" else 1)
        for _ in range(2):
            trainer.train_step()
        probe = time_steps(ctx, trainer, 2)
        steps = cut(result, f"{name}_timed_steps", 20, fits(0.6 * share_of_time, probe, 20, 3))
        step = time_steps(ctx, trainer, steps)
        kernel = kernel_seconds(trainer.model.process, batch, torch.device(ctx.device),
                                repeats=fits(0.2 * share_of_time, probe / 10, 50, 5))
        share = kernel / step
        result.details[name] = {"step_ms": round(1000 * step, 3), "kernel_ms": round(1000 * kernel, 4)}
        result.figures.append(Figure(f"{name}: kernel share of a training step ({1000 * step:.1f} ms)", 100 * share,
                                     "%", target="< 5%", met=share < 0.05))
    return result


# ----- short quality runs (real data, the public API) -------------------------------------------------------------
def require_data(ctx: Context, *names: str) -> None:
    """Skip unless every data set in `names` loads from the data folder."""
    from diffspace.data import DataConfig, DataError, load_dataset
    from diffspace.data.files import data_dir

    for name in names:
        try:
            load_dataset(DataConfig(name=name, split="test", max_items=1), ctx.data_dir)
        except DataError as err:
            raise Skip(f"data set {name} is not in {data_dir(ctx.data_dir)} ({str(err).splitlines()[0]})") from None


def seconds_per_step(ctx: Context, cfg: Any) -> float:
    """Seconds of one `Trainer.train_step` of `cfg` on its data (after 2 warm-up steps); a multilevel schedule's
    levels are timed each and weighted by their steps."""
    from diffspace.build import build
    from diffspace.training.distributed import World
    from diffspace.training.loop import Trainer

    built = build(cfg, ctx.data_dir)
    trainer = Trainer(built.config, Path(tempfile.mkdtemp(dir=ctx.work)), World(), ctx.device, None, True, built)
    ends = list(cfg.multilevel.level_ends(cfg.train.steps)) if cfg.multilevel.mode == "schedule" else [cfg.train.steps]
    total, start = 0.0, 0
    for end in ends:
        trainer.step = start
        for _ in range(2):
            trainer.train_step()
        total += time_steps(ctx, trainer, 2) * (end - start) / cfg.train.steps
        start = end
    return total


def train_to_fit(ctx: Context, result: Result, cfg: Any, nominal_steps: int, seconds: float, tag: str = "",
                 per_step: float | None = None) -> tuple[Any, Path]:
    """Train `cfg` (`diffspace.training.train`) for as many of `nominal_steps` steps as fit in `seconds` (counted from
    now, the timing of a few steps included, unless `per_step` gives it); the trained model (`diffspace.load`) and
    its run directory."""
    import diffspace
    from diffspace.training import train

    began = time.perf_counter()
    if per_step is None:
        per_step = seconds_per_step(ctx, cfg.with_overrides([f"train.steps={nominal_steps}"]))
    available = seconds - (time.perf_counter() - began) - 2.0  # data loading and the model folder
    steps = cut(result, f"{tag}train_steps", nominal_steps, fits(available, per_step, nominal_steps, 2))
    warmup = min(cfg.train.warmup_steps, max(1, steps // 10))
    run_dir = Path(tempfile.mkdtemp(dir=ctx.work))
    cfg = cfg.with_overrides([f"train.steps={steps}", f"train.warmup_steps={warmup}", "sample.num=0",
                              "train.sample_every=0", f"train.checkpoint_every={steps}",
                              f"train.log_every={max(1, steps // 5)}", f"train.device={ctx.device}"])
    began = time.perf_counter()
    done = train(cfg, run_dir, data_dir=ctx.data_dir, quiet=True)
    result.details[f"{tag}train"] = {"steps": steps, "batch": cfg.train.batch_size, "warmup_steps": warmup,
                                     "seconds": round(time.perf_counter() - began, 2),
                                     "images_per_sec": round(done.images_per_sec, 1),
                                     "planned_step_ms": round(1000 * per_step, 3)}
    return diffspace.load(run_dir, device=ctx.device), run_dir


def plan_samples(ctx: Context, result: Result, trained: Any, seconds: float, nominal_num: int, nominal_steps: int,
                 batch: int, cond: dict | None = None, floor: int = 64) -> tuple[int, int]:
    """(samples, sampler steps) that fit in `seconds`, from a timed 2-step call at the evaluation batch size:
    samples are cut first (down to `floor`), then steps."""
    from diffspace.build import generate

    model, shape = trained.model, trained.facts.shape
    probe = min(batch, nominal_num)
    ctx.sync()
    began = time.perf_counter()
    generate(model, shape, probe, trained.config.sample.sampler, 2, 0, probe, torch.device(ctx.device),
                      cond=cond)
    ctx.sync()
    per_sample_step = (time.perf_counter() - began) / 2 / probe  # per sample and sampler step (NFE of 2 steps)
    num = fits(seconds, per_sample_step * nominal_steps, nominal_num, floor)
    steps = fits(seconds, per_sample_step * num, nominal_steps, 5) if num == floor else nominal_steps
    return cut(result, "samples", nominal_num, num), cut(result, "sampler_steps", nominal_steps, steps)


def entries(report: Any) -> dict[str, Any]:
    """An evaluation report's entries by metric name."""
    return {e.metric: e for e in report.entries}


def evaluate(ctx: Context, result: Result, trained: Any, run_dir: Path, metrics: list[str], seconds: float,
             nominal_num: int, nominal_bpd: int, softness: float | None = None) -> dict[str, Any]:
    """`evaluate_model` with the samples and steps that fit in `seconds` (bits/dim on `nominal_bpd` test images)."""
    from diffspace.evaluate import EvalOptions, evaluate_model

    sampled = any(m not in ("bpd", "ode_bpd") for m in metrics)
    batch = 500 if not ctx.smoke else 16
    num, steps = 2, trained.config.sample.steps if not ctx.smoke else 4  # nothing is sampled for bits/dim alone
    if sampled:
        num, steps = plan_samples(ctx, result, trained, 0.75 * seconds, nominal_num, steps, batch,
                                  None if softness is None else {"softness": softness}, 64 if not ctx.smoke else 8)
    options = EvalOptions(num=num, steps=steps, batch_size=batch, bpd_num=nominal_bpd, seed=0,
                          reference_num=10000 if not ctx.smoke else 256, softness=softness,
                          data_dir=ctx.data_dir, device=ctx.device)
    report = evaluate_model(trained, metrics, run_dir / "eval.json", options, str(run_dir))
    found = entries(report)
    result.details["eval"] = {"samples": num if sampled else 0, "sampler": trained.config.sample.sampler,
                              "steps": steps, "bpd_images": nominal_bpd}
    return found


def add(result: Result, name: str, entry: Any, unit: str) -> None:
    """A figure from a report entry."""
    result.figures.append(Figure(name, entry.value, unit, entry.stderr))


#: Overrides that shrink a preset to smoke size.
SMOKE_MNIST = ["model.size=tiny", "train.batch_size=8", "data.max_items=256", "data.resolution=14"]


def quality_of_preset(ctx: Context, preset: str, overrides: list[str], at: str, softness: float | None) -> Result:
    """`preset` (with `overrides`, or smoke sizes) trained for about a minute: domain FID and test bits/dim."""
    from diffspace.config import load_preset

    require_data(ctx, "mnist")
    result = Result()
    cfg = load_preset(preset).with_overrides(overrides if not ctx.smoke else SMOKE_MNIST)
    trained, run_dir = train_to_fit(ctx, result, cfg, 3000 if not ctx.smoke else 3, 0.55 * ctx.left())
    found = evaluate(ctx, result, trained, run_dir, ["domain_fid", "bpd"], ctx.left() - 2,
                     1000 if not ctx.smoke else 8, 1000 if not ctx.smoke else 8, softness=softness)
    add(result, f"domain FID{at}", found["domain_fid"], "")
    add(result, f"bits/dim{at} (test)", found["bpd"], "bits/dim")
    return result


def quality_mnist(ctx: Context) -> Result:
    """The `mnist` preset for about a minute: domain FID (classifier features) and bits/dim."""
    return quality_of_preset(ctx, "mnist", [], "", None)


def quality_gud(ctx: Context) -> Result:
    """One GUD softness point: gud-mnist-pca (whitened PCA prior, softness-conditioned U-Net) evaluated at a = 1."""
    return quality_of_preset(ctx, "gud-mnist-pca", ["model.size=small", "train.lr=0.001", "train.ema_decay=0.999"],
                             " at a = 1", 1.0)


def quality_multivariate(ctx: Context) -> Result:
    """CLD and learned K = 2 trained for the same steps; test bits/dim of each (ELBO, one draw per image)."""
    from diffspace.config import load_preset
    from diffspace.metrics.bpd import elbo_bpd

    require_data(ctx, "mnist")
    from diffspace.data import load_dataset

    result = Result()
    small = [] if not ctx.smoke else SMOKE_MNIST
    configs = {name: load_preset(f"mdm-mnist-{name}").with_overrides(small) for name in ("cld", "learned2")}
    per_step = seconds_per_step(ctx, configs["learned2"].with_overrides(["train.steps=1000"]))  # the slower one
    nominal = 1500 if not ctx.smoke else 3
    steps = cut(result, "train_steps", nominal, fits(0.35 * ctx.left() - 2, per_step, nominal, 2))
    bpd_num = 1000 if not ctx.smoke else 8
    test = load_dataset(dataclasses.replace(configs["cld"].data, split="test", max_items=bpd_num), ctx.data_dir)
    values = {}
    for name, cfg in configs.items():
        trained, _ = train_to_fit(ctx, result, cfg, steps, math.inf, tag=f"{name}_", per_step=per_step)
        model = trained.model.eval()
        values[name] = elbo_bpd(model.process, model.net, test.images, trained.facts.levels,
                                generator=torch.Generator(ctx.device).manual_seed(0), batch_size=250)
        result.figures.append(Figure(f"{name} bits/dim (test, {steps} steps)", values[name].value, "bits/dim",
                                     values[name].stderr))
    diff = values["learned2"].per_image - values["cld"].per_image
    result.figures.append(Figure("learned2 − cld bits/dim (paired)", float(diff.mean()), "bits/dim",
                                 float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else None))
    return result


def quality_multilevel(ctx: Context) -> Result:
    """multilevel-mnist (14 → 28) trained for about a minute, sampled at 28 and at the unseen 56: SW₂ and the largest
    per-octave spectrum error against the test digits (enlarged bilinearly at 56)."""
    import dataclasses as dc

    from diffspace.build import generate
    from diffspace.config import load_preset
    from diffspace.data import load_dataset
    from diffspace.metrics import function_metrics
    from diffspace.multilevel import level_images
    from diffspace.process import DataFacts
    from diffspace.sample import at_resolution

    require_data(ctx, "mnist")
    result = Result()
    cfg = load_preset("multilevel-mnist")
    if ctx.smoke:
        cfg = cfg.with_overrides(["model.modes=4", "model.width=8", "train.batch_size=8", "data.max_items=256",
                                  "multilevel.batch_sizes=", "multilevel.resolutions=7,14", "data.resolution=14"])
    trained, _ = train_to_fit(ctx, result, cfg, 4000 if not ctx.smoke else 4, 0.5 * ctx.left())
    fine = trained.facts.shape[-1]
    nominal_num = 1000 if not ctx.smoke else 8
    num, steps = plan_samples(ctx, result, trained, 0.6 * ctx.left() / 5, nominal_num,
                              trained.config.sample.steps if not ctx.smoke else 4, nominal_num,
                              floor=128 if not ctx.smoke else 8)  # 56×56 costs ≈ 4× 28×28
    test = load_dataset(dc.replace(trained.config.data, split="test", max_items=num, resolution=0), ctx.data_dir)
    for resolution in (fine, 2 * fine):
        facts = DataFacts((1, resolution, resolution), trained.facts.levels)
        model = at_resolution(trained.config, trained.model, facts)
        samples, _ = generate(model, facts.shape, num, "euler_maruyama", steps, 0, num, torch.device(ctx.device))
        data = level_images(test.images, resolution, "mnist", trained.config.data.resize)
        metrics = function_metrics(samples, data, generator=torch.Generator().manual_seed(0))
        result.figures.append(Figure(f"SW₂ at {resolution}×{resolution}", metrics.sliced_wasserstein, ""))
        result.figures.append(Figure(f"largest octave spectrum error at {resolution}×{resolution}",
                                     max(metrics.spectrum_error), ""))
        result.details[f"spectrum_error_{resolution}"] = list(metrics.spectrum_error)
    return result


def quality_blackout(ctx: Context) -> Result:
    """blackout-binarized-mnist for about a minute: the NLL bound of test images (bits/dim)."""
    from diffspace.config import load_preset

    require_data(ctx, "binarized-mnist")
    result = Result()
    cfg = load_preset("blackout-binarized-mnist")
    if ctx.smoke:
        cfg = cfg.with_overrides(["model.size=tiny", "train.batch_size=8", "data.max_items=256"])
    trained, run_dir = train_to_fit(ctx, result, cfg, 3000 if not ctx.smoke else 3, 0.7 * ctx.left())
    found = evaluate(ctx, result, trained, run_dir, ["bpd"], ctx.left(), 0, 1000 if not ctx.smoke else 8)
    add(result, "NLL bound (test)", found["bpd"], "bits/dim")
    return result


@dataclass(frozen=True)
class Item:
    """A suite item: its function, its weight in the budget, and whether it runs in a subprocess."""

    name: str
    fn: Callable[[Context], Result]
    weight: float
    subprocess: bool = False
    smoke: bool = True  # runs in --smoke


ITEMS: tuple[Item, ...] = (
    Item("unet_ddpmpp_train", lambda ctx: unet_ddpmpp(ctx, compile=False), 6),
    Item("unet_ddpmpp_train_compile", lambda ctx: unet_ddpmpp(ctx, compile=True), 18, subprocess=True, smoke=False),
    Item("fno_train", fno_train, 4),
    Item("fno_sample", fno_sample, 4),
    Item("blackout_sample", blackout_sample, 6),
    Item("multivariate_step", multivariate_step, 6),
    Item("quality_mnist", quality_mnist, 12),
    Item("quality_gud", quality_gud, 10),
    Item("quality_multivariate", quality_multivariate, 12),
    Item("quality_multilevel", quality_multilevel, 12),
    Item("quality_blackout", quality_blackout, 10),
)


# ----- running ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise ItemTimeout in the main thread after `seconds` (no-op outside the main thread or without SIGALRM)."""
    usable = hasattr(signal, "setitimer") and threading_main()
    if not usable:
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise ItemTimeout(f"stopped after {seconds:.0f} s (its hard limit)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def clean_float(value: Any) -> Any:
    """JSON-safe numbers: NaN/Inf become None; tensors and numpy scalars become floats."""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_float(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_float(v) for v in value]
    return value


def run_one(item: Item, ctx: Context) -> dict[str, Any]:
    """Run `item` with its budget; a record entry (status ok / error / timeout / skipped)."""
    entry: dict[str, Any] = {"item": item.name, "budget_s": round(ctx.budget, 1), "status": "ok", "figures": [],
                             "cuts": {}, "details": {}}
    ctx.started = time.perf_counter()
    try:
        if item.subprocess:
            result = run_in_subprocess(item, ctx)
        else:
            with alarm(HARD_FACTOR * ctx.budget + GRACE):
                result = item.fn(ctx)
        entry.update(figures=[dataclasses.asdict(f) for f in result.figures], cuts=result.cuts,
                     details=result.details)
    except Skip as err:
        entry.update(status="skipped", error=str(err))
    except ItemTimeout as err:
        entry.update(status="timeout", error=str(err))
    except Exception as err:  # noqa: BLE001 — the suite records every failure and goes on
        entry.update(status="error", error=f"{type(err).__name__}: {err}",
                     traceback=traceback.format_exc(limit=6).splitlines()[-6:])
    finally:
        entry["elapsed_s"] = round(time.perf_counter() - ctx.started, 2)
        gc.collect()
        if ctx.cuda:
            torch.cuda.empty_cache()
    return clean_float(entry)


def run_in_subprocess(item: Item, ctx: Context) -> Result:
    """`item` in a fresh interpreter with a hard timeout (for compilation, which cannot be interrupted)."""
    command = [sys.executable, __file__, "--one", item.name, "--device", ctx.device, "--item-budget",
               str(ctx.budget), "--work", str(ctx.work), "--threads", str(torch.get_num_threads())]
    command += (["--data-dir", ctx.data_dir] if ctx.data_dir else []) + (["--smoke"] if ctx.smoke else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=HARD_FACTOR * ctx.budget + GRACE)
    except subprocess.TimeoutExpired:
        raise ItemTimeout(f"its subprocess was killed after {HARD_FACTOR * ctx.budget + GRACE:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"subprocess exited with {done.returncode}: {tail}")
    raw = json.loads(lines[-1])
    return Result([Figure(**f) for f in raw["figures"]], raw["cuts"], raw["details"])


def environment(device: str) -> dict[str, Any]:
    """Device name, torch, CUDA and cuDNN versions, and what else a figure depends on."""
    info: dict[str, Any] = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(cudnn=torch.backends.cudnn.version(), gpu_memory_GiB=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


HEADER = f"{'item':<26} {'figure':<58} {'value':>16} {'target':<46} {'budget s':>8} {'elapsed s':>9}  notes"


def entry_lines(entry: dict[str, Any]) -> list[str]:
    """The table lines of one item: one per figure (value ± se, target, met, budget and elapsed seconds, cuts), or
    its status and message."""
    notes = "; ".join(f"{k} {v['nominal']}→{v['used']}" for k, v in entry["cuts"].items())
    head, tail = f"{entry['item']:<26}", f"{entry['budget_s']:>8.0f} {entry['elapsed_s']:>9.1f}"
    if entry["status"] != "ok":
        return [f"{head} {'—':<58} {'—':>16} {'':<46} {tail}  {entry['status'].upper()}: {entry.get('error')}"]
    lines = []
    for i, f in enumerate(entry["figures"]):
        value = "—" if f["value"] is None else f"{f['value']:,.4g}"
        if f.get("stderr") is not None:
            value += f" ± {f['stderr']:.2g}"
        target = (f["target"] or "") + ("" if f["met"] is None else ("  met" if f["met"] else "  NOT met"))
        lines.append(f"{head if i == 0 else '':<26} {f['name'][:58]:<58} {value:>16} {target[:46]:<46} "
                     f"{tail if i == 0 else '':>18}  {notes if i == 0 else ''}")
    return lines


def table(record: dict[str, Any]) -> str:
    """The whole table."""
    return "\n".join([HEADER] + [line for entry in record["items"] for line in entry_lines(entry)])


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole suite (default 480; with --smoke 40)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (well under a minute)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $DIFFSPACE_DATA or ~/.cache/diffspace)")
    parser.add_argument("--only", default="", help="comma-separated items to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated items not to run")
    parser.add_argument("--out", default=None, help="the JSON record (default benchmarks/results/suite-<device>.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary folder, removed)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--item-budget", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.smoke:
        args.device = "cpu"
    if args.budget is None:
        args.budget = 40.0 if args.smoke else 480.0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    if args.data_dir is None:
        args.data_dir = os.environ.get("DIFFSPACE_DATA") or None
    known = {item.name for item in ITEMS}
    for name in filter(None, (args.only + "," + args.skip).split(",")):
        if name not in known:
            parser.error(f"unknown item {name!r}; items: {', '.join(sorted(known))}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the suite (or one item with --one), print the table, write the record; returns the record."""
    args = arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:  # a subprocess item: print its result as one JSON line
        item = next(i for i in ITEMS if i.name == args.one)
        ctx = Context(args.device, args.smoke, args.data_dir, Path(args.work), args.item_budget, time.perf_counter())
        result = item.fn(ctx)
        print(json.dumps(clean_float(dataclasses.asdict(result))))
        return {}
    print(HEADER, flush=True)
    chosen = [i for i in ITEMS if (not args.only or i.name in args.only.split(","))
              and i.name not in args.skip.split(",")]
    began = time.perf_counter()
    deadline = began + PLANNED * args.budget
    out = Path(args.out) if args.out else record_path("suite", args.device)
    record = {"benchmark": "suite", **environment(args.device), "budget_s": args.budget, "smoke": args.smoke,
              "data_dir": args.data_dir, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "items": []}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        previous_cache = os.environ.get("DIFFSPACE_CACHE")
        if previous_cache is None:
            os.environ["DIFFSPACE_CACHE"] = str(work / "cache")  # reference statistics: never the shared data folder
        try:
            for index, item in enumerate(chosen):
                left = deadline - time.perf_counter()
                weights = sum(i.weight for i in chosen[index:] if args.smoke is False or i.smoke)
                ctx = Context(args.device, args.smoke, args.data_dir, work,
                              budget=max(0.0, left * item.weight / weights) if weights else 0.0)
                if args.smoke and not item.smoke:
                    entry = {"item": item.name, "budget_s": 0.0, "elapsed_s": 0.0, "status": "skipped",
                             "error": "not in --smoke (a cold torch.compile takes 25–90 s on a CPU)",
                             "figures": [], "cuts": {}, "details": {}}
                elif left <= 1.0:
                    entry = {"item": item.name, "budget_s": 0.0, "elapsed_s": 0.0, "status": "skipped",
                             "error": "no time left before the suite's deadline", "figures": [], "cuts": {},
                             "details": {}}
                else:
                    entry = run_one(item, ctx)
                record["items"].append(entry)
                print("\n".join(entry_lines(entry)), flush=True)
                record["elapsed_s"] = round(time.perf_counter() - began, 1)
                save(record, args.device, out)
        finally:
            if previous_cache is None:
                os.environ.pop("DIFFSPACE_CACHE", None)
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    record["elapsed_s"] = round(time.perf_counter() - began, 1)
    print()
    print(f"diffspace suite on {record['device_name']} (torch {record['torch']}, CUDA {record['cuda']}), budget "
          f"{args.budget:.0f} s, elapsed {record['elapsed_s']:.0f} s" + (" — smoke (toy sizes)" if args.smoke else ""))
    print(table(record))
    save(record, args.device, out, announce=True)
    return record


def save(record: dict[str, Any], device: str, out: Path, announce: bool = False) -> None:
    """Write the record to `out` (records.write_record; quietly after each item, announced at the end)."""
    write_record("suite", device, record, path=out, quiet=not announce)


if __name__ == "__main__":
    main()
