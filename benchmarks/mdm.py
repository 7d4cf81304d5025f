"""Multivariate diffusions on MNIST: test-set bits/dim at an equal training budget, and the kernel's cost.

VP (the paper's VPSDE, D = ½), CLD and the learned K = 2 diffusion (and, with --only, MALDA) are trained from the
`mdm-mnist-*` presets with the same network, seed, batch, learning rate and number of steps (on CPU a small U-Net
on 14×14 digits, set by the flags), then evaluated on the first `--test-items` MNIST test images at the same
resolution (`elbo_bpd`, the EMA weights of `diffspace.load`): the negative ELBO in bits/dim of the discrete images
(uniform dequantization, logit transform), with and without the truncation offset, averaged over `--repeats`
draws per image, ± standard errors over the images. Every diffusion sees the same test images and the same random
draws, so differences to CLD are paired (± their own standard error). The kernel share is the time of one step's
K×K work (`kernel_seconds`: the importance draw of t, the kernel at the batch's times and at t_min and 1, for the
learned diffusion a rebuilt importance table and the backward pass; median of 50) over the mean time of a
training step (forward, backward, clipping, AdamW, EMA).

With --timing-only nothing is evaluated: each diffusion trains --steps steps through `Trainer.train_step`, each
step timed on its own after 10 warm-up steps, and the kernel share is the median kernel time over the median step
time, in wall time and in the thread's CPU time (`time.thread_time`, which the load of a shared machine distorts
far less); the record is benchmarks/results/mdm-kernel-<device>.json, so the bits/dim record stays as it is.

    DIFFSPACE_DATA=/path/to/data python benchmarks/mdm.py --threads 1          # CPU: 3000 steps, 14×14
    python benchmarks/mdm.py --threads 1 --steps 200 --timing-only             # the kernel share only
    python benchmarks/mdm.py --resolution 28 --steps 20000 --batch 128 --paper-net  # GPU run, paper U-Net

Prints a table and writes benchmarks/results/mdm-<device>.json.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import diffspace
from diffspace.config import load_preset
from diffspace.data import DataConfig, load_dataset
from diffspace.metrics.bpd import elbo_bpd
from diffspace.build import build
from diffspace.training import train
from diffspace.training.distributed import World
from diffspace.training.loop import Trainer

from records import device_name, write_record
DIFFUSIONS = ("vp", "cld", "malda", "learned2")
DEFAULT = ("vp", "cld", "learned2")
SMALL_NET = ["model.channels=16", "model.channel_mult=1,2", "model.num_res_blocks=1", "model.attn_resolutions=7"]


def kernel_seconds(process: torch.nn.Module, batch: int, device: torch.device, repeats: int = 50,
                   cpu: bool = False) -> float | tuple[float, float]:
    """Median seconds of one training step's K×K work, as `elbo_terms` does it: the importance draw of t, the kernel at
    the B times and at (t_min, 1) (`kernel_with_ends`), the weight M and, for a learned diffusion, a new value of
    (Q, D) each time (as after an optimizer step: the importance table is rebuilt) and the backward pass through all
    of it. The median resists the load of a shared machine. With `cpu`, (wall, thread CPU time) medians."""
    generator = torch.Generator(device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    params = [p for p in process.parameters() if p.requires_grad]

    def work() -> None:
        if params:
            with torch.no_grad():
                for p in params:
                    p.add_(0.0)  # an optimizer step: a new version of the parameters
        t, _ = process.importance_times(batch, generator, device)
        kernels = process.kernel_with_ends(t)
        if params:
            sum(k.chol.sum() + k.linv.sum() + k.phi.sum() + k.weight().sum() for k in kernels).backward()

    work()
    times, cpu_times = [], []
    for _ in range(repeats):
        sync()
        start, cpu_start = time.perf_counter(), time.thread_time()
        work()
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.thread_time() - cpu_start)
    for p in params:
        p.grad = None
    if cpu:
        return statistics.median(times), statistics.median(cpu_times)
    return sorted(times)[len(times) // 2]


def config(name: str, args: argparse.Namespace, device: str):
    """The `mdm-mnist-<name>` preset with the benchmark's budget and network."""
    overrides = [f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"train.lr={args.lr}",
                 f"train.device={device}", "train.bf16=off", "sample.num=0", f"train.seed={args.seed}",
                 f"train.checkpoint_every={args.steps}", f"train.log_every={max(1, args.steps // 10)}",
                 f"data.resolution={args.resolution}", f"train.warmup_steps={min(100, args.steps // 10)}"]
    return load_preset(f"mdm-mnist-{name}").with_overrides(overrides + ([] if args.paper_net else SMALL_NET))


