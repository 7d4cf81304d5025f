"""What the benchmarks share: the JSON record each leaves (benchmarks/results/<benchmark>-<device>.json) and
alternating before/after timing."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: str) -> str:
    """The GPU's name on CUDA, else the CPU's."""
    return torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()


def record_path(benchmark: str, device: str) -> Path:
    """Where `benchmark` run on `device` keeps its record."""
    return RESULTS / f"{benchmark}-{device}.json"


def write_record(benchmark: str, device: str, record: dict, path: Path | None = None, quiet: bool = False) -> Path:
    """Write the record as indented JSON to `path` (default: `record_path`), print where unless quiet, and return
    the path."""
    path = record_path(benchmark, device) if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    if not quiet:
        print(f"wrote {path}")
    return path


def alternate(steps: dict[str, Callable[[], None]], rounds: int, warmup: int, repeats: int
              ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process CPU seconds per call of each closure, one list entry per timed round; the order
    flips every round."""
    names = list(steps)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                steps[name]()
            if r >= warmup:
                wall[name].append((time.perf_counter() - start) / repeats)
                cpu[name].append((time.process_time() - start_cpu) / repeats)
    return wall, cpu
