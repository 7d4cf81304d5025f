"""From a config to the objects that train and sample.

`build` turns a `RunConfig` into a data set and a `Model` (network + forward process) and the config
resolved against the data; `generate` draws samples from a model in batches with per-sample seeds;
`resolve_run` is what `diffspace train` does before training. Trained models are loaded by
`diffspace.model.load`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffspace.config import ConfigError, RunConfig, check_sampler_options, load_preset, validate_names
from diffspace.data import ImageDataset, load_dataset
from diffspace.nets import build_net
from diffspace.noise import PerSampleGenerator
from diffspace.process import DataFacts, Process, build_process, family, get_sampler, resolve_config
from diffspace.sampling import default_steps

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


def fit_images(dataset: ImageDataset, cfg: RunConfig) -> Tensor | None:
    """The first FIT_ITEMS training images, which fit a process's data-driven parts (and let a builder check the
    data); a streamed data set is decoded for them only when its process fits parts to data."""
    if not dataset.streamed:
        return dataset.images[:FIT_ITEMS]
    if not family(cfg.process.kind).fits_data(cfg.process):
        return None
    return dataset.images[torch.arange(min(FIT_ITEMS, len(dataset)))]


def build(cfg: RunConfig, data_dir: str | Path | None = None) -> Built:
    """Load the data set and build process and network for it (weights from the global torch
    RNG: seed it first for a reproducible initialisation)."""
    validate_names(cfg)
    dataset = load_dataset(cfg.data, data_dir)
    info, facts = dataset.info, data_facts(dataset)
    resolved = dataclasses.replace(cfg, process=resolve_config(cfg.process, facts))
    try:
        process = build_process(resolved.process, fit_images(dataset, resolved), facts)
        in_channels, out_channels = process.network_channels(info.channels)
        net = build_net(cfg.model, in_channels, out_channels, info.size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return Built(dataset, Model(net, process), resolved)


def generate(
    model: Model,
    shape: tuple[int, int, int],
    num: int,
    sampler: str,
    steps: int | None,
    seed: int,
    batch_size: int,
    device: torch.device,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
    compile: bool = False,
) -> tuple[Tensor, int]:
    """`num` samples of per-image shape `shape` (C, H, W) in model space, drawn in batches of at most `batch_size`;
    sample i's noise comes from its own generator seeded (seed, i), so it does not depend on the batch size.
    Returns (samples on CPU, NFE per batch). `cond` (e.g. {"softness": 0.7}) is passed to the sampler, and so are
    its knobs `options` (grid, rho, t_end, eta, …; checked against its signature: `check_sampler_options`);
    steps None takes the sampler's default. `compile` runs the network through torch.compile (same samples up to
    floating-point reassociation)."""
    fn = get_sampler(sampler)
    knobs = check_sampler_options(sampler, options or {})
    net = torch.compile(model.net, dynamic=False) if compile else model.net
    chunks, nfe = [], 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, num, batch_size):
            size = min(batch_size, num - start)
            generator = PerSampleGenerator.for_indices(seed, range(start, start + size), device)
            try:
                result = fn(model.process, net, (size, *shape), steps, generator, cond=cond, progress=progress,
                            **knobs)
            except ValueError as err:  # bad steps or options for this sampler: a usage error, not a crash
                raise ConfigError(f"sampler {sampler!r}: {err}") from None
            chunks.append(result.samples.float().cpu())
            nfe = result.nfe
    model.train(was_training)
    return torch.cat(chunks), nfe


def steps_of_run(model: Model, sampler: str, steps: int | None) -> int | None:
    """The number of steps a sampler run takes: `steps`, else the sampler's default for the model's process."""
    return steps if steps is not None else default_steps(get_sampler(sampler), model.process)


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
