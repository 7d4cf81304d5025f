"""The JSON record each benchmark leaves: benchmarks/results/<benchmark>-<device>.json."""

from __future__ import annotations

import json
import platform
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
