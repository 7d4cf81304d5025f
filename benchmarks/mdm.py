"""Multivariate diffusions on MNIST: test-set bits/dim at an equal training budget, and the kernel's cost.

VP, CLD, MALDA and the learned K = 2 diffusion are trained from the `mdm-mnist-*` presets with the
same network, seed, batch and number of steps (on CPU a small U-Net and a short run, set by the
flags), then evaluated on the first `--test-items` MNIST test images: the negative ELBO in bits/dim
of the discrete images (uniform dequantization, logit transform) with and without the truncation
offset, ± standard errors, from the EMA weights. The kernel share is the time of one step's K×K
work (the kernel at the batch's times, the importance table, the kernel at t_min and 1, and for the
learned diffusion the backward pass through them; median of 50) divided by the mean time of a
training step (forward, backward, clipping, AdamW, EMA).

    DIFFSPACE_DATA=/path/to/data python benchmarks/mdm.py                 # CPU-sized defaults
    python benchmarks/mdm.py --steps 20000 --batch 128 --paper-net        # GPU run, paper U-Net

Prints a table and writes benchmarks/results/mdm-<device>.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from diffspace.build import load_run
from diffspace.config import load_preset
from diffspace.data import DataConfig, load_dataset
from diffspace.families.multivariate.process import dataset_bpd
from diffspace.training import train

from records import device_name, write_record
DIFFUSIONS = ("vp", "cld", "malda", "learned2")
SMALL_NET = ["model.channels=16", "model.channel_mult=1,2", "model.num_res_blocks=1", "model.attn_resolutions=7"]


def kernel_seconds(process: torch.nn.Module, batch: int, device: torch.device, repeats: int = 50) -> float:
    """Median seconds of one training step's K×K work: importance table, kernel at B times, kernel at the
    ends, and (for a learned diffusion) the backward pass through them. The median resists the load of
    a shared machine."""
    generator = torch.Generator(device).manual_seed(0)
    ends = torch.tensor([process.t_min, 1.0], dtype=torch.float64, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    learned = any(p.requires_grad for p in process.parameters())

    def work() -> None:
        t, _ = process.importance_times(batch, generator, device)
        kernels = (process.kernel(t), process.kernel(ends))
        if learned:
            sum(k.chol.sum() + k.linv.sum() + k.phi.sum() for k in kernels).backward()

    work()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        work()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run(name: str, args: argparse.Namespace, device: str, test_images: torch.Tensor) -> dict[str, object]:
    """Train one diffusion, evaluate it, time its kernel; one result row."""
    overrides = [f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"train.lr={args.lr}",
                 f"train.device={device}", "train.bf16=off", "sample.num=0", f"train.seed={args.seed}",
                 f"train.checkpoint_every={args.steps}", f"train.log_every={max(1, args.steps // 10)}"]
    cfg = load_preset(f"mdm-mnist-{name}").with_overrides(overrides + ([] if args.paper_net else SMALL_NET))
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(cfg, run_dir, quiet=True)
        _, built, _ = load_run(run_dir)
    model = built.model.to(device)
    process = model.process
    report = dataset_bpd(process, model.net, test_images, torch.Generator(device).manual_seed(1),
                         batch_size=args.eval_batch)
    step_seconds = args.batch / result.images_per_sec
    kernel = kernel_seconds(process, args.batch, torch.device(device))
    q, d = (m.detach().cpu().tolist() for m in process.matrices())
    return {"diffusion": name, "num_vars": process.num_vars, "steps": args.steps, "batch": args.batch,
            "params_M": round(sum(p.numel() for p in model.net.parameters()) / 1e6, 3),
            "bpd": report.bpd, "bpd_se": report.bpd_se, "bpd_no_offset": report.bpd_no_offset,
            "bpd_no_offset_se": report.bpd_no_offset_se, "test_items": report.num,
            "step_ms": 1000 * step_seconds, "kernel_ms": 1000 * kernel, "kernel_share": kernel / step_seconds,
            "Q": q, "D": d}


def main() -> None:
    """Run every diffusion, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per diffusion")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (the presets' 2e-4 suits long runs)")
    parser.add_argument("--test-items", type=int, default=1000, help="MNIST test images evaluated")
    parser.add_argument("--eval-batch", type=int, default=250, help="evaluation batch size")
    parser.add_argument("--seed", type=int, default=0, help="training seed (same for every diffusion)")
    parser.add_argument("--paper-net", action="store_true", help="the presets' 128-channel U-Net, not the small one")
    parser.add_argument("--only", nargs="*", default=list(DIFFUSIONS), choices=DIFFUSIONS, help="diffusions to run")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    test = load_dataset(DataConfig(name="mnist", split="test", max_items=args.test_items)).images
    rows = []
    print(f"{'diffusion':<10} {'K':>2} {'bpd':>16} {'bpd (no offset)':>16} {'step ms':>9} {'kernel ms':>9} {'share':>7}")
    for name in args.only:
        row = run(name, args, device, test)
        rows.append(row)
        print(f"{name:<10} {row['num_vars']:>2} {row['bpd']:>8.3f} ± {row['bpd_se']:.3f} "
              f"{row['bpd_no_offset']:>8.3f} ± {row['bpd_no_offset_se']:.3f} {row['step_ms']:>9.1f} "
              f"{row['kernel_ms']:>9.2f} {100 * row['kernel_share']:>6.2f}%", flush=True)
    record = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "net": "paper" if args.paper_net else " ".join(SMALL_NET),
              "lr": args.lr, "seed": args.seed, "results": rows}
    write_record("mdm", device, record)


if __name__ == "__main__":
    main()
