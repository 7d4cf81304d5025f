"""Checkpoints that never lose work: atomic single-file writes, a checksum record, last-K retention.

A checkpoint is `<run>/checkpoints/step-XXXXXXXX.pt`, a dict of tensors and plain values that
`torch.load(weights_only=True)` reads. It is written to a temporary file in the same folder,
flushed and fsync'ed, then renamed over its final name with `os.replace`, so a process killed
at any moment leaves either the previous complete checkpoint or the new one, never half a file.

Beside each checkpoint, `step-XXXXXXXX.pt.json` records its size and SHA-256 ({"file", "bytes",
"sha256"}), computed while the checkpoint is written and itself written atomically after it.
A sidecar rather than an embedded checksum: the checkpoint stays a plain `torch.save` file that
any reader (and older diffspace versions) load, the record can be checked without torch
(`sha256sum`), and its presence marks a checkpoint whose write completed. Readers verify it
(`load_latest`): a checkpoint that fails is reported in one line and the next older one is
used; a checkpoint without a record (written before records existed, or killed between the two
renames) is unverified and used if it loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import safetensors.torch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})\.pt$")
_TEMP_PREFIX = ".tmp-"
#: Suffix of the size-and-SHA-256 record written beside each checkpoint.
RECORD_SUFFIX = ".json"
#: Suffix given to a broken checkpoint that `load_latest(set_aside=True)` moves out of the way.
BROKEN_SUFFIX = ".corrupt"


class RunError(RuntimeError):
    """A run directory or output path that cannot be used (missing, unwritable, no intact checkpoint)."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """The path of the checkpoint taken after `step` optimizer steps."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def record_path(checkpoint: Path) -> Path:
    """The size-and-SHA-256 record beside `checkpoint` (step-XXXXXXXX.pt.json)."""
    return checkpoint.with_name(checkpoint.name + RECORD_SUFFIX)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoints of a run, oldest first (temporary files, records and set-aside files are ignored)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint file of a run, or None (not verified: see `load_latest`)."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Create `path` atomically: `write(file)` fills a temp file in the same folder, which is
    flushed, fsync'ed and renamed over `path`; the folder entry is fsync'ed too. If anything
    fails (a full disk included) the temp file is removed and `path` is untouched."""
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


class _HashedSave:
    """`torch.save(state)` into a file, as an `atomic_write` writer, counting the bytes written and their
    SHA-256; the first OSError of a write (a full disk) is re-raised as it is, where torch's zip writer
    would replace it by a RuntimeError of its own."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state, self.sha256, self.bytes = state, hashlib.sha256(), 0
        self.handle: IO[bytes] | None = None
        self.error: OSError | None = None

    def __call__(self, handle: IO[bytes]) -> None:
        """Save the state into `handle` through this object."""
        self.handle = handle
        try:
            torch.save(self.state, self)
        except Exception:
            if self.error is not None:
                raise self.error from None
            raise

    def write(self, data: bytes) -> int:
        """Write `data` to the file, adding it to the count and the hash."""
        self.sha256.update(data)
        self.bytes += len(data)
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        """Flush the file."""
        self.handle.flush()


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write `state` atomically as the checkpoint of `step`, then its record; then delete the
    checkpoints older than `step` beyond the newest `keep_last` (the new one counts) and any temporary
    files left by killed writers. A failed write (OSError, e.g. a full disk) deletes nothing."""
    path = checkpoint_path(run_dir, step)
    record_path(path).unlink(missing_ok=True)  # a record of an older file of this name must not outlive it
    saved = _HashedSave(state)
    atomic_write(path, saved)
    record = {"file": path.name, "bytes": saved.bytes, "sha256": saved.sha256.hexdigest()}
    atomic_write(record_path(path), lambda handle: handle.write(json.dumps(record).encode()))
    older = [p for p in list_checkpoints(run_dir) if _step(p) < step]
    for old in older[: max(len(older) - (keep_last - 1), 0)]:
        record_path(old).unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    for stale in path.parent.glob(f"{_TEMP_PREFIX}*"):
        if not stale.name.startswith(f"{_TEMP_PREFIX}{os.getpid()}-"):
            stale.unlink(missing_ok=True)
    return path


def _step(path: Path) -> int:
    """The step in a checkpoint's file name."""
    return int(_NAME.match(path.name).group(1))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only; not verified)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def verify_checkpoint(path: Path) -> str | None:
    """What is wrong with `path` according to its record (size, then SHA-256), or None when it
    matches or has no record (an unverified checkpoint)."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    try:
        record = json.loads(record_path(path).read_text())
        expected, digest = int(record["bytes"]), str(record["sha256"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return f"has an unreadable record {record_path(path).name}"
    if size != expected:
        return f"is truncated ({size} of {expected} bytes)" if size < expected else \
            f"has {size} bytes where its record says {expected}"
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
    if sha256.hexdigest() != digest:
        return f"is corrupt (SHA-256 {sha256.hexdigest()[:12]}…, its record says {digest[:12]}…)"
    return None


def _stderr(line: str) -> None:
    """Print one line on stderr."""
    print(line, file=sys.stderr, flush=True)


def load_latest(
    run_dir: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    set_aside: bool = False,
    report: Callable[[str], None] = _stderr,
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that verifies and loads, with its state; None when the run has no
    checkpoint. Each newer broken one is reported in one `report` line and, with `set_aside` (a
    trainer about to write new checkpoints), renamed to <name>.corrupt (its record likewise) so that
    it is neither resumed from nor counted by retention; nothing is deleted. RunError when every
    checkpoint is broken."""
    found = list_checkpoints(run_dir)
    broken: list[tuple[Path, str]] = []
    for path in reversed(found):
        try:
            problem = verify_checkpoint(path)
            state = load_checkpoint(path, map_location) if problem is None else None
        except Exception as err:  # noqa: BLE001 — any failure to read a checkpoint makes it unusable
            problem, state = f"cannot be loaded ({_first_line(err)})", None
        if state is not None:
            for bad, what in broken:
                aside = _set_aside(bad) if set_aside else None
                kept = f"; renamed it {aside.name}" if aside else ""
                report(f"checkpoint {bad} {what}{kept}; using the older {path.name}")
            return path, state
        broken.append((path, problem))
    if not broken:
        return None
    newest, what = broken[0]
    raise RunError(
        f"no usable checkpoint in {newest.parent}: all {len(broken)} are broken (newest {newest.name} {what}); "
        "nothing was deleted: move the folder aside to start this run again from step 0"
    )


