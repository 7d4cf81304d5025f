"""`diffspace sample`: draw samples from a trained model (a model folder or a run directory) and write them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffspace.build import Model, generate, steps_of_run
from diffspace.config import RunConfig
from diffspace.images import save_grid
from diffspace.model import load
from diffspace.multilevel import check_resolution_free, process_at
from diffspace.noise import PerSampleGenerator
from diffspace.process import DataFacts, check_sampler, family
from diffspace.validation import ConfigError


@dataclass
class SampleReport:
    """What `sample_model` wrote."""

    path: Path
    num: int
    sampler: str
    steps: int | None
    nfe: int
    step: int
    ema: bool
    size: tuple[int, int]
    options: dict[str, Any] = field(default_factory=dict)


def at_resolution(cfg: RunConfig, model: Model, facts: DataFacts) -> Model:
    """The model's network with its forward process rebuilt for data with `facts` at another resolution: a process
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


def check_output(out: str | Path, suffixes: tuple[str, ...]) -> Path:
    """`out` as a Path, refused (ConfigError) unless it ends in one of `suffixes`."""
    out = Path(out)
    if out.suffix not in suffixes:
        raise ConfigError(f"--out must end in {' or '.join(suffixes)}; got {out}")
    return out


def sample_model(
    path: str | Path,
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
    options: Mapping[str, Any] | None = None,
    compile: bool | None = None,
) -> SampleReport:
    """Draw `num` samples from a model folder or run directory (EMA weights unless ema=False) and write them to
    `out`: a .png grid, or a .npz with `samples` (N, C, H, W) float32 in model space, `levels` (0 for continuous
    data) and the training `step`. Unset options take the run's sample config. `resolution` N samples N×N
    images, at a resolution the model may never have seen (see `at_resolution`); `extend_right` K extends each
    sample by K columns (models that generate columns left to right). Sample i depends on the seed and i alone,
    not on `batch_size` (samples per sampler call). `options` are sampler knobs (grid, rho, t_end, eta, …) on top
    of the run's own for its sampler (`SampleConfig.knobs_for`); `compile` (default: the run's sample.compile) runs
    the network through torch.compile. The data set is never read (`data_dir` serves run
    checkpoints written before they recorded their data facts)."""
    out = check_output(out, (".png", ".npz"))
    for name, value in (("--num", num), ("--steps", steps), ("--extend-right", extend_right),
                        ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be ≥ 1; got {value}")
    trained = load(path, ema, data_dir=data_dir)
    cfg, model, facts = trained.config, trained.model, trained.facts
    s = cfg.sample
    sampler, steps = sampler or s.sampler, s.steps if steps is None else steps
    check_sampler(cfg.process.kind, sampler)
    knobs = s.knobs_for(sampler, options)
    seed = s.seed if seed is None else seed
    if resolution is not None and (resolution, resolution) != facts.shape[1:]:
        facts = DataFacts((facts.shape[0], resolution, resolution), facts.levels)
        model = at_resolution(cfg, model, facts)
    extend = None
    if extend_right is not None:
        extend = family(cfg.process.kind).extend_right
        if extend is None:
            raise ConfigError(f"--extend-right: process.kind={cfg.process.kind} has no image extension")
    steps = steps_of_run(model, sampler, steps)
    samples, nfe = generate(model, facts.shape, num, sampler, steps, seed, batch_size or s.batch_size,
                            trained.device, progress=progress, options=knobs,
                            compile=s.compile if compile is None else compile)
    if extend is not None:
        try:
            with torch.no_grad():
                extension = extend(model.process, model.net, samples, extend_right, steps,
                                   PerSampleGenerator.for_indices(seed + 1, range(num), trained.device))
        except ValueError as err:
            raise ConfigError(f"--extend-right: {err}") from None
        samples, nfe = extension.images, nfe + extension.nfe
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        save_grid(samples, out, facts.levels)
    else:
        np.savez(out, samples=samples.numpy(), levels=np.int64(facts.levels or 0), step=np.int64(trained.card.step))
    return SampleReport(out, num, sampler, steps, nfe, trained.card.step, ema, tuple(samples.shape[-2:]), knobs)
