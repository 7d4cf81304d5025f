"""GUD hierarchy-strength benchmark: one softness-conditioned model per prior, evaluated across a = 1/softness.

Trains, for a whitened prior (data-fitted variances, labels −log λ, so a = 1 is standard diffusion)
and an unwhitened one (white prior, the same data-variance labels, so a = 0 is standard diffusion),
one U-Net conditioned on the softness over softness ∈ [0.5, 4] (a ∈ [0.25, 2]) in the PCA basis,
then evaluates each at a = 0.4, 0.7, 1.0, 1.3, 1.6: domain FID, precision/recall and class balance
(on the packaged classifier's features), −ELBO bits/dim of test images (± standard error) and,
with --fid, Inception FID. The paper's finding to check: a ≈ 1 with the whitened prior is
near-optimal and quality varies smoothly with a.

The defaults are CPU-sized (a small U-Net, 14×14 MNIST, a few thousand steps, a few hundred
samples) and far from converged: they show the trend and the pipeline, not the paper's numbers.
On a GPU raise --resolution 28 --size small --steps 30000 --num 10000 --fid.

    python benchmarks/gud_softness.py --data mnist --out benchmarks/results/gud_softness.json

Besides the JSON record it writes the table (.md) and, with matplotlib, the figure (.png) beside it
(`plot_gud_softness.py` redraws the figure from a record).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from diffspace.config import load_preset
from diffspace.evaluate import EvalOptions, evaluate_model
from diffspace.model import load
from diffspace.plots import PlotMissing
from diffspace.training import train

from plot_gud_softness import draw

HIERARCHIES = (0.4, 0.7, 1.0, 1.3, 1.6)
PRIORS = {
    "whitened": ["process.prior=fitted", "process.labels=log_variance", "process.network_input=whitened"],
    "unwhitened": ["process.prior=white", "process.labels=data_log_variance", "process.network_input=data"],
}


def arguments() -> argparse.Namespace:
    """The command-line flags (CPU-sized defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist", choices=("mnist", "fashion-mnist"))
    parser.add_argument("--data-dir", help="data directory (default: $DIFFSPACE_DATA or the user cache)")
    parser.add_argument("--resolution", type=int, default=14, help="train and sample at N×N (28 = native)")
    parser.add_argument("--size", default="tiny", help="U-Net size (tiny, small, base)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--num", type=int, default=500, help="samples per hierarchy strength")
    parser.add_argument("--sample-steps", type=int, default=100, help="Euler–Maruyama steps")
    parser.add_argument("--bpd-num", type=int, default=500, help="test images for bits/dim")
    parser.add_argument("--bpd-repeats", type=int, default=4, help="ELBO draws averaged per test image")
    parser.add_argument("--fid", action="store_true", help="also Inception FID (slow on a CPU)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--runs", default="runs/gud_softness", help="where the two training runs go")
    parser.add_argument("--out", default="benchmarks/results/gud_softness.json")
    return parser.parse_args()


def row(prior: str, hierarchy: float, entries: list[dict]) -> dict:
    """One table row: the report's figures (value, standard error, sample count) at hierarchy a."""
    by_name = {e["metric"]: e for e in entries}
    out = {"prior": prior, "a": hierarchy, "softness": 1 / hierarchy}
    for name in ("fid", "domain_fid", "precision", "recall", "class_balance_tv", "bpd"):
        if name in by_name:
            out[name] = by_name[name]["value"]
            out[f"{name}_se"] = by_name[name]["stderr"]
            out[f"{name}_n"] = by_name[name]["num_samples"]
    return out


def table(rows: list[dict], fid: bool) -> str:
    """The rows as a Markdown table."""
    head = "| prior | a | domain FID | precision | recall | class TV | bits/dim (± se) |" + (" FID |" if fid else "")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['prior']} | {r['a']:.1f} | {r['domain_fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                f"{r['class_balance_tv']:.3f} | {r['bpd']:.3f} ± {r['bpd_se']:.3f} |")
        lines.append(line + (f" {r['fid']:.1f} |" if fid else ""))
    return "\n".join(lines)


def main() -> None:
    """Train both models, evaluate each at every a, print the table and write JSON + Markdown."""
    args = arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = "gud-mnist-pca" if args.data == "mnist" else "gud-fashion-pca"
    common = [f"data.resolution={args.resolution}", f"model.size={args.size}",
              f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
              f"train.warmup_steps={min(200, args.steps // 10)}", "train.ema_decay=0.999",
              f"train.checkpoint_every={args.steps}", f"train.log_every={max(1, args.steps // 20)}",
              "train.sample_every=0", "sample.num=0", f"train.device={args.device}"]
    metrics = ["domain_fid", "precision_recall", "class_balance", "bpd"] + (["fid"] if args.fid else [])
    rows, timings = [], {}
    out = Path(args.out)
    for prior, overrides in PRIORS.items():
        cfg = load_preset(preset).with_overrides(common + overrides)
        run_dir = Path(args.runs) / f"{args.data}-{prior}"
        began = time.perf_counter()
        result = train(cfg, run_dir, data_dir=args.data_dir, quiet=True)
        timings[f"train_{prior}_s"] = time.perf_counter() - began
        trained = load(run_dir, device="cpu")
        for hierarchy in HIERARCHIES:
            options = EvalOptions(num=args.num, steps=args.sample_steps, sampler="euler_maruyama",
                                  bpd_num=args.bpd_num, bpd_repeats=args.bpd_repeats, softness=1 / hierarchy,
                                  data_dir=args.data_dir,
                                  device=args.device)
            began = time.perf_counter()
            report = evaluate_model(trained, metrics, run_dir / f"eval-a{hierarchy}.json", options, str(run_dir))
            timings[f"eval_{prior}_a{hierarchy}_s"] = time.perf_counter() - began
            rows.append(row(prior, hierarchy, report.as_dict()["entries"]))
            print(table(rows[-1:], args.fid).splitlines()[-1], flush=True)
        device = report.device
        images_per_sec = result.images_per_sec
    record = {"benchmark": "gud_softness", "data": args.data, "resolution": args.resolution, "size": args.size,
              "train_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "softness_range": [0.5, 4.0],
              "num_samples": args.num, "sampler": "euler_maruyama", "sample_steps": args.sample_steps,
              "bpd_num": args.bpd_num, "bpd_repeats": args.bpd_repeats, "device": device,
              "train_images_per_sec": images_per_sec,
              "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads(),
              "timings_s": timings, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    markdown = table(rows, args.fid)
    out.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
    try:
        print(f"figure: {draw(out, out.with_suffix('.png'))}")
    except PlotMissing as err:
        print(f"no figure: {err}")


if __name__ == "__main__":
    main()