def _first_line(err: BaseException) -> str:
    """An exception as "Type: first line of its message"."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _set_aside(path: Path) -> Path:
    """Rename a broken checkpoint (and its record) to <name>.corrupt, or <name>.corrupt-2, -3, ... when
    that is taken (an earlier broken file is never replaced); returns the new path."""
    aside, n = path.with_name(path.name + BROKEN_SUFFIX), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}{BROKEN_SUFFIX}-{n}")
    os.replace(path, aside)
    if record_path(path).exists():
        os.replace(record_path(path), record_path(aside))
    return aside


def check_writable(path: str | Path, what: str, folder: bool = False) -> None:
    """RunError unless `path` (a file, or a folder when `folder`) can be written: its nearest existing
    ancestor must be a folder that accepts a new file (tried by creating and removing one), and an
    existing `path` must be writable and of the right kind. `what` names it ("--out", "run directory")."""
    path = Path(path)
    hint = "choose another location or fix its permissions"
    if path.exists() and path.is_dir() != folder:
        kind = "a folder; give a file name" if path.is_dir() else "a file, not a folder"
        raise RunError(f"{what} {path} is {kind}")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RunError(f"{what} {path} cannot be created: {parent} is a file, not a folder; {hint}")
    try:
        handle, probe = tempfile.mkstemp(prefix=_TEMP_PREFIX + "probe-", dir=parent)
    except OSError as err:
        raise RunError(f"{what} {path} is not writable ({parent}: {err.strerror or err}); {hint}") from None
    os.close(handle)
    os.unlink(probe)
    if path.is_file() and not os.access(path, os.W_OK):
        raise RunError(f"{what} {path} is not writable (permission denied); {hint}")


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
