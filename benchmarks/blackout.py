"""Blackout diffusion: sampling throughput, and sample quality after a fixed training budget.

Throughput: images/s of each Blackout sampler over 1000 steps at 1×28×28, with a constant
network (the sampler's own cost: the binomial / Poisson / rounding draws on the device) and,
from the quality runs, with the trained U-Net.

Quality: train `blackout-binarized-mnist` and `blackout-mnist` for a fixed budget, sample
with the binomial bridge and τ-leaping at 100 and 1000 steps, and score against the test
split. There is no FID yet (the evaluation suite does not exist), so the scores are:
  - nll_bits_per_dim: the model's NLL bound on test images (`nll_bound`, the τ-leaping
    model's likelihood; lower is better), the one score that needs no samples;
  - hist_tv (classifier-free proxy): total variation between the histogram of pixel counts
    in the samples and in the test set;
  - mean_image_rmse (classifier-free proxy): RMS difference, in model space, between the
    per-pixel mean of the samples and of the test set.
Both proxies see only first-order statistics: they catch wrong intensities and missing
strokes, not wrong digits.

    python benchmarks/blackout.py                     # CUDA when present (preset nets), else the short CPU run
    python benchmarks/blackout.py --device cpu --train-steps 300 --samples 8

CPU defaults shrink the U-Net (16 channels, 2 levels, no attention) and the budget (300 steps
of 32 images, lr 2e-3 after 20 warm-up steps) so the whole run takes minutes; CUDA defaults
use the presets' U-Nets and optimiser settings for 2000 steps of 128 images. Prints a table and writes
benchmarks/results/blackout-<device>.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from diffspace.build import generate, load_run
from diffspace.config import load_preset
from diffspace.data import DataConfig, load_dataset
from diffspace.samplers import SAMPLERS
from diffspace.training import train

from records import device_name, write_record
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
    from diffspace.process import build_process

    process = build_process(load_preset("blackout-mnist").process, facts=(1, 28, 28)).to(device)

    def constant(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    rows = []
    for name in SAMPLER_NAMES:
        generator = torch.Generator(device).manual_seed(0)
        SAMPLERS[name](process, constant, (batch, 1, 28, 28), 10, generator)
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


def test_nll(model: torch.nn.Module, images: torch.Tensor, batch: int, device: str) -> float:
    """Mean NLL bound in bits/dim over `images` (one stratified step draw per image)."""
    generator = torch.Generator(device).manual_seed(0)
    total = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch].to(device)
            total += float(model.process.nll_bound(model.net, chunk, generator).sum())
    return total / len(images)


def quality(preset: str, args: argparse.Namespace, data_dir: str | None) -> list[dict[str, object]]:
    """Train `preset` for the budget, then score bridge and τ-leaping samples at 100 and 1000 steps."""
    overrides = [f"train.steps={args.train_steps}", f"train.batch_size={args.train_batch}",
                 f"train.device={args.device}", "sample.num=0", f"train.checkpoint_every={args.train_steps}",
                 f"train.log_every={max(1, args.train_steps // 5)}", *(CPU_NET if args.small_net else []),
                 *([f"train.lr={args.lr}"] if args.lr else []),
                 *([f"train.warmup_steps={args.warmup}"] if args.warmup is not None else [])]
    cfg = load_preset(preset).with_overrides(overrides)
    test = load_dataset(DataConfig(name=cfg.data.name, split="test", max_items=args.test_items), data_dir)
    levels = test.info.levels
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        train(cfg, run_dir, data_dir=data_dir, quiet=True)
        train_seconds = time.perf_counter() - start
        _, built, _ = load_run(run_dir, ema=True, data_dir=data_dir)
    model = built.model.to(args.device)
    process = model.process
    reference = process.to_state(test.images)
    params = sum(p.numel() for p in model.net.parameters())
    nll = test_nll(model, test.images, args.sample_batch, args.device)
    rows = []
    for steps in (100, 1000):
        for name in COMPARED:
            sync(args.device)
            start = time.perf_counter()
            samples, nfe = generate(model, (1, 28, 28), args.samples, name, steps, 0, args.sample_batch,
                                    torch.device(args.device))
            sync(args.device)
            seconds = time.perf_counter() - start
            counts = process.to_state(samples)
            rows.append({"preset": preset, "sampler": name, "steps": steps, "samples": args.samples,
                         "train_steps": args.train_steps, "train_batch": args.train_batch,
                         "train_seconds": round(train_seconds, 1), "params_M": round(params / 1e6, 3),
                         "nll_bits_per_dim": round(nll, 4),
                         "hist_tv": round(histogram_tv(counts, reference, levels), 4),
                         "mean_image_rmse": round(mean_image_rmse(samples, test.images), 4),
                         "images_per_sec": round(args.samples / seconds, 3), "nfe": nfe})
            print(format_quality(rows[-1]), flush=True)
    return rows


def format_quality(row: dict[str, object]) -> str:
    """One line of the quality table."""
    return (f"{row['preset']:<25} {row['sampler']:<16} {row['steps']:>5} steps  test NLL ≤ {row['nll_bits_per_dim']:.4f} "
            f"bits/dim  hist TV {row['hist_tv']:.4f}  mean-image RMSE {row['mean_image_rmse']:.4f}  "
            f"{row['images_per_sec']:.3f} img/s")


def main() -> None:
    """Parse the budget, run throughput and quality, print tables, write the JSON record."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if cuda else "cpu")
    parser.add_argument("--train-steps", type=int, help="training budget in steps (CUDA 2000, CPU 300)")
    parser.add_argument("--train-batch", type=int, help="training batch (CUDA 128, CPU 32)")
    parser.add_argument("--lr", type=float, help="learning rate (CUDA: the preset's, CPU 2e-3)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (CUDA: the preset's, CPU 20)")
    parser.add_argument("--samples", type=int, help="samples per sampler and step count (CUDA 256, CPU 8)")
    parser.add_argument("--sample-batch", type=int, default=256, help="batch of one sampler call")
    parser.add_argument("--throughput-batch", type=int, help="batch of the constant-network throughput runs (CUDA 256, CPU 64)")
    parser.add_argument("--test-items", type=int, default=2000, help="test images scored (first N)")
    parser.add_argument("--data-dir", default=os.environ.get("DIFFSPACE_DATA"))
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    args.train_steps = args.train_steps or (2000 if on_gpu else 300)
    args.lr = args.lr or (None if on_gpu else 2e-3)
    args.warmup = args.warmup if args.warmup is not None else (None if on_gpu else 20)
    args.train_batch = args.train_batch or (128 if on_gpu else 32)
    args.samples = args.samples or (256 if on_gpu else 8)
    args.throughput_batch = args.throughput_batch or (256 if on_gpu else 64)
    args.small_net = not on_gpu
    torch.manual_seed(0)

    throughput = sampler_throughput(args.device, args.throughput_batch, 1000)
    print(f"{'sampler':<20} {'network':<10} {'batch':>5} {'steps':>5} {'img/s':>10}")
    for row in throughput:
        print(f"{row['sampler']:<20} {row['network']:<10} {row['batch']:>5} {row['steps']:>5} {row['images_per_sec']:>10.2f}")
    rows = [row for preset in args.presets for row in quality(preset, args, args.data_dir)]
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    record = {"device": args.device, "device_name": device_name(args.device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average_1_5_15min": load,
              "budget": {"train_steps": args.train_steps, "train_batch": args.train_batch, "lr": args.lr,
                         "warmup_steps": args.warmup, "samples": args.samples, "test_items": args.test_items},
              "network": "presets' U-Nets" if on_gpu else "U-Net " + " ".join(CPU_NET),
              "scores": "nll_bits_per_dim = NLL bound on test images; hist_tv and mean_image_rmse are "
                        "classifier-free proxies (no FID yet)",
              "throughput": throughput, "quality": rows}
    write_record("blackout", args.device, record)


if __name__ == "__main__":
    main()