def timing(name: str, args: argparse.Namespace, device: str, warmup: int = 10) -> dict[str, object]:
    """Train one diffusion for args.steps steps, each `Trainer.train_step` timed on its own (wall and thread CPU
    time) after `warmup` untimed ones; then the kernel's time (`kernel_seconds`) on the trained process. The share
    is median kernel over median step, on each clock."""
    cfg = config(name, args, device)
    built = build(cfg)
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), World(), device, None, True, built)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for i in range(args.steps):
            sync()
            start, cpu_start = time.perf_counter(), time.thread_time()
            trainer.train_step()
            sync()
            if i >= warmup:
                walls.append(time.perf_counter() - start)
                cpus.append(time.thread_time() - cpu_start)
        process = trainer.model.process
        kernel, kernel_cpu = kernel_seconds(process, args.batch, torch.device(device), repeats=100, cpu=True)
    step, step_cpu = statistics.median(walls), statistics.median(cpus)
    return {"diffusion": name, "num_vars": process.num_vars, "steps": args.steps, "timed_steps": len(walls),
            "batch": args.batch, "step_ms": 1000 * step, "step_cpu_ms": 1000 * step_cpu,
            "step_ms_mean": 1000 * statistics.fmean(walls), "kernel_ms": 1000 * kernel,
            "kernel_cpu_ms": 1000 * kernel_cpu, "kernel_share": kernel / step, "kernel_share_cpu": kernel_cpu / step_cpu}


def run(name: str, args: argparse.Namespace, device: str, test_images: torch.Tensor) -> dict[str, object]:
    """Train one diffusion, evaluate it, time its kernel; one result row (per-image bits/dim kept for pairing)."""
    cfg = config(name, args, device)
    with tempfile.TemporaryDirectory() as run_dir:
        began = time.perf_counter()
        result = train(cfg, run_dir, quiet=True)
        train_seconds = time.perf_counter() - began
        trained = diffspace.load(run_dir, device=device)
    model = trained.model.eval()
    process, levels = model.process, trained.facts.levels
    reports = {}
    for offset in (True, False):  # the same seed: the same dequantization, times and noise for both bounds
        bound = None if offset else (lambda net, x, gen, **cond: process.elbo_terms(net, x, gen, cond).bpd(offset=False))
        reports[offset] = elbo_bpd(process, model.net, test_images, levels, repeats=args.repeats, bound=bound,
                                   generator=torch.Generator(device).manual_seed(1), batch_size=args.eval_batch)
    step_seconds = args.batch / result.images_per_sec
    kernel = kernel_seconds(process, args.batch, torch.device(device))
    q, d = (m.detach().cpu().tolist() for m in process.matrices())
    return {"diffusion": name, "num_vars": process.num_vars, "steps": args.steps, "batch": args.batch,
            "params_M": round(sum(p.numel() for p in model.net.parameters()) / 1e6, 3),
            "bpd": reports[True].value, "bpd_se": reports[True].stderr, "bpd_no_offset": reports[False].value,
            "bpd_no_offset_se": reports[False].stderr, "test_items": reports[True].num, "repeats": args.repeats,
            "train_seconds": round(train_seconds, 1),
            "step_ms": 1000 * step_seconds, "kernel_ms": 1000 * kernel, "kernel_share": kernel / step_seconds,
            "Q": q, "D": d, "per_image": reports[True].per_image}


