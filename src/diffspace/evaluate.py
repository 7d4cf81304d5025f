"""`diffspace eval`: measure a trained run and write a JSON report with a PNG sample grid beside it.

Metrics (`METRICS`):
  fid, kid            — Inception-v3 features of `num` samples against the training split
                        (`diffspace.metrics.fid`; needs `pip install "diffspace[fid]"`).
  domain_fid          — Fréchet distance on the domain classifier's features (greyscale MNIST-like data), with a
                        bootstrap standard error over the samples.
  precision_recall    — improved precision and recall (k = 3) on the classifier's features.
  class_balance       — TV distance between the classes predicted for samples and for training images.
  function            — power-spectrum error per octave, sliced Wasserstein, Riesz MMD against
                        the test split (`diffspace.metrics.function_space`).
  bpd                 — −ELBO in bits/dim of test images (`process.nll_bound`, dequantized unless the
                        process's state is discrete).
  ode_bpd             — probability-flow ODE bits/dim of test images (processes whose capabilities
                        include an exact ODE likelihood).

Every entry of the report carries metric, value, standard error (None where not defined),
num_samples, NFE, sampler, steps, checkpoint step and device, plus metric-specific details. With
`function`, the radially averaged power spectra of the samples and the data are drawn beside the
report (`<report>-spectrum.png`) when matplotlib is installed; otherwise the report's `notes` say how to
get it (`pip install "diffspace[plot]"`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffspace.build import generate, steps_of_run
from diffspace.checkpoint import atomic_write
from diffspace.config import ConfigError, RunConfig
from diffspace.data import DataConfig, DataError, load_dataset
from diffspace.images import save_grid, to_uint8
from diffspace.metrics.bpd import BpdResult, elbo_bpd, ode_bpd
from diffspace.metrics.classifier import CLASSIFIER_DATASETS
from diffspace.metrics.domain import class_balance, label_frequencies, precision_recall
from diffspace.metrics.fid import FeatureStats, InceptionFeatures, fid_bootstrap_se, fid_from_stats, kernel_distance
from diffspace.metrics.function_space import function_metrics
from diffspace.metrics.reference import ClassifierFeatures, reference_stats
from diffspace.metrics.spectra import radial_power_spectrum
from diffspace.model import TrainedModel, is_model_folder, load, record_metrics
from diffspace.plots import PlotMissing, save_figure, spectrum_figure
from diffspace.validation import unknown

SAMPLE_METRICS = ("fid", "kid", "domain_fid", "precision_recall", "class_balance", "function")
DATA_METRICS = ("bpd", "ode_bpd")
METRICS = SAMPLE_METRICS + DATA_METRICS
GRID_IMAGES = 64
#: Bootstrap resamples of the standard error of domain FID.
FID_BOOTSTRAP = 50


def parse_metrics(text: str) -> list[str]:
    """"fid,kid,bpd" → ["fid", "kid", "bpd"]; ConfigError naming an unknown one and the closest."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"--metrics is empty; choose from {', '.join(METRICS)}")
    for name in names:
        if name not in METRICS:
            raise unknown("metric", name, METRICS)
    return list(dict.fromkeys(names))


@dataclass
class EvalOptions:
    """How to evaluate: sample count and sampler (defaults: the run's sample config), bits/dim
    images and draws, reference-set size (None: the whole training split), weight overrides,
    an evaluation softness (softness-conditioned GUD models), an .npz of images to score in place of
    the test split, EMA or raw weights, data folder, device, and sampler knobs (grid, rho, t_end, eta, …) on top
    of the run's own for its sampler; `compile` (default: the run's sample.compile) runs the network through
    torch.compile."""

    num: int = 1000
    steps: int | None = None
    sampler: str | None = None
    seed: int = 0
    batch_size: int | None = None
    bpd_num: int = 1000
    bpd_repeats: int = 1
    divergence: str = "hutchinson"
    reference_num: int | None = None
    inception_weights: str | None = None
    classifier_weights: str | None = None
    softness: float | None = None
    images: str | None = None
    ema: bool = True
    data_dir: str | None = None
    device: str = "auto"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    compile: bool | None = None


@dataclass
class MetricEntry:
    """One figure of the report and everything needed to read it."""

    metric: str
    value: float
    stderr: float | None
    num_samples: int
    nfe: float | None
    sampler: str | None
    steps: int | None
    checkpoint_step: int
    device: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalReport:
    """The report `evaluate_model` writes: run, checkpoint, device, entries, grid path, the figures drawn
    beside it (name → path) and notes (e.g. how to get a figure that could not be drawn)."""

    run: str
    checkpoint_step: int
    device: str
    softness: float | None
    entries: list[MetricEntry]
    grid: str | None
    plots: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (NaN becomes None)."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value
        return clean(dataclasses.asdict(self))


