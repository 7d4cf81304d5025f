"""Trained models that stand alone: the model folder, `load`, and a model that samples and scores itself.

A **model folder** holds everything a trained model needs, and nothing of its data set:

    config.yaml        the resolved run config (versioned)
    model.safetensors  the network's weights (EMA by default) and every process buffer and parameter
                       (PCA basis and mean, fitted prior, soft-schedule labels, learned Q and D)
    model.json         the card: format, diffspace version, family, data set, per-image shape and levels,
                       training step, weights (ema/raw), and metrics once evaluated

`diffspace export --run DIR --out MODEL_DIR` writes one from a run's newest checkpoint, and training writes
one to `<run>/model` at its end. `load(PATH)` reads a model folder or a run directory (its newest checkpoint)
and returns a `TrainedModel` on CPU or CUDA without touching the data set. A folder that is not a model, a
truncated weights file, weights of another family or shape, or a model written by a newer diffspace are
refused with one `ModelError` line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from diffspace import __version__
from diffspace.build import CONFIG_FILE, Model, generate
from diffspace.checkpoint import RunError, atomic_write, export_safetensors, load_latest
from diffspace.config import RunConfig
from diffspace.metrics.bpd import elbo_bpd
from diffspace.nets import build_net
from diffspace.process import DataFacts, restore_process
from diffspace.validation import ConfigError

#: The model-folder layout this version writes (and the newest it reads).
MODEL_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
#: Where training writes the model folder inside its run directory.
RUN_MODEL_DIR = "model"


class ModelError(RunError):
    """A path that cannot be loaded as a trained model; the message says what is wrong and what to do."""


@dataclass
class ModelCard:
    """The small description `model.json` holds (see the module docstring)."""

    family: str
    data: str
    shape: tuple[int, int, int]
    levels: int | None
    step: int
    weights: str = "ema"
    format: int = MODEL_FORMAT
    diffspace: str = __version__
    metrics: dict[str, Any] = field(default_factory=dict)

    def facts(self) -> DataFacts:
        """The data facts the process is built for."""
        return DataFacts(tuple(self.shape), self.levels)

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """Parse `model.json`; ModelError when it is not a card of a format this version reads."""
        try:
            raw = json.loads(path.read_text())
            card = cls(**{**raw, "shape": tuple(raw["shape"])})
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ModelError(f"{path} is not a model card ({err}); re-export the model with `diffspace export`") from None
        if card.format > MODEL_FORMAT:
            raise ModelError(f"{path.parent} is a model of format {card.format}, written by diffspace {card.diffspace}; "
                             f"this diffspace ({__version__}) reads up to format {MODEL_FORMAT}: upgrade it")
        return card


def _split(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A Model state dict as (net entries, process entries), prefixes removed."""
    net = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    process = {k[len("process."):]: v for k, v in state.items() if k.startswith("process.")}
    return net, process


class TrainedModel:
    """A trained network and its forward process, ready to sample and score: `sample`, `nll`, `to`."""

    def __init__(self, config: RunConfig, model: Model, card: ModelCard) -> None:
        self.config, self.model, self.card = config, model, card

    @property
    def facts(self) -> DataFacts:
        """Per-image shape and levels of the data the model was trained on."""
        return self.card.facts()

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        return self.model.process.device

    def to(self, device: torch.device | str) -> TrainedModel:
        """Move the model to `device` (in place); returns self."""
        self.model.to(device)
        return self

    def sample(self, num: int, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
               batch_size: int | None = None, cond: dict[str, Any] | None = None, progress: bool = False,
               compile: bool | None = None, **options: Any) -> Tensor:
        """`num` samples (num, C, H, W) in model space on the CPU; unset arguments take the run's sample config.
        `options` are the sampler's knobs (grid="edm", rho=7, eta=0.5, churn=10, …) on top of the run's own for its
        sampler. Sample i depends on the seed and i alone (not on the batch size). `compile` (default: the run's
        sample.compile) runs the network through torch.compile."""
        s = self.config.sample
        sampler = sampler or s.sampler
        samples, _ = generate(self.model, self.facts.shape, num, sampler, steps or s.steps,
                              s.seed if seed is None else seed, batch_size or s.batch_size, self.device, cond=cond,
                              progress=progress, options=s.knobs_for(sampler, options),
                              compile=s.compile if compile is None else compile)
        return samples

    def nll(self, x: Tensor, repeats: int = 1, seed: int = 0, batch_size: int = 256,
            cond: dict[str, Any] | None = None) -> Tensor:
        """The negative ELBO in bits/dim of each image of model-space `x` (N, C, H, W): of the discrete data,
        dequantized afresh for each of `repeats` draws, when the data have levels."""
        if tuple(x.shape[1:]) != self.facts.shape:
            raise ValueError(f"this model scores images of shape {self.facts.shape}; got {tuple(x.shape[1:])}")
        was_training = self.model.training
        self.model.eval()
        result = elbo_bpd(self.model.process, self.model.net, x, self.facts.levels, repeats=repeats,
                          generator=torch.Generator(self.device).manual_seed(seed), batch_size=batch_size,
                          cond=cond)
        self.model.train(was_training)
        return result.per_image


def assemble(config: RunConfig, card: ModelCard, state: Mapping[str, Tensor]) -> Model:
    """The Model of a saved state dict (keys "net.*", "process.*") built from its config and card alone."""
    net_state, process_state = _split(state)
    try:
        process = restore_process(config.process, card.facts(), process_state)
        in_channels, out_channels = process.network_channels(card.shape[0])
        net = build_net(config.model, in_channels, out_channels, card.shape[1:])
        net.load_state_dict(net_state)
    except (ValueError, RuntimeError) as err:
        raise ModelError(f"the saved weights do not fit this model's config: {str(err).splitlines()[0]}") from None
    return Model(net, process)


