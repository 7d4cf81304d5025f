"""Training metrics and progress: `metrics.csv` in the run directory, optionally TensorBoard, and
the progress shown while training (a bar on a terminal, plain lines in a log file)."""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from diffspace.checkpoint import atomic_write

COLUMNS = ("step", "loss", "lr", "grad_norm", "images_per_sec")
METRICS_FILE = "metrics.csv"


class TensorBoardMissing(RuntimeError):
    """train.tensorboard=true without the tensorboard package installed."""


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.csv as floats (step as a float too)."""
    with open(Path(run_dir) / METRICS_FILE, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


class MetricsLog:
    """Appends rows of COLUMNS to metrics.csv (and TensorBoard scalars when asked).

    On resume from step s the rows after s (written after the last checkpoint by a run that
    was then killed) are dropped first, so the file always describes one uninterrupted run.
    """

    def __init__(self, run_dir: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.path = run_dir / METRICS_FILE
        rows = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if float(r["step"]) <= resume_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda handle: handle.write(text.getvalue().encode()))
        self.handle = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, COLUMNS)
        self.board: Any = None
        if tensorboard:
            self.board = open_tensorboard(run_dir / "tensorboard")

    def write(self, row: dict[str, float]) -> None:
        """Append one row (floats written with repr, so they read back exactly)."""
        self.writer.writerow({k: repr(row[k]) if isinstance(row[k], float) else row[k] for k in COLUMNS})
        self.handle.flush()
        if self.board is not None:
            for key in COLUMNS[1:]:
                self.board.add_scalar(f"train/{key}", row[key], int(row["step"]))

    def close(self) -> None:
        """Close the files."""
        self.handle.close()
        if self.board is not None:
            self.board.close()


def open_tensorboard(folder: Path) -> Any:
    """A TensorBoard SummaryWriter for `folder`; TensorBoardMissing if tensorboard is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardMissing(
            "train.tensorboard=true needs the tensorboard package: pip install 'diffspace[tensorboard]'"
        ) from None
    return SummaryWriter(str(folder))


def format_duration(seconds: float) -> str:
    """A duration as "1h02m", "3m05s" or "42s"."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Training progress on `stream` (stderr): a tqdm bar when it is a terminal; otherwise one plain
    line per metrics row, "step 200/1500  loss 0.1234  1015 images/s  ETA 2m10s", so that a log file
    holds lines, not a single line of carriage returns. ETA: the wall time per step of this session
    (sample grids and checkpoints included) times the steps left. Nothing is shown when disabled."""

    def __init__(self, total: int, initial: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.initial, self.enabled = total, initial, enabled
        self.began = time.perf_counter()
        self.bar: Any = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc="train",
                            file=self.stream)

    def step(self) -> None:
        """One optimizer step is done."""
        if self.bar is not None:
            self.bar.update(1)

    def row(self, row: dict[str, float]) -> None:
        """A metrics row was logged: shown on the bar, or printed as one line."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_sec']:.0f}")
        elif self.enabled:
            step = int(row["step"])
            done = step - self.initial
            eta = (time.perf_counter() - self.began) / done * (self.total - step) if done > 0 else 0.0
            print(f"step {step}/{self.total}  loss {row['loss']:.4f}  {row['images_per_sec']:.0f} images/s  "
                  f"ETA {format_duration(eta)}", file=self.stream, flush=True)

    def write(self, message: str) -> None:
        """Print a message line (above the bar, if there is one); shown even when progress is disabled."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
