"""Blackout diffusion: sampling throughput, and the NLL bound and samples after a fixed training budget.

Throughput: images/s of each Blackout sampler over 1000 steps at 1×28×28, with a constant network (the sampler's
own cost: the binomial / Poisson / rounding draws on the device).

Quality: train `blackout-binarized-mnist` (and, with --presets, `blackout-mnist`) for a fixed budget through
`diffspace.training.train`, load the EMA model with `diffspace.load`, and score it against the test split:
  - nll_bits_per_dim ± se: the NLL bound on test images (`elbo_bpd`: the τ-leaping model's bound, exact for the
    counts, no dequantization), averaged over --repeats stratified draws per image, standard error over the images;
  - samples generated from the empty image (every count 0) with the binomial bridge and τ-leaping at 100 and 1000
    steps: domain FID on the packaged MNIST classifier's features against binarized test images (the same
    classifier on both sides; `domain_fid_data` is the floor, test images against training images, and
    `domain_fid_data_at_samples` the floor at the samples' own number: disjoint sets of --samples training images
    against the test images, mean ± se over the sets, since FID from few samples is biased upwards), hist_tv
    (total variation between the histograms of pixel counts) and mean_image_rmse (of the per-pixel means);
    the binomial bridge's samples at 1000 steps are saved as a PNG grid (--grid, under docs/figures/).

    python benchmarks/blackout.py --device cpu --threads 1          # the CPU record (about 20 minutes)
    python benchmarks/blackout.py --device cuda --train-steps 20000   # GPU: the presets' U-Nets and settings
    python benchmarks/blackout.py --floor-only      # add the data floor at the samples' number to the record

CPU defaults shrink the U-Net (16 channels, 2 levels, no attention) and the budget (2000 steps of 32 images, lr 2e-3
after 100 warm-up steps); CUDA defaults use the presets' U-Nets and optimiser settings for 2000 steps of 128
images. Prints a table and writes benchmarks/results/blackout-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import diffspace
from diffspace.build import generate
from diffspace.config import load_preset
from diffspace.data import DataConfig, load_dataset
from diffspace.images import save_grid, to_uint8
from diffspace.metrics.bpd import elbo_bpd
from diffspace.metrics.fid import FeatureStats, fid_from_stats
from diffspace.metrics.reference import ClassifierFeatures
from diffspace.process import samplers
from diffspace.training import read_metrics, train

from records import device_name, record_path, write_record

SAMPLERS = samplers()
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
PRESETS = ("blackout-binarized-mnist", "blackout-mnist")
SAMPLER_NAMES = ("binomial_bridge", "tau_leaping", "stochastic_rounding")
COMPARED = ("binomial_bridge", "tau_leaping")
CPU_NET = ["model.channels=16", "model.channel_mult=1,2", "model.num_res_blocks=1", "model.attn_resolutions="]


def sync(device: str) -> None:
    """Wait for queued CUDA work so that timings are real."""
    if device == "cuda":
        torch.cuda.synchronize()


def sampler_throughput(device: str, batch: int, steps: int) -> list[dict[str, object]]:
    """Images/s of each sampler with a constant network (raw output 0) on the blackout-mnist process."""
    from diffspace.process import DataFacts, build_process

    process = build_process(load_preset("blackout-mnist").process, facts=DataFacts((1, 28, 28), 256)).to(device)

    def constant(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    rows = []
    for name in SAMPLER_NAMES:
        generator = torch.Generator(device).manual_seed(0)
        SAMPLERS[name](process, constant, (batch, 1, 28, 28), 10, generator)  # warm-up
        sync(device)
        start = time.perf_counter()
        SAMPLERS[name](process, constant, (batch, 1, 28, 28), steps, generator)
        sync(device)
        seconds = time.perf_counter() - start
        rows.append({"sampler": name, "network": "constant", "batch": batch, "steps": steps,
                     "images_per_sec": round(batch / seconds, 2), "seconds": round(seconds, 3)})
    return rows


def histogram_tv(samples: torch.Tensor, reference: torch.Tensor, levels: int) -> float:
    """½ Σ_n |h_samples(n) − h_reference(n)| over the pixel counts n = 0…levels − 1."""
    def hist(counts: torch.Tensor) -> torch.Tensor:
        return torch.bincount(counts.flatten().long(), minlength=levels).double() / counts.numel()

    return 0.5 * float((hist(samples) - hist(reference)).abs().sum())


def mean_image_rmse(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """√(mean over pixels of (mean sample − mean reference image)²), in model space."""
    return float((samples.mean(0) - reference.mean(0)).pow(2).mean().sqrt())


def domain_features(images: torch.Tensor, levels: int, extractor: ClassifierFeatures) -> torch.Tensor:
    """Features of the packaged MNIST classifier of model-space images with `levels` levels (as 8-bit pictures)."""
    return torch.cat([extractor(to_uint8(chunk, levels)) for chunk in images.split(500)])


def data_floor(reference: torch.Tensor, test_stats: FeatureStats, levels: int, extractor: ClassifierFeatures,
               num: int, sets: int = 10) -> dict[str, float | int]:
    """Domain FID of up to `sets` disjoint sets of `num` reference images against the test statistics: the floor
    a perfect sampler would reach with `num` samples (mean ± se over the sets)."""
    sets = max(1, min(sets, len(reference) // num))
    fids = [fid_from_stats(FeatureStats.of(domain_features(reference[i * num:(i + 1) * num], levels, extractor)),
                           test_stats) for i in range(sets)]
    mean = sum(fids) / sets
    se = (sum((f - mean) ** 2 for f in fids) / (sets - 1) / sets) ** 0.5 if sets > 1 else float("nan")
    return {"domain_fid_data_at_samples": mean, "domain_fid_data_at_samples_se": se,
            "domain_fid_data_at_samples_sets": sets, "domain_fid_data_at_samples_num": num}


def quality(preset: str, args: argparse.Namespace, data_dir: str | None) -> tuple[dict, list[dict[str, object]]]:
    """Train `preset` for the budget, then its NLL bound and the scores of bridge and τ-leaping samples."""
    overrides = [f"train.steps={args.train_steps}", f"train.batch_size={args.train_batch}",
                 f"train.device={args.device}", "sample.num=0", f"train.checkpoint_every={args.train_steps}",
                 f"train.log_every={max(1, args.train_steps // 20)}", *(CPU_NET if args.small_net else []),
                 *([f"train.lr={args.lr}"] if args.lr else []),
                 *([f"train.warmup_steps={args.warmup}"] if args.warmup is not None else [])]
    cfg = load_preset(preset).with_overrides(overrides)
    test = load_dataset(DataConfig(name=cfg.data.name, split="test", max_items=args.test_items), data_dir)
    reference = load_dataset(DataConfig(name=cfg.data.name, split="train", max_items=args.test_items), data_dir)
    levels = test.info.levels
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        train(cfg, run_dir, data_dir=data_dir, quiet=True)
        train_seconds = time.perf_counter() - start
        trained = diffspace.load(run_dir, device=args.device)
        losses = [row["loss"] for row in read_metrics(run_dir)]
    model = trained.model.eval()
    process = model.process
    params = sum(p.numel() for p in model.net.parameters())
    nll = elbo_bpd(process, model.net, test.images, levels, repeats=args.repeats,
                   generator=torch.Generator(args.device).manual_seed(0), batch_size=args.sample_batch)
    extractor = ClassifierFeatures("mnist", device=args.device)
    test_stats = FeatureStats.of(domain_features(test.images, levels, extractor))
    floor = fid_from_stats(FeatureStats.of(domain_features(reference.images, levels, extractor)), test_stats)
    small_floor = data_floor(reference.images, test_stats, levels, extractor, args.samples)
    summary = {"preset": preset, "train_steps": args.train_steps, "train_batch": args.train_batch,
               "train_seconds": round(train_seconds, 1), "params_M": round(params / 1e6, 3),
               "nll_bits_per_dim": nll.value, "nll_se": nll.stderr, "nll_images": nll.num, "nll_repeats": args.repeats,
               "domain_fid_data": floor, **small_floor, "loss_first_last": [losses[0], sum(losses[-3:]) / len(losses[-3:])]}
    print(f"{preset}: {args.train_steps} steps of {args.train_batch} in {train_seconds:.0f} s; test NLL bound "
          f"{nll.value:.4f} ± {nll.stderr:.4f} bits/dim ({nll.num} images × {args.repeats} draws); domain FID of "
          f"training against test images {floor:.3f} ({args.samples} of them: "
          f"{small_floor['domain_fid_data_at_samples']:.3f} ± {small_floor['domain_fid_data_at_samples_se']:.3f})",
          flush=True)
    counts_reference = process.to_state(test.images)
    rows = []
    for steps in (100, 1000):
        for name in COMPARED:
            sync(args.device)
            start = time.perf_counter()
            samples, nfe = generate(model, tuple(test.images.shape[1:]), args.samples, name,
                                    steps, 0, args.sample_batch, torch.device(args.device))
            sync(args.device)
            seconds = time.perf_counter() - start
            counts = process.to_state(samples)
            fid = fid_from_stats(FeatureStats.of(domain_features(samples, levels, extractor)), test_stats)
            rows.append({"preset": preset, "sampler": name, "steps": steps, "samples": args.samples,
                         "domain_fid": fid, "hist_tv": round(histogram_tv(counts, counts_reference, levels), 4),
                         "mean_image_rmse": round(mean_image_rmse(samples, test.images), 4),
                         "images_per_sec": round(args.samples / seconds, 3), "nfe": nfe})
            print(format_quality(rows[-1]), flush=True)
            if name == "binomial_bridge" and steps == 1000 and args.grid:
                path = Path(args.grid.format(preset=preset))
                path.parent.mkdir(parents=True, exist_ok=True)
                save_grid(samples[:64], path, levels)
                summary["grid"] = str(path.relative_to(FIGURES.parents[1]) if path.is_relative_to(FIGURES.parents[1])
                                      else path)
                print(f"wrote {path}")
    return summary, rows


def format_quality(row: dict[str, object]) -> str:
    """One line of the quality table."""
    return (f"{row['preset']:<25} {row['sampler']:<16} {row['steps']:>5} steps  domain FID {row['domain_fid']:.3f}  "
            f"hist TV {row['hist_tv']:.4f}  mean-image RMSE {row['mean_image_rmse']:.4f}  "
            f"{row['images_per_sec']:.3f} img/s")


def floor_only(args: argparse.Namespace) -> None:
    """Add the data floor at the recorded number of samples to each run of the existing record (no training)."""
    path = record_path("blackout", args.device)
    record = json.loads(path.read_text())
    extractor = ClassifierFeatures("mnist", device=args.device)
    for run in record["runs"]:
        name = load_preset(run["preset"]).data.name
        items = record["budget"]["test_items"]
        test = load_dataset(DataConfig(name=name, split="test", max_items=items), args.data_dir)
        reference = load_dataset(DataConfig(name=name, split="train", max_items=items), args.data_dir)
        levels = test.info.levels
        test_stats = FeatureStats.of(domain_features(test.images, levels, extractor))
        run.update(data_floor(reference.images, test_stats, levels, extractor, record["budget"]["samples"]))
        print(f"{run['preset']}: domain FID of {run['domain_fid_data_at_samples_num']} training images against the "
              f"test images {run['domain_fid_data_at_samples']:.3f} ± {run['domain_fid_data_at_samples_se']:.3f} "
              f"({run['domain_fid_data_at_samples_sets']} disjoint sets)")
    record["scores"] = SCORES
    write_record("blackout", args.device, record)


SCORES = ("nll_bits_per_dim = NLL bound on test images (± se over images); domain_fid on the packaged MNIST "
          "classifier's features against the test images (domain_fid_data: training images against test images; "
          "domain_fid_data_at_samples: disjoint sets of as many training images as samples against test images, "
          "mean ± se over the sets); hist_tv and mean_image_rmse are first-order proxies")


def main() -> None:
    """Parse the budget, run throughput and quality, print tables, write the JSON record."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if cuda else "cpu")
    parser.add_argument("--train-steps", type=int, help="training budget in steps (CUDA 2000, CPU 2000)")
    parser.add_argument("--train-batch", type=int, help="training batch (CUDA 128, CPU 32)")
    parser.add_argument("--lr", type=float, help="learning rate (CUDA: the preset's, CPU 2e-3)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (CUDA: the preset's, CPU 100)")
    parser.add_argument("--samples", type=int, help="samples per sampler and step count (CUDA 1000, CPU 64)")
    parser.add_argument("--sample-batch", type=int, default=256, help="batch of one sampler call")
    parser.add_argument("--throughput-batch", type=int, help="batch of the constant-network throughput runs (CUDA 256, CPU 64)")
    parser.add_argument("--test-items", type=int, default=1000, help="test images scored (first N)")
    parser.add_argument("--repeats", type=int, default=4, help="NLL-bound draws averaged per test image")
    parser.add_argument("--grid", default=str(FIGURES / "{preset}-samples.png"),
                        help="PNG grid of 64 bridge samples at 1000 steps ({preset} is replaced; '' for none)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", default=os.environ.get("DIFFSPACE_DATA"))
    parser.add_argument("--presets", nargs="*", default=["blackout-binarized-mnist"], choices=PRESETS)
    parser.add_argument("--floor-only", action="store_true",
                        help="add the data floor at the recorded number of samples to the existing record and stop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.device == "cuda"
    args.train_steps = args.train_steps or 2000
    args.lr = args.lr or (None if on_gpu else 2e-3)
    args.warmup = args.warmup if args.warmup is not None else (None if on_gpu else 100)
    args.train_batch = args.train_batch or (128 if on_gpu else 32)
    args.samples = args.samples or (1000 if on_gpu else 64)
    args.throughput_batch = args.throughput_batch or (256 if on_gpu else 64)
    args.small_net = not on_gpu
    torch.manual_seed(0)
    if args.floor_only:
        floor_only(args)
        return
    load_start = [round(v, 2) for v in os.getloadavg()]

    throughput = sampler_throughput(args.device, args.throughput_batch, 1000)
    print(f"{'sampler':<20} {'network':<10} {'batch':>5} {'steps':>5} {'img/s':>10}")
    for row in throughput:
        print(f"{row['sampler']:<20} {row['network']:<10} {row['batch']:>5} {row['steps']:>5} {row['images_per_sec']:>10.2f}")
    runs = [quality(preset, args, args.data_dir) for preset in args.presets]
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    record = {"device": args.device, "device_name": device_name(args.device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_average_1_5_15min_start": load_start, "load_average_1_5_15min": load,
              "budget": {"train_steps": args.train_steps, "train_batch": args.train_batch, "lr": args.lr,
                         "warmup_steps": args.warmup, "samples": args.samples, "test_items": args.test_items,
                         "repeats": args.repeats},
              "network": "presets' U-Nets" if on_gpu else "U-Net " + " ".join(CPU_NET),
              "scores": SCORES,
              "throughput": throughput, "runs": [summary for summary, _ in runs],
              "quality": [row for _, rows in runs for row in rows]}
    write_record("blackout", args.device, record)


if __name__ == "__main__":
    main()