def save_model(out: str | Path, config: RunConfig, state: Mapping[str, Tensor], card: ModelCard) -> Path:
    """Write a model folder (config.yaml, model.safetensors, model.json) to `out`; each file atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_FILE)
    export_safetensors(dict(state), out / WEIGHTS_FILE, {"format": str(MODEL_FORMAT), "family": card.family})
    text = json.dumps(asdict(card), indent=2, ensure_ascii=False)
    atomic_write(out / CARD_FILE, lambda handle: handle.write(text.encode()))
    return out


def record_metrics(folder: str | Path, metrics: Mapping[str, Any]) -> None:
    """Add evaluated figures to a model folder's card (metric name → value, standard error, sample count…)."""
    path = Path(folder) / CARD_FILE
    card = ModelCard.read(path)
    card.metrics.update(metrics)
    text = json.dumps(asdict(card), indent=2, ensure_ascii=False)
    atomic_write(path, lambda handle: handle.write(text.encode()))


def is_model_folder(path: str | Path) -> bool:
    """Whether `path` holds a model card (a model folder rather than a run directory)."""
    return (Path(path) / CARD_FILE).is_file()


def checkpoint_facts(state: Mapping[str, Any]) -> DataFacts | None:
    """The data facts a checkpoint records (None for checkpoints written before they were recorded)."""
    facts = state.get("facts")
    if facts is None:
        return None
    return DataFacts(tuple(facts["shape"]), facts["levels"])


def export_run(run_dir: str | Path, out: str | Path, ema: bool = True,
               data_dir: str | Path | None = None) -> tuple[Path, ModelCard]:
    """Write the model folder of a run's newest checkpoint (EMA or raw weights) to `out`; (folder, its card)."""
    trained = load(run_dir, ema=ema, device="cpu", data_dir=data_dir)
    return save_model(out, trained.config, trained.model.state_dict(), trained.card), trained.card


def _load_folder(path: Path, ema: bool) -> TrainedModel:
    """A model folder (see the module docstring)."""
    for name in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE):
        if not (path / name).is_file():
            raise ModelError(f"{path} is not a model folder (no {name}); write one with "
                             f"`diffspace export --run RUN_DIR --out {path}`")
    card = ModelCard.read(path / CARD_FILE)
    try:
        config = RunConfig.load(path / CONFIG_FILE)
    except ConfigError as err:
        raise ModelError(str(err)) from None
    if config.process.kind != card.family:
        raise ModelError(f"{path}: model.json says family {card.family!r} but config.yaml has process.kind="
                         f"{config.process.kind!r}; the folder was assembled from two models")
    if not ema and card.weights == "ema":
        raise ModelError(f"{path} holds EMA weights only; the raw weights are in the run directory's checkpoints")
    try:
        state = load_file(path / WEIGHTS_FILE)
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{path / WEIGHTS_FILE} is damaged or truncated ({err}); export the model again") from None
    return TrainedModel(config, assemble(config, card, state), card)


def _load_run(path: Path, ema: bool, data_dir: str | Path | None) -> TrainedModel:
    """A run directory's newest checkpoint; checkpoints without recorded data facts need the data set."""
    from diffspace.build import build

    found = load_latest(path)  # the newest checkpoint that verifies; newer broken ones are reported
    if found is None:
        raise RunError(f"{path} has no checkpoint yet; train it longer with `diffspace train --run-dir {path}`")
    config = RunConfig.load(path / CONFIG_FILE)
    state = found[1]
    weights = state["ema"]["module"] if ema else state["model"]
    facts = checkpoint_facts(state)
    card = ModelCard(config.process.kind, config.data.name, facts.shape if facts else (0, 0, 0),
                     facts.levels if facts else None, state["step"], "ema" if ema else "raw")
    if facts is not None:
        return TrainedModel(config, assemble(config, card, weights), card)
    built = build(config, data_dir)  # written before checkpoints recorded their data facts: rebuild from the data
    built.model.load_state_dict(weights)
    shape, levels = tuple(built.dataset.images.shape[1:]), built.dataset.info.levels
    return TrainedModel(built.config, built.model, ModelCard(card.family, card.data, shape, levels, card.step,
                                                             card.weights))


def load(path: str | Path, ema: bool = True, device: torch.device | str | None = None,
         data_dir: str | Path | None = None) -> TrainedModel:
    """The trained model of a model folder or a run directory (newest checkpoint; EMA weights unless ema=False), on
    `device` (default: CUDA when available and the run did not ask for the CPU). The data set is read only for
    run checkpoints written before they recorded their data facts."""
    path = Path(path)
    if is_model_folder(path) or (path / WEIGHTS_FILE).is_file():
        trained = _load_folder(path, ema)
    elif (path / CONFIG_FILE).is_file():
        trained = _load_run(path, ema, data_dir)
    else:
        raise ModelError(f"{path} is neither a model folder nor a run directory (no {CARD_FILE} or {CONFIG_FILE})")
    if device is None:
        device = "cuda" if torch.cuda.is_available() and trained.config.train.device != "cpu" else "cpu"
    return trained.to(device)


__all__ = ["MODEL_FORMAT", "ModelCard", "ModelError", "TrainedModel", "assemble", "export_run", "is_model_folder",
           "load", "record_metrics", "save_model"]
