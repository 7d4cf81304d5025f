"""Blackout sampling step cost with and without the log ŷ the samplers used to compute and discard.

Before 79829c8 every sampler step called the rate with its logarithm, (ŷ, log ŷ), and used ŷ alone; the samplers
now call `BlackoutDiffusion.remaining` (ŷ only). This runs the binomial-bridge sampler of the
`blackout-binarized-mnist` preset's network (untrained: the cost does not depend on the weights) both ways in
alternating rounds (`records.alternate`) and reports the median process CPU time and wall time per run (the first
round is a warm-up), then writes benchmarks/results/blackout_step-<device>.json.

    python benchmarks/blackout_step.py                 # 1 thread, batch 32, 50 steps, 5 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable

import torch

from records import alternate, device_name, write_record


def main() -> None:
    """Time both variants and write the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (after one warm-up)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffspace.config import load_preset
    from diffspace.nets import build_net
    from diffspace.noise import PerSampleGenerator
    from diffspace.process import DataFacts, build_process, get_sampler, resolve_config

    cfg = load_preset("blackout-binarized-mnist")
    facts = DataFacts((1, 28, 28), 2)
    process = build_process(resolve_config(cfg.process, facts), facts=facts)
    net = build_net(cfg.model, 1, 1, (28, 28)).eval()
    kind, now = type(process), type(process).remaining
    variants = {"ŷ only (now)": now,
                "ŷ and a discarded log ŷ (before)": lambda self, net, n, k, cond=None: self._rate(net, n, k, cond)[0]}
    sampler = get_sampler("binomial_bridge")

    def run(remaining: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            kind.remaining = remaining
            with torch.no_grad():
                sampler(process, net, (args.batch, *facts.shape), args.steps,
                        PerSampleGenerator.for_indices(0, range(args.batch), "cpu"))
        return call

    load_before = os.getloadavg()
    try:
        wall, cpu = alternate({name: run(fn) for name, fn in variants.items()}, args.rounds, 1, 1)
    finally:
        kind.remaining = now
    rows = [{"variant": name, "cpu_s": statistics.median(cpu[name]), "wall_s": statistics.median(wall[name])}
            for name in variants]
    saved = 1 - rows[0]["cpu_s"] / rows[1]["cpu_s"]
    print(f"binomial bridge, {args.steps} steps, batch {args.batch}, {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M"
          f"-parameter U-Net, {args.threads} thread(s)")
    print("| variant | CPU s | wall s |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {row['variant']} | {row['cpu_s']:.3f} | {row['wall_s']:.3f} |")
    print(f"CPU time saved: {100 * saved:.1f}%")
    write_record("blackout_step", "cpu", {
        "device": device_name("cpu"), "threads": args.threads, "batch": args.batch, "steps": args.steps,
        "rounds": args.rounds, "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
        "rows": rows, "cpu_saved_fraction": saved, "load_average_before": load_before,
        "load_average_after": os.getloadavg()})


if __name__ == "__main__":
    main()
