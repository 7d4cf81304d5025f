"""Data that outgrow memory: a folder streamed from disk per batch trains exactly as in memory and resumes
exactly after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffspace.checkpoint import latest_checkpoint, load_checkpoint
from diffspace.config import ConfigError, load_preset
from diffspace.data import DataConfig, load_dataset
from diffspace.data.stream import FolderImages
from diffspace.training import read_metrics, train

TINY = ["data.name=folder", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=3",
        "sample.num=0", "train.device=cpu", "model.channels=8", "model.channel_mult=1", "model.attn_resolutions="]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 random 12×12 grayscale PNGs."""
    path = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for i in range(96):
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


def _config(folder: Path, *overrides: str):
    return load_preset("quickstart").with_overrides([*TINY, f"data.folder={folder}", *overrides])


def test_a_streamed_folder_is_lazy_and_decodes_the_same_images(folder: Path) -> None:
    eager = load_dataset(DataConfig(name="folder", folder=str(folder)))
    lazy = load_dataset(DataConfig(name="folder", folder=str(folder), stream=True))
    assert isinstance(lazy.images, FolderImages) and lazy.streamed and not eager.streamed
    assert lazy.images.shape == eager.images.shape and lazy.info == eager.info
    index = torch.tensor([5, 0, 95])
    assert torch.equal(lazy.images[index], eager.images[index])
    with pytest.raises(ConfigError, match="data.stream=true reads a folder"):
        _config(folder, "data.name=mnist", "data.stream=true")


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_training_equals_training_in_memory(folder: Path, tmp_path: Path, workers: int) -> None:
    train(_config(folder, "train.steps=8"), tmp_path / "memory", quiet=True)
    train(_config(folder, "train.steps=8", "data.stream=true", f"data.workers={workers}"), tmp_path / "stream",
          quiet=True)
    assert [r["loss"] for r in read_metrics(tmp_path / "stream")] == [r["loss"] for r in read_metrics(tmp_path / "memory")]


def test_a_streamed_run_killed_with_sigkill_resumes_exactly(folder: Path, tmp_path: Path) -> None:
    """The checkpoint holds the batch order's position; the loader restarts from it (with 2 workers)."""
    script = tmp_path / "run.py"
    overrides = [*TINY, f"data.folder={folder}", "data.stream=true", "data.workers=2", "train.steps=30"]
    script.write_text("import sys, torch\nfrom diffspace.config import load_preset\nfrom diffspace.training import train\n"
                      "if __name__ == '__main__':  # workers start fresh interpreters that import this module\n"
                      "    torch.set_num_threads(1)\n"
                      f"    train(load_preset('quickstart').with_overrides({overrides!r}), sys.argv[1], quiet=True)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "whole")], check=True, env=env, timeout=300)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed")], env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        found = latest_checkpoint(tmp_path / "killed")
        if found is not None and load_checkpoint(found)["step"] >= 9:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert load_checkpoint(latest_checkpoint(tmp_path / "killed"))["step"] < 30
    subprocess.run([sys.executable, str(script), str(tmp_path / "killed")], check=True, env=env, timeout=300)
    assert [r["loss"] for r in read_metrics(tmp_path / "killed")] == [r["loss"] for r in read_metrics(tmp_path / "whole")]
