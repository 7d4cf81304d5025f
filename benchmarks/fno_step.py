"""FNO step time, before and after: the FNO of a base commit against the working tree's, in one run.

The base implementation is `git show <base>:src/diffspace/nets/fno.py`, imported as a module of the
current `diffspace.nets` package (so both read the same embeddings and config code). Both nets are
the issue's size (14 modes, width 32, 4 layers, 1 input and output channel, time-conditioned); the
new one loads the old one's state dict, and the benchmark checks that they agree before timing.

- train: forward + backward + AdamW step on a batch of 128 at 32×32 (MSE to a random target);
- sample: forward only, no grad, eval mode, batch 128 at 64×64 (one step of a sampler).

Rounds alternate old/new (the order flips every round) so that drifting load on a shared machine
falls on both; warm-up rounds are excluded. The speed-up is the median over rounds of old/new for
the same round (wall clock); the process CPU time is recorded too. Prints a table and writes
benchmarks/results/fno_step-cpu.json (with the load average before and after). `--profile` adds a
torch.profiler table of the new training step.

    python benchmarks/fno_step.py                      # base dcacd4d, 2 threads, 5 rounds
    python benchmarks/fno_step.py --threads 1 --rounds 7
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from records import alternate, device_name, write_record

#: The last commit whose FNO used 1×1 convolutions and index-gathered modes (the branch's start).
BASE_COMMIT = "dcacd4d26fd4bfcafffda05f82333198fb04f5ad"
REPO = Path(__file__).resolve().parent.parent


def base_module(commit: str) -> ModuleType:
    """The FNO module at `commit`, imported as diffspace.nets._fno_base (relative imports resolve to the
    current package)."""
    importlib.import_module("diffspace.nets")  # the parent package must be imported first
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:src/diffspace/nets/fno.py"],
                            check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fno_base.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("diffspace.nets._fno_base", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def build_pair(commit: str) -> tuple[nn.Module, nn.Module, float]:
    """(old net, new net with the old one's weights, max |old − new| of their outputs on a 32×32 batch)."""
    from diffspace.nets import NetConfig
    from diffspace.nets.fno import FNO

    cfg = NetConfig(kind="fno", modes=14, width=32, layers=4)
    torch.manual_seed(0)
    old = base_module(commit).FNO(cfg, 1, 1, (32, 32))
    with torch.no_grad():
        old.out.weight.normal_(0.0, 0.02)  # a trained-looking head, so gradients reach every layer
    new = FNO(cfg, 1, 1, (32, 32))
    new.load_state_dict(old.state_dict())
    x, t = torch.randn(4, 1, 32, 32), torch.rand(4)
    with torch.no_grad():
        gap = (old(x, t) - new(x, t)).abs().max().item()
    return old, new, gap


def train_step(net: nn.Module, batch: int, size: int) -> Callable[[], None]:
    """One closure = forward, MSE loss, backward, AdamW step, on fixed random data."""
    gen = torch.Generator().manual_seed(1)
    x, target = torch.randn(batch, 1, size, size, generator=gen), torch.randn(batch, 1, size, size, generator=gen)
    t = torch.rand(batch, generator=gen)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()

    def step() -> None:
        loss = (net(x, t) - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def sample_step(net: nn.Module, batch: int, size: int) -> Callable[[], None]:
    """One closure = a no-grad forward pass in eval mode (one sampler step)."""
    gen = torch.Generator().manual_seed(2)
    x, t = torch.randn(batch, 1, size, size, generator=gen), torch.rand(batch, generator=gen)

    def step() -> None:
        net.eval()
        with torch.no_grad():
            net(x, t)

    return step


def summarise(times: dict[str, list[float]], cpu: dict[str, list[float]], batch: int) -> dict[str, object]:
    """Medians, minima, per-round speed-ups and images/s of a case (wall clock), and median CPU time."""
    old, new = times["old"], times["new"]
    ratios = [o / n for o, n in zip(old, new)]
    return {"old_ms": round(1000 * statistics.median(old), 1), "new_ms": round(1000 * statistics.median(new), 1),
            "old_cpu_ms": round(1000 * statistics.median(cpu["old"]), 1),
            "new_cpu_ms": round(1000 * statistics.median(cpu["new"]), 1),
            "old_ms_min": round(1000 * min(old), 1), "new_ms_min": round(1000 * min(new), 1),
            "speedup": round(statistics.median(ratios), 3), "speedup_per_round": [round(r, 3) for r in ratios],
            "old_images_per_sec": round(batch / statistics.median(old), 1),
            "new_images_per_sec": round(batch / statistics.median(new), 1),
            "old_ms_rounds": [round(1000 * s, 1) for s in old], "new_ms_rounds": [round(1000 * s, 1) for s in new]}


def profile_table(step: Callable[[], None], rows: int = 20) -> str:
    """torch.profiler's self-CPU-time table of three calls of `step`."""
    from torch.profiler import profile

    step()
    with profile() as prof:
        for _ in range(3):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    """Time both cases, print the table, write the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE_COMMIT, help="commit whose FNO is 'old' (default: %(default).7s)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per implementation and case (≥ 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--repeats", type=int, default=3, help="calls per round")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--profile", action="store_true", help="print a profiler table of the new training step")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    old, new, gap = build_pair(args.base)
    cases = {"train 32×32": (train_step, 32), "sample 64×64": (sample_step, 64)}
    results = {}
    for case, (make, size) in cases.items():
        wall, cpu = alternate({"old": make(old, args.batch, size), "new": make(new, args.batch, size)},
                              args.rounds, args.warmup, args.repeats)
        results[case] = summarise(wall, cpu, args.batch)
    load_after = os.getloadavg()

    print(f"FNO 14 modes, width 32, 4 layers; batch {args.batch}; {args.threads} threads; base {args.base[:7]}; "
          f"outputs agree to {gap:.1e}; load average {load_before[0]:.2f} → {load_after[0]:.2f}")
    print("| case | old ms/step | new ms/step | speed-up | old images/s | new images/s | CPU ms old / new |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case, r in results.items():
        print(f"| {case} | {r['old_ms']} | {r['new_ms']} | {r['speedup']}× | {r['old_images_per_sec']} | "
              f"{r['new_images_per_sec']} | {r['old_cpu_ms']} / {r['new_cpu_ms']} |")
    if args.profile:
        print(profile_table(train_step(new, args.batch, 32)))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    write_record("fno_step", "cpu", {
        "benchmark": "fno_step", "device": device_name("cpu"), "threads": args.threads, "torch": torch.__version__,
        "fno": "modes 14, width 32, layers 4, 1 → 1 channels, time-conditioned", "batch": args.batch,
        "base_commit": args.base, "new_commit": commit.strip(), "working_tree_dirty": bool(subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "src/diffspace/nets"], capture_output=True,
            text=True).stdout.strip()),
        "rounds": args.rounds, "warmup_rounds": args.warmup, "calls_per_round": args.repeats,
        "max_output_gap": gap, "load_average_before": load_before, "load_average_after": load_after,
        "cases": results})


if __name__ == "__main__":
    main()
