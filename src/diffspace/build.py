"""From a config (and a run's checkpoint) to the objects that train and sample.

`build` turns a `RunConfig` into a data set and a `Model` (network + forward process);
`load_run` rebuilds a trained run's model from its `config.yaml` and newest checkpoint;
`generate` draws samples from a model in batches; `resolve_run` and `sample_run` are what
`diffspace train` and `diffspace sample` do before and instead of training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from diffspace.checkpoint import RunError, load_latest
from diffspace.config import ConfigError, RunConfig, load_preset, validate_names
from diffspace.data import ImageDataset, load_dataset
from diffspace.images import save_grid
from diffspace.multilevel import check_resolution_free, process_at
from diffspace.nets import build_net
from diffspace.noise import PerSampleGenerator
from diffspace.process import DataFacts, Process, build_process, check_sampler, family, get_sampler, resolve_config

#: At most this many training images (the first ones) fit a process's data-driven parts
#: (fitted priors, PCA bases).
FIT_ITEMS = 10_000

CONFIG_FILE = "config.yaml"


class Model(nn.Module):
    """The trained object: the network and the forward process (whose parameters and buffers,
    if any, belong to the model too). State-dict keys are "net.*" and "process.*"."""

    process: Process

    def __init__(self, net: nn.Module, process: Process) -> None:
        super().__init__()
        self.net = net
        self.process = process


@dataclass
class Built:
    """A data set, the model built for it and the config resolved against it (data-derived fields filled in)."""

    dataset: ImageDataset
    model: Model
    config: RunConfig


def data_facts(dataset: ImageDataset) -> DataFacts:
    """The facts a process builder may know of a data set: per-image shape and intensity levels."""
    return DataFacts(tuple(dataset.images.shape[1:]), dataset.info.levels)


def build(cfg: RunConfig, data_dir: str | Path | None = None) -> Built:
    """Load the data set and build process and network for it (weights from the global torch
    RNG: seed it first for a reproducible initialisation)."""
    validate_names(cfg)
    dataset = load_dataset(cfg.data, data_dir)
    info, facts = dataset.info, data_facts(dataset)
    resolved = dataclasses.replace(cfg, process=resolve_config(cfg.process, facts))
    try:
        process = build_process(resolved.process, dataset.images[:FIT_ITEMS], facts)
        in_channels, out_channels = process.network_channels(info.channels)
        net = build_net(cfg.model, in_channels, out_channels, info.size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return Built(dataset, Model(net, process), resolved)


def load_run(
    run_dir: str | Path, ema: bool = True, data_dir: str | Path | None = None
) -> tuple[RunConfig, Built, int]:
    """A trained run: its config, data set and model with the newest intact checkpoint's EMA (or raw)
    weights (see `load_latest`), and the checkpoint's step."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); train one with `diffspace train`")
    found = load_latest(run_dir)
    if found is None:
        raise RunError(f"{run_dir} has no checkpoint yet; train it longer with `diffspace train --run-dir {run_dir}`")
    built = build(RunConfig.load(run_dir / CONFIG_FILE), data_dir)
    state = found[1]
    built.model.load_state_dict(state["ema"]["module"] if ema else state["model"])
    return built.config, built, state["step"]


def generate(
    model: Model,
    shape: tuple[int, int, int],
    num: int,
    sampler: str,
    steps: int,
    seed: int,
    batch_size: int,
    device: torch.device,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """`num` samples of per-image shape `shape` (C, H, W) in model space, drawn in batches of at most `batch_size`;
    sample i's noise comes from its own generator seeded (seed, i), so it does not depend on the batch size.
    Returns (samples on CPU, NFE per batch). `cond` (e.g. {"softness": 0.7}) is passed to the sampler."""
    fn = get_sampler(sampler)
    chunks, nfe = [], 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, num, batch_size):
            size = min(batch_size, num - start)
            generator = PerSampleGenerator.for_indices(seed, range(start, start + size), device)
            try:
                result = fn(model.process, model.net, (size, *shape), steps, generator, cond=cond, progress=progress)
            except ValueError as err:  # bad steps or options for this sampler: a usage error, not a crash
                raise ConfigError(f"sampler {sampler!r}: {err}") from None
            chunks.append(result.samples.float().cpu())
            nfe = result.nfe
    model.train(was_training)
    return torch.cat(chunks), nfe


