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


def write_record(benchmark: str, device: str, record: dict) -> Path:
    """Write the record as indented JSON, print where, and return the path."""
    path = record_path(benchmark, device)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path
