"""Streaming benchmark: a folder of images larger than the memory it trains in, and exact resume after SIGKILL.

Generates `--num` smooth random RGB PNGs of `--size`² pixels (20,000 of 64×64 by default; kept in `--folder`
between runs), then trains a small U-Net on them through the streaming path (`data.stream=true`, `--workers`
DataLoader workers) and reports the peak resident memory of the trainer and of its workers next to the size
the data take as the float32 tensor the in-memory path holds, and the in-memory run's own peak. Then it runs
the streamed training killed with SIGKILL after a checkpoint and resumed, and checks that its losses equal
the uninterrupted run's (and the in-memory run's), step for step.

    python benchmarks/streaming.py                       # CPU, about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from records import device_name, write_record  # noqa: E402


def arguments() -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=20_000, help="images in the folder")
    parser.add_argument("--size", type=int, default=64, help="image side length")
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "diffspace-streaming"))
    parser.add_argument("--steps", type=int, default=60, help="training steps of each run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args()


def make_folder(folder: Path, num: int, size: int) -> None:
    """`num` PNGs of smooth random colour fields (bilinear up-sampling of 8×8 noise), once."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(num):
        path = folder / f"{i:06d}.png"
        if path.exists():
            continue
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        coarse.resize((size, size), Image.BILINEAR).save(path)


SCRIPT = """
import json, resource, sys, time
import torch
from diffspace.config import load_preset
from diffspace.training import train

if __name__ == "__main__":   # the DataLoader workers start fresh interpreters that import this file
    torch.set_num_threads(1)
    overrides = json.loads(sys.argv[2])
    began = time.perf_counter()
    result = train(load_preset("quickstart").with_overrides(overrides), sys.argv[1], quiet=True)
    seconds = time.perf_counter() - began
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": own, "peak_worker_rss_bytes": workers,
                      "images_per_sec": result.images_per_sec}))
"""


def run(script: Path, run_dir: Path, overrides: list[str]) -> dict:
    """One training run in a subprocess; its timing and memory figures."""
    out = subprocess.run([sys.executable, str(script), str(run_dir), json.dumps(overrides)], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def losses(run_dir: Path) -> list[float]:
    """The loss column of a run's metrics.csv."""
    lines = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    return [float(line.split(",")[1]) for line in lines]


def main() -> None:
    """Make the folder, train streamed, kill and resume, print the table and write the JSON record."""
    from diffspace.checkpoint import latest_checkpoint, load_checkpoint

    args = arguments()
    folder = Path(args.folder)
    began = time.perf_counter()
    make_folder(folder, args.num, args.size)
    made = time.perf_counter() - began
    data_bytes = args.num * 3 * args.size * args.size * 4
    disk_bytes = sum(p.stat().st_size for p in folder.glob("*.png"))
    overrides = ["data.name=folder", f"data.folder={folder}", "data.grayscale=false", "data.stream=true",
                 f"data.workers={args.workers}", f"train.steps={args.steps}", f"train.batch_size={args.batch_size}",
                 "train.log_every=1", f"train.checkpoint_every={max(1, args.steps // 6)}", "train.device=cpu",
                 "sample.num=0", "model.channels=8", "model.channel_mult=1,2,2", "model.attn_resolutions="]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        script = tmp / "train.py"
        script.write_text(SCRIPT)
        whole = run(script, tmp / "whole", overrides)
        in_memory = run(script, tmp / "memory", [*overrides, "data.stream=false"])
        proc = subprocess.Popen([sys.executable, str(script), str(tmp / "killed"), json.dumps(overrides)],
                                stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
        while True:
            found = latest_checkpoint(tmp / "killed")
            if found is not None and load_checkpoint(found)["step"] >= args.steps // 3:
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = load_checkpoint(latest_checkpoint(tmp / "killed"))["step"]
        resumed = run(script, tmp / "killed", overrides)
        exact = losses(tmp / "killed") == losses(tmp / "whole")
        memory_equal = losses(tmp / "memory") == losses(tmp / "whole")
    record = {
        "benchmark": "streaming", "device": device_name("cpu"), "images": args.num, "size": args.size,
        "channels": 3, "data_in_memory_bytes": data_bytes, "png_bytes_on_disk": disk_bytes,
        "folder_seconds": made, "steps": args.steps, "batch_size": args.batch_size, "workers": args.workers,
        "whole": whole, "in_memory": in_memory, "in_memory_losses_equal": memory_equal,
        "resumed": resumed, "killed_after_step": killed_at, "resume_exact": exact,
        "load_average": os.getloadavg(), "max_rss_of_this_script_bytes":
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    mib = 2**20
    print(f"| data as a float32 tensor | PNGs on disk | streamed: trainer peak RSS | worker peak RSS | images/s | "
          f"in memory: peak RSS | SIGKILL at step {killed_at}, resumed exactly |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {data_bytes / mib:.0f} MiB | {disk_bytes / mib:.0f} MiB | {whole['peak_rss_bytes'] / mib:.0f} MiB | "
          f"{whole['peak_worker_rss_bytes'] / mib:.0f} MiB | {whole['images_per_sec']:.0f} | "
          f"{in_memory['peak_rss_bytes'] / mib:.0f} MiB | {'yes' if exact else 'NO'} |")
    write_record("streaming", "cpu", record)


if __name__ == "__main__":
    main()