def resolve_run(
    preset: str | None, run_dir: str | Path | None, overrides: list[str]
) -> tuple[RunConfig, Path]:
    """The config and run directory of `diffspace train`: the run directory defaults to
    runs/<preset>; without --preset an existing run directory's own config.yaml is the base
    (so a bare command resumes any run), otherwise the preset (default "quickstart");
    the dotted overrides apply on top."""
    run_path = Path(run_dir) if run_dir is not None else Path("runs") / (preset or "quickstart")
    saved = run_path / CONFIG_FILE
    base = RunConfig.load(saved) if preset is None and saved.is_file() else load_preset(preset or "quickstart")
    return base.with_overrides(overrides), run_path


@dataclass
class SampleReport:
    """What `sample_run` wrote."""

    path: Path
    num: int
    sampler: str
    steps: int
    nfe: int
    step: int
    ema: bool
    size: tuple[int, int]


def at_resolution(cfg: RunConfig, model: Model, facts: DataFacts) -> Model:
    """The run's network with its forward process rebuilt for data with `facts` at another resolution: a process
    defined at every N (capabilities.resolution_free) and a network that runs on any grid."""
    resolution = facts.shape[-1]
    if resolution < 1:
        raise ConfigError(f"--resolution must be ≥ 1; got {resolution}")
    if cfg.model.kind == "mlp":
        raise ConfigError(f"--resolution {resolution}: model.kind=mlp is built for one input size; sampling at "
                          "another resolution needs a network that runs on any grid (model.kind fno or unet)")
    try:
        check_resolution_free(model.process, f"building it at {resolution}×{resolution}")
        process = process_at(cfg.process, facts)
    except ValueError as err:
        raise ConfigError(f"--resolution {resolution}: {err}") from None
    return Model(model.net, process.to(next(model.net.parameters()).device))


def sample_run(
    run_dir: str | Path,
    out: str | Path,
    num: int,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    ema: bool = True,
    data_dir: str | Path | None = None,
    resolution: int | None = None,
    extend_right: int | None = None,
    progress: bool = False,
    batch_size: int | None = None,
) -> SampleReport:
    """Draw `num` samples from a trained run (EMA weights unless ema=False) and write them to
    `out`: a .png grid, or a .npz with `samples` (N, C, H, W) float32 in model space, `levels`
    (0 for continuous data) and the checkpoint `step`. Unset options take the run's sample config.
    `resolution` N samples N×N images, at a resolution the run may never have seen (see `at_resolution`);
    `extend_right` K extends each sample by K columns (models that generate columns left to right). Sample i
    depends on the seed and i alone, not on `batch_size` (samples per sampler call)."""
    out = Path(out)
    if out.suffix not in (".png", ".npz"):
        raise ConfigError(f"--out must end in .png (a grid) or .npz (raw samples); got {out}")
    for name, value in (("--num", num), ("--steps", steps), ("--extend-right", extend_right),
                        ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be ≥ 1; got {value}")
    cfg, built, step = load_run(run_dir, ema, data_dir)
    s = cfg.sample
    sampler, steps = sampler or s.sampler, s.steps if steps is None else steps
    check_sampler(cfg.process.kind, sampler)
    seed = s.seed if seed is None else seed
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    model = built.model.to(device)
    facts = data_facts(built.dataset)
    shape = facts.shape
    if resolution is not None and (resolution, resolution) != shape[1:]:
        facts = DataFacts((shape[0], resolution, resolution), facts.levels)
        model, shape = at_resolution(cfg, model, facts), facts.shape
    extend = None
    if extend_right is not None:
        extend = family(cfg.process.kind).extend_right
        if extend is None:
            raise ConfigError(f"--extend-right: process.kind={cfg.process.kind} has no image extension")
    samples, nfe = generate(model, shape, num, sampler, steps, seed, batch_size or s.batch_size, device,
                            progress=progress)
    if extend is not None:
        try:
            extension = extend(model.process, model.net, samples, extend_right, steps,
                               PerSampleGenerator.for_indices(seed + 1, range(num), device))
        except ValueError as err:
            raise ConfigError(f"--extend-right: {err}") from None
        samples, nfe = extension.images, nfe + extension.nfe
    levels = built.dataset.info.levels
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_grid(samples, out, levels)
    else:
        np.savez(out, samples=samples.numpy(), levels=np.int64(levels or 0), step=np.int64(step))
    return SampleReport(out, num, sampler, steps, nfe, step, ema, tuple(samples.shape[-2:]))