def paired(rows: list[dict], reference: str = "cld") -> None:
    """Add to each row its paired difference of bits/dim to `reference` (same images, same draws) ± standard error."""
    base = next((r for r in rows if r["diffusion"] == reference), None)
    for row in rows:
        if base is None:
            row["minus_cld"] = row["minus_cld_se"] = None
            continue
        diff = row["per_image"] - base["per_image"]
        row["minus_cld"] = float(diff.mean())
        row["minus_cld_se"] = float(diff.std() / math.sqrt(len(diff))) if row is not base else 0.0


def main() -> None:
    """Run every diffusion, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps per diffusion")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (the presets' 2e-4 suits long runs)")
    parser.add_argument("--resolution", type=int, default=14, help="train and evaluate at N×N (28 = native)")
    parser.add_argument("--test-items", type=int, default=1000, help="MNIST test images evaluated")
    parser.add_argument("--repeats", type=int, default=4, help="ELBO draws averaged per test image")
    parser.add_argument("--eval-batch", type=int, default=250, help="evaluation batch size")
    parser.add_argument("--seed", type=int, default=0, help="training seed (same for every diffusion)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--paper-net", action="store_true", help="the presets' 128-channel U-Net, not the small one")
    parser.add_argument("--only", nargs="*", default=list(DEFAULT), choices=DIFFUSIONS, help="diffusions to run")
    parser.add_argument("--timing-only", action="store_true",
                        help="time the steps and the kernel only (no evaluation); record mdm-kernel-<device>.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.timing_only:
        load_start = [round(v, 2) for v in os.getloadavg()]
        print(f"{'diffusion':<10} {'K':>2} {'step ms':>9} {'CPU ms':>8} {'kernel ms':>9} {'CPU ms':>8} {'share':>7} "
              f"{'CPU share':>9}")
        rows = []
        for name in args.only:
            row = timing(name, args, device)
            rows.append(row)
            print(f"{name:<10} {row['num_vars']:>2} {row['step_ms']:>9.1f} {row['step_cpu_ms']:>8.1f} "
                  f"{row['kernel_ms']:>9.3f} {row['kernel_cpu_ms']:>8.3f} {100 * row['kernel_share']:>6.2f}% "
                  f"{100 * row['kernel_share_cpu']:>8.2f}%", flush=True)
        record = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                  "load_average_1_5_15min_start": load_start,
                  "load_average_1_5_15min_end": [round(v, 2) for v in os.getloadavg()],
                  "net": "paper" if args.paper_net else " ".join(SMALL_NET), "resolution": args.resolution,
                  "steps": args.steps, "batch": args.batch,
                  "timing": "median of each training step (Trainer.train_step) after 10 warm-up steps; kernel: "
                            "median of 100 kernel_seconds repeats on the trained process; wall and thread CPU time",
                  "results": rows}
        write_record("mdm-kernel", device, record)
        return
    test = load_dataset(DataConfig(name="mnist", split="test", max_items=args.test_items,
                                   resolution=args.resolution)).images
    rows = []
    print(f"{'diffusion':<10} {'K':>2} {'bpd':>16} {'bpd (no offset)':>16} {'train s':>8} {'step ms':>9} "
          f"{'kernel ms':>9} {'share':>7}")
    for name in args.only:
        row = run(name, args, device, test)
        rows.append(row)
        print(f"{name:<10} {row['num_vars']:>2} {row['bpd']:>8.3f} ± {row['bpd_se']:.3f} "
              f"{row['bpd_no_offset']:>8.3f} ± {row['bpd_no_offset_se']:.3f} {row['train_seconds']:>8.0f} "
              f"{row['step_ms']:>9.1f} {row['kernel_ms']:>9.2f} {100 * row['kernel_share']:>6.2f}%", flush=True)
    paired(rows)
    for row in rows:
        del row["per_image"]
        if row["minus_cld"] is not None:
            print(f"{row['diffusion']:<10} − cld: {row['minus_cld']:+.3f} ± {row['minus_cld_se']:.3f} bits/dim (paired)")
    record = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "net": "paper" if args.paper_net else " ".join(SMALL_NET),
              "resolution": args.resolution, "lr": args.lr, "seed": args.seed, "steps": args.steps,
              "batch": args.batch, "repeats": args.repeats, "test_items": args.test_items, "results": rows}
    write_record("mdm", device, record)


if __name__ == "__main__":
    main()