def _device(option: str, cfg: RunConfig) -> torch.device:
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    if option == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is available")
    return torch.device(option)


def _device_name(device: torch.device) -> str:
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


class _Context:
    """What the metric functions share: the run, its samples (drawn once) and common fields."""

    def __init__(self, trained: TrainedModel, options: EvalOptions, device: torch.device) -> None:
        self.trained, self.options, self.device = trained.to(device), options, device
        self.cfg, self.model, self.facts, self.step = trained.config, trained.model, trained.facts, trained.card.step
        self.sampler = options.sampler or self.cfg.sample.sampler
        steps = options.steps if options.steps is not None else self.cfg.sample.steps
        self.steps = steps_of_run(self.model, self.sampler, steps)
        self.knobs = self.cfg.sample.knobs_for(self.sampler, options.sampler_options)
        self.compile = self.cfg.sample.compile if options.compile is None else options.compile
        self.cond = {} if options.softness is None else {"softness": options.softness}
        self.samples: Tensor | None = None
        self.nfe: int | None = None
        self.spectrum: dict[str, Any] | None = None  # what the spectrum figure shows, set by `function`
        self._inception: tuple[FeatureStats, FeatureStats] | None = None
        self._classifier: tuple[Tensor, Tensor, FeatureStats, ClassifierFeatures] | None = None

    def entry(self, metric: str, value: float, stderr: float | None, num: int, **details: Any) -> MetricEntry:
        """A sample-based entry (NFE, sampler and steps of the samples)."""
        details = {"sampler_options": dict(self.knobs), **details} if self.knobs else details
        return MetricEntry(metric, value, stderr, num, self.nfe, self.sampler, self.steps, self.step,
                           _device_name(self.device), details)

    def draw(self) -> Tensor:
        """`num` samples of the model, drawn once."""
        if self.samples is None:
            batch = self.options.batch_size or self.cfg.sample.batch_size
            self.samples, self.nfe = generate(self.model, self.facts.shape, self.options.num, self.sampler,
                                              self.steps, self.options.seed, batch, self.device, cond=self.cond,
                                              options=self.knobs, compile=self.compile)
        return self.samples

    def pictures(self) -> Tensor:
        """The samples quantised to 8-bit pictures (the protocol of every feature network)."""
        levels = self.facts.levels
        if levels is None:
            raise ConfigError(f"{self.cfg.data.name} holds continuous fields: FID, KID and domain metrics need "
                              "images; use --metrics function,bpd")
        return to_uint8(self.draw(), levels)

    def reference_data(self) -> DataConfig:
        return dataclasses.replace(self.cfg.data, split="train")

    def inception(self) -> tuple[FeatureStats, FeatureStats]:
        """(sample statistics, reference statistics) on Inception features."""
        if self._inception is None:
            extractor = InceptionFeatures(self.options.inception_weights, self.device)
            reference = reference_stats(extractor, self.reference_data(), self.options.reference_num,
                                        self.options.data_dir)
            self._inception = (FeatureStats.of(extractor(self.pictures()), keep=None), reference)
        return self._inception

    def classifier(self) -> tuple[Tensor, Tensor, FeatureStats, ClassifierFeatures]:
        """(sample features, sample class probabilities, reference statistics, extractor)."""
        if self._classifier is None:
            name = self.cfg.data.name
            if self.options.classifier_weights is None and name not in CLASSIFIER_DATASETS:
                raise ConfigError(f"domain metrics need a classifier for {name!r}: packaged ones exist for "
                                  f"{', '.join(CLASSIFIER_DATASETS)}; pass --classifier-weights for others")
            dataset = name if self.options.classifier_weights is None else None
            try:
                extractor = ClassifierFeatures(dataset, self.options.classifier_weights, self.device)
                features, probabilities = extractor.outputs(self.pictures())
            except ValueError as err:
                raise ConfigError(str(err)) from None
            reference = reference_stats(extractor, self.reference_data(), self.options.reference_num,
                                        self.options.data_dir)
            self._classifier = (features, probabilities, reference, extractor)
        return self._classifier


def _fid(ctx: _Context) -> list[MetricEntry]:
    ours, reference = ctx.inception()
    return [ctx.entry("fid", fid_from_stats(ours, reference), None, ours.num, num_reference=reference.num,
                      features="inception-v3 pool_3 (2048)")]


def _kid(ctx: _Context) -> list[MetricEntry]:
    ours, reference = ctx.inception()
    kid = kernel_distance(ours.features, reference.features, generator=torch.Generator().manual_seed(ctx.options.seed))
    return [ctx.entry("kid", kid.value, None, ours.num, std_over_subsets=kid.std, subsets=kid.subsets,
                      subset_size=kid.subset_size, num_reference=len(reference.features))]


