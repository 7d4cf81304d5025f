"""Training throughput: images/s and peak memory of one training step.

Cases: the `quickstart` and `mnist` presets, on CPU and (when present) CUDA, with bf16 autocast
on/off and torch.compile on/off; on CUDA also the DDPM++-size U-Net (nets size "ddpmpp",
3×32×32, batch 128). A step is the real `Trainer.train_step` (forward, backward, clipping,
AdamW, EMA, NaN guard) on random data of the preset's shape (throughput does not depend on
the pixel values, and no data set has to be on disk). Each case runs in its own process, so
its peak memory is its own: CUDA reports the peak allocated memory, CPU the peak resident
set size of the whole process (PyTorch libraries included).

    python benchmarks/train_throughput.py                # all cases for the devices present
    python benchmarks/train_throughput.py --steps 5      # shorter

Prints a table and writes benchmarks/results/train_throughput-<device>.json, with the
machine's 1-minute load average before and after (other work on a shared machine slows it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from records import device_name, write_record

#: name → (preset, extra overrides, per-image shape C×H×W, levels)
CASES: dict[str, tuple[str, list[str], tuple[int, int, int], int | None]] = {
    "quickstart": ("quickstart", [], (1, 8, 8), 17),
    "mnist": ("mnist", [], (1, 28, 28), 256),
    "ddpmpp-32": ("mnist", ["model.size=ddpmpp", "train.batch_size=128"], (3, 32, 32), 256),
}


def measure(case: str, device: str, bf16: str, compile: bool, warmup: int, steps: int) -> dict[str, object]:
    """Time `steps` training steps of `case` after `warmup` steps; images/s and peak memory."""
    from diffspace.build import Built, Model
    from diffspace.config import load_preset
    from diffspace.data import DatasetInfo, ImageDataset
    from diffspace.nets import build_net
    from diffspace.process import build_process
    from diffspace.training.distributed import World
    from diffspace.training.loop import Trainer

    preset, overrides, shape, levels = CASES[case]
    cfg = load_preset(preset).with_overrides(
        [*overrides, f"train.device={device}", f"train.bf16={bf16}", f"train.compile={compile}", "sample.num=0"])
    batch = cfg.train.batch_size
    images = torch.rand(max(batch, 1024), *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    info = DatasetInfo(case, shape[0], shape[1:], (0.0, 255.0), levels, None)
    torch.manual_seed(0)
    process = build_process(cfg.process, images)
    net = build_net(cfg.model, *process.network_channels(shape[0]), shape[1:])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), World(), device, None, True, Built(ImageDataset(images, None, info),
                                                                                  Model(net, process), cfg))
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for _ in range(warmup):
            trainer.train_step()
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        sync()
        seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"case": case, "device": device, "bf16": bf16, "compile": compile, "batch": batch,
            "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
            "images_per_sec": round(batch * steps / seconds, 1), "step_ms": round(1000 * seconds / steps, 2),
            "peak_mem_MiB": round(peak / 2**20, 1),
            "memory": "peak allocated" if device == "cuda" else "peak process RSS"}


def cases_for(device: str) -> list[tuple[str, str, bool]]:
    """(case, bf16, compile) to run on `device`; DDPM++ on CUDA only."""
    names = ["quickstart", "mnist"] + (["ddpmpp-32"] if device == "cuda" else [])
    return [(name, bf16, compile) for name in names for bf16 in ("off", "on") for compile in (False, True)]


def main() -> None:
    """Run every case in a subprocess per device, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--one", nargs=4, metavar=("CASE", "DEVICE", "BF16", "COMPILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        case, device, bf16, compile = args.one
        print(json.dumps(measure(case, device, bf16, compile == "True", args.warmup, args.steps)))
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        if device == "cpu":
            print("note: the DDPM++-size case (56M parameters, batch 128) runs on CUDA only; on CPU it would take hours")
        rows, load_before = [], os.getloadavg()[0]
        for case, bf16, compile in cases_for(device):
            done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--warmup", str(args.warmup),
                                   "--one", case, device, bf16, str(compile)], capture_output=True, text=True)
            if done.returncode != 0:
                rows.append({"case": case, "device": device, "bf16": bf16, "compile": compile,
                             "error": done.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(format_row(rows[-1]), flush=True)
        record = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                  "load_average_1min": [load_before, os.getloadavg()[0]],
                  "steps": args.steps, "warmup": args.warmup, "results": rows}
        write_record("train_throughput", device, record)


def format_row(row: dict[str, object]) -> str:
    """One table line."""
    head = f"{row['case']:<11} {row['device']:<5} bf16={row['bf16']:<3} compile={str(row['compile']):<5}"
    if "error" in row:
        return f"{head}  FAILED: {row['error']}"
    return (f"{head}  batch {row['batch']:>4}  {row['params_M']:>7.3f}M params  {row['images_per_sec']:>9.1f} img/s  "
            f"{row['step_ms']:>9.2f} ms/step  {row['peak_mem_MiB']:>8.1f} MiB {row['memory']}")


if __name__ == "__main__":
    main()
