"""Checkpoints that never lose work: atomic single-file writes, last-K retention, RNG states.

A checkpoint is `<run>/checkpoints/step-XXXXXXXX.pt`, a dict of tensors and plain values that
`torch.load(weights_only=True)` reads. It is written to a temporary file in the same folder,
flushed and fsync'ed, then renamed over its final name with `os.replace`, so a process killed
at any moment leaves either the previous complete checkpoint or the new one, never half a file.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import safetensors.torch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})\.pt$")
_TEMP_PREFIX = ".tmp-"


class RunError(RuntimeError):
    """A run directory that cannot be used (missing, or without a checkpoint)."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """The path of the checkpoint taken after `step` optimizer steps."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (temporary files are ignored)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def atomic_write(path: str | Path, write: Any) -> None:
    """Create `path` atomically: `write(file)` fills a temp file in the same folder, which is
    flushed, fsync'ed and renamed over `path`; the folder entry is fsync'ed too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f"{_TEMP_PREFIX}{os.getpid()}-{path.name}"
    try:
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write `state` atomically as the checkpoint of `step`, then delete all but the newest
    `keep_last` checkpoints and any temporary files left by killed writers."""
    path = checkpoint_path(run_dir, step)
    atomic_write(path, lambda handle: torch.save(state, handle))
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    for stale in path.parent.glob(f"{_TEMP_PREFIX}*"):
        if not stale.name.startswith(f"{_TEMP_PREFIX}{os.getpid()}-"):
            stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict[str, Any]:
    """Every global RNG state of this process: torch CPU, CUDA (all devices), numpy, python."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states captured by `rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def export_safetensors(weights: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write `weights` (e.g. the EMA state dict) atomically as a safetensors file."""
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in weights.items()}
    data = safetensors.torch.save(tensors, metadata=metadata)
    atomic_write(path, lambda handle: handle.write(data))