def _domain_fid(ctx: _Context) -> list[MetricEntry]:
    features, _, reference, extractor = ctx.classifier()
    value = fid_from_stats(FeatureStats.of(features, keep=0), reference)
    stderr = fid_bootstrap_se(features, reference, FID_BOOTSTRAP, torch.Generator().manual_seed(ctx.options.seed))
    return [ctx.entry("domain_fid", value, stderr, len(features), num_reference=reference.num,
                      features=f"{extractor.key} (128)", classifier_test_accuracy=extractor.info.test_accuracy,
                      stderr_method=f"bootstrap over the samples ({FID_BOOTSTRAP} resamples, reference fixed)")]


def _precision_recall(ctx: _Context) -> list[MetricEntry]:
    features, _, reference, _ = ctx.classifier()
    real = reference.features[: len(features)]
    pr = precision_recall(real, features)
    common = {"k": pr.k, "num_reference": pr.num_real}
    return [ctx.entry("precision", pr.precision, pr.precision_se, pr.num_fake, **common),
            ctx.entry("recall", pr.recall, pr.recall_se, pr.num_fake, **common)]


def _class_balance(ctx: _Context) -> list[MetricEntry]:
    """TV distance between the classes predicted for the samples and for the reference images (the same
    classifier and resize, so its own errors cancel); the TV to the true label frequencies is a detail."""
    _, probabilities, reference, extractor = ctx.classifier()
    classes = probabilities.shape[1]
    with torch.no_grad():
        logits = extractor.model.head(reference.features.to(extractor.device))
    predicted = label_frequencies(logits.argmax(1).cpu(), classes)
    balance = class_balance(probabilities, predicted)
    labels = load_dataset(ctx.reference_data(), ctx.options.data_dir).labels
    to_labels = None if labels is None else class_balance(probabilities, label_frequencies(labels, classes))
    return [ctx.entry("class_balance_tv", balance.total_variation, None, balance.num,
                      frequencies=balance.frequencies, reference_predicted=balance.reference,
                      num_reference=len(reference.features), entropy_ratio=balance.entropy_ratio,
                      confidence=balance.confidence,
                      tv_to_labels=None if to_labels is None else to_labels.total_variation)]


def _images_file(path: str, shape: tuple[int, ...], num: int) -> Tensor:
    """The first `num` images of an .npz file's array `images` (N, C, H, W) in model space, checked against the
    model's per-image shape."""
    try:
        with np.load(path) as archive:
            if "images" not in archive:
                raise ConfigError(f"--images {path}: no array named 'images' (found {', '.join(archive.files)})")
            images = torch.from_numpy(np.asarray(archive["images"][:num], dtype=np.float32))
    except (OSError, ValueError) as err:
        raise ConfigError(f"--images {path}: cannot be read as .npz ({err})") from None
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(shape) or len(images) == 0:
        raise ConfigError(f"--images {path}: need images (N ≥ 1, {', '.join(map(str, shape))}); got "
                          f"{tuple(images.shape)}")
    return images


def _test_images(ctx: _Context, num: int) -> tuple[Tensor, str]:
    """The first `num` images of --images, else of the test split (the training split, named in the report, when
    there is no test split)."""
    if ctx.options.images is not None:
        return _images_file(ctx.options.images, ctx.facts.shape, num), ctx.options.images
    try:
        split = "test"
        data = load_dataset(dataclasses.replace(ctx.cfg.data, split=split, max_items=num), ctx.options.data_dir)
    except DataError:
        split = "train"
        data = load_dataset(dataclasses.replace(ctx.cfg.data, split=split, max_items=num), ctx.options.data_dir)
    return data.images, split


def _function(ctx: _Context) -> list[MetricEntry]:
    samples = ctx.draw()
    data, split = _test_images(ctx, len(samples))
    result = function_metrics(samples, data, generator=torch.Generator().manual_seed(ctx.options.seed))
    bands = {"band_edges": result.band_edges, "spectrum_error": result.spectrum_error, "split": split}
    shells, ours = radial_power_spectrum(samples)
    _, theirs = radial_power_spectrum(data)
    ctx.spectrum = {"shells": shells.tolist(), "sample_power": ours.tolist(), "data_power": theirs.tolist(),
                    "band_edges": result.band_edges, "band_error": result.spectrum_error,
                    "title": f"{ctx.cfg.data.name} {result.resolution[0]}×{result.resolution[1]}: {len(samples)} "
                             f"samples ({ctx.sampler}, {ctx.steps} steps, step {ctx.step}) against {len(data)} "
                             f"{split} items"}
    return [ctx.entry("spectrum_error_max", max(result.spectrum_error), None, len(samples), **bands),
            ctx.entry("sliced_wasserstein", result.sliced_wasserstein, None, len(samples), split=split),
            ctx.entry("riesz_mmd", result.riesz_mmd, None, len(samples), split=split)]


def _bpd_entry(ctx: _Context, name: str, result: BpdResult, split: str) -> MetricEntry:
    return MetricEntry(name, result.value, result.stderr, result.num, result.nfe, result.method, None, ctx.step,
                       _device_name(ctx.device), {"split": split, "dequantized": result.dequantized,
                                                  "levels": ctx.facts.levels, "unit": "bits/dim"})


def _bpd(ctx: _Context) -> list[MetricEntry]:
    images, split = _test_images(ctx, ctx.options.bpd_num)
    model = ctx.model.eval()
    result = elbo_bpd(model.process, model.net, images, ctx.facts.levels,
                      generator=torch.Generator(ctx.device).manual_seed(ctx.options.seed),
                      repeats=ctx.options.bpd_repeats, cond=ctx.cond)
    return [_bpd_entry(ctx, "bpd", result, split)]


def _ode_bpd(ctx: _Context) -> list[MetricEntry]:
    model = ctx.model.eval()
    if not model.process.capabilities.ode_likelihood:
        raise ConfigError(f"ode_bpd needs an exact probability-flow ODE likelihood, which process.kind="
                          f"{ctx.cfg.process.kind} does not offer: use bpd (the ELBO)")
    images, split = _test_images(ctx, ctx.options.bpd_num)
    result = ode_bpd(model.process, model.net, images, ctx.facts.levels,
                     divergence=ctx.options.divergence,
                     generator=torch.Generator(ctx.device).manual_seed(ctx.options.seed), cond=ctx.cond)
    return [_bpd_entry(ctx, "ode_bpd", result, split)]


_COMPUTE = {"fid": _fid, "kid": _kid, "domain_fid": _domain_fid, "precision_recall": _precision_recall,
            "class_balance": _class_balance, "function": _function, "bpd": _bpd, "ode_bpd": _ode_bpd}


def _figures(ctx: _Context, out: Path) -> tuple[dict[str, str], list[str]]:
    """The figures beside the report `out` (name → path): the power spectra when `function` was computed, if
    matplotlib is installed; otherwise a note saying how to get them."""
    if ctx.spectrum is None:
        return {}, []
    try:
        path = save_figure(spectrum_figure(**ctx.spectrum), out.with_name(f"{out.stem}-spectrum.png"))
    except PlotMissing as err:
        return {}, [f"no power-spectrum plot: {err}"]
    return {"spectrum": str(path)}, []


def evaluate_model(trained: TrainedModel, metrics: list[str], out: str | Path, options: EvalOptions,
                   name: str = "") -> EvalReport:
    """Compute `metrics` of a trained model and write the report (JSON) and a sample grid (PNG) beside it; the
    data set is read only by the metrics that compare with data."""
    out = Path(out)
    if out.suffix != ".json":
        raise ConfigError(f"--out must end in .json; got {out}")
    if options.num < 2 or options.bpd_num < 1:
        raise ConfigError(f"need --num ≥ 2 and --bpd-num ≥ 1; got {options.num}, {options.bpd_num}")
    device = _device(options.device, trained.config)
    ctx = _Context(trained, options, device)
    entries = [entry for metric in metrics for entry in _COMPUTE[metric](ctx)]
    grid = None
    if ctx.samples is not None and ctx.facts.shape[0] in (1, 3):
        grid = save_grid(ctx.samples[:GRID_IMAGES], out.with_suffix(".png"), ctx.facts.levels)
    plots, notes = _figures(ctx, out)
    report = EvalReport(name, ctx.step, _device_name(device), options.softness, entries,
                        None if grid is None else str(grid), plots, notes)
    text = json.dumps(report.as_dict(), indent=2, ensure_ascii=False)
    atomic_write(out, lambda handle: handle.write(text.encode()))
    return report


def evaluate_path(path: str | Path, metrics: list[str], out: str | Path, options: EvalOptions) -> EvalReport:
    """Load a model folder or a run's newest checkpoint and evaluate it (`evaluate_model`)."""
    trained = load(path, options.ema, device="cpu", data_dir=options.data_dir)
    report = evaluate_model(trained, metrics, out, options, str(path))
    if is_model_folder(path):
        record_metrics(path, {e.metric: {"value": e.value, "stderr": e.stderr, "num_samples": e.num_samples,
                                         "sampler": e.sampler, "steps": e.steps, "report": str(out)}
                              for e in report.entries})
    return report
