"""The training loop, checkpoints, EMA, batch order, bf16 wrapper, SIGKILL resume and 2-process DDP.

The loop is tested with tiny stand-ins (a 4×4 data set, a two-layer conv net, an ε-matching
process written here), so the tests check the loop's own guarantees, fast, on any machine.
"""

from __future__ import annotations

import io
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffspace.checkpoint import (
    atomic_write, latest_checkpoint, list_checkpoints, load_checkpoint, rng_state, save_checkpoint, set_rng_state,
)
from diffspace.config import ConfigError, RunConfig
from diffspace.training import EMA, FINAL_GRID, TensorBoardMissing, TrainingError, ema_decay, read_metrics, train, warmup_factor
from diffspace.noise import mix_seed
from diffspace.training.batches import BatchOrder
from diffspace.training.logs import Progress, format_duration
from diffspace.training.precision import NetCall

STANDINS = '''
import math, os, time
import torch
from torch import nn
from diffspace.build import Built, Model
from diffspace.config import RunConfig
from diffspace.data import DatasetInfo, ImageDataset
from diffspace.noise import gaussian_noise, uniform_noise


class ToyProcess(nn.Module):
    """x_t = cos(πt/2) x0 + sin(πt/2) ε; loss = mean (net(x_t, t) − ε)²; optional NaN steps."""

    def __init__(self, nan_calls=()):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))
        self.nan_calls, self.calls = set(nan_calls), 0
        self.delay = float(os.environ.get("TOY_DELAY", "0"))

    def loss(self, net, x0, generator=None, **cond):
        time.sleep(self.delay)
        self.calls += 1
        t = uniform_noise((x0.shape[0],), generator, x0.device)
        eps = gaussian_noise(tuple(x0.shape), generator, x0.device)
        a, s = torch.cos(t * math.pi / 2).view(-1, 1, 1, 1), torch.sin(t * math.pi / 2).view(-1, 1, 1, 1)
        out = (net(a * x0 + s * eps, t) - eps).pow(2).flatten(1).mean(1) * self.scale
        return out * float("nan") if self.calls in self.nan_calls else out

    def network_channels(self, channels):
        return channels, channels


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.time, self.out = nn.Conv2d(1, 8, 3, padding=1), nn.Linear(1, 8), nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x, t):
        return self.out(torch.tanh(self.inp(x) + self.time(t[:, None])[:, :, None, None]))


def toy_built(nan_calls=()):
    torch.manual_seed(123)
    images = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(7)) * 2 - 1
    info = DatasetInfo("toy", 1, (4, 4), (0.0, 255.0), 256, None)
    return Built(ImageDataset(images, None, info), Model(ToyNet(), ToyProcess(nan_calls)), RunConfig())


def toy_config(*overrides):
    base = ["train.batch_size=8", "train.lr=0.01", "train.warmup_steps=2", "train.log_every=1",
            "train.checkpoint_every=5", "train.device=cpu", "train.ema_decay=0.9", "sample.num=0"]
    return RunConfig().with_overrides(base + list(overrides))
'''


@pytest.fixture()
def toys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-ins as an importable module `standins` (for this process and subprocesses)."""
    (tmp_path / "standins.py").write_text(STANDINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import standins

    return importlib.reload(standins)


def _script(tmp_path: Path, body: str) -> Path:
    """A Python script in tmp_path that imports the stand-ins and runs `body` on one thread."""
    path = tmp_path / f"script_{abs(hash(body))}.py"
    path.write_text(f"import sys, torch\nsys.path.insert(0, {str(tmp_path)!r})\ntorch.set_num_threads(1)\n"
                    f"from standins import *\nfrom diffspace.training import train\n{textwrap.dedent(body)}")
    return path


def _losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(run_dir)]


# ----- small parts --------------------------------------------------------------------------

def test_ema_decay_follows_the_k_diffusion_warmup() -> None:
    assert ema_decay(0, 0.999, 1.0, 1.0) == 0.0
    assert ema_decay(9, 0.999, 1.0, 1.0) == pytest.approx(1 - 1 / 10)
    assert ema_decay(1000, 0.999, 2 / 3, 1.0) == pytest.approx(1 - 1001 ** (-2 / 3))
    assert ema_decay(10**9, 0.999, 2 / 3, 1.0) == 0.999


def test_ema_update_is_the_weighted_average() -> None:
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, 0.5, 1.0, 1.0)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)                       # decay 0: copies
    torch.testing.assert_close(ema.module.weight, start + 1.0)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)                       # decay min(0.5, 1 − 2⁻¹) = 0.5
    torch.testing.assert_close(ema.module.weight, start + 1.5)
    assert not ema.module.weight.requires_grad


def test_warmup_is_linear_then_constant() -> None:
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_batch_order_visits_each_epoch_as_a_permutation_and_resumes() -> None:
    order = BatchOrder(10, 3, seed=1)
    epoch0 = torch.cat([order.next() for _ in range(3)])
    assert sorted(epoch0.tolist()) != list(range(10)) and len(set(epoch0.tolist())) == 9
    position = order.state_dict()
    ahead = [order.next() for _ in range(4)]
    assert order.epoch == 2
    again = BatchOrder(10, 3, seed=1)
    again.load_state_dict(position)
    for a, b in zip(ahead, [again.next() for _ in range(4)]):
        assert torch.equal(a, b)
    assert not torch.equal(BatchOrder(10, 10, 1).next(), BatchOrder(10, 10, 2).next())
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3) != mix_seed(1, 3, 2)
    with pytest.raises(ValueError, match="larger than the data set"):
        BatchOrder(4, 5, 0)


def test_bf16_runs_only_the_network_in_autocast() -> None:
    seen = {}

    class Probe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen["autocast"] = torch.is_autocast_enabled("cpu")
            return self.lin(x)

    x = torch.randn(2, 4)
    out = NetCall(Probe(), "cpu", bf16=True, compile=False)(x, torch.zeros(2))
    assert seen["autocast"] and out.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    plain = NetCall(Probe(), "cpu", bf16=False, compile=False)(x, torch.zeros(2))
    assert not seen["autocast"] and plain.dtype == torch.float32


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write(target, lambda h: h.write(b"old"))

    def broken(handle) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_checkpoints_keep_the_last_k_and_ignore_temporary_files(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        save_checkpoint(tmp_path, step, {"step": step}, keep_last=2)
    (tmp_path / "checkpoints" / ".tmp-99999-step-00000025.pt").write_bytes(b"torn")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000015.pt", "step-00000020.pt"]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 20
    save_checkpoint(tmp_path, 25, {"step": 25}, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000020.pt", "step-00000020.pt.json", "step-00000025.pt", "step-00000025.pt.json"]


def test_rng_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"rng": rng_state()}, keep_last=1)
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(latest_checkpoint(tmp_path))["rng"])
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


# ----- the loop, in process -----------------------------------------------------------------

def test_a_run_directory_holds_config_metrics_checkpoints_and_weights(toys, tmp_path: Path) -> None:
    cfg = toys.toy_config("train.steps=12", "train.keep_last=2")
    built = toys.toy_built()
    result = train(cfg, tmp_path / "run", quiet=True, built=built)
    run = tmp_path / "run"
    assert result.step == 12 and result.resumed_from is None
    assert RunConfig.load(run / "config.yaml") == cfg
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert set(rows[0]) == {"step", "loss", "lr", "grad_norm", "images_per_sec"}
    assert [r["lr"] for r in rows[:3]] == [0.005, 0.01, 0.01]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert [p.name for p in list_checkpoints(run)] == ["step-00000010.pt", "step-00000012.pt"]
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 12 and state["data"] == {"epoch": 2, "index": 16}
    weights = load_file(result.model_dir / "model.safetensors")
    for key, value in state["ema"]["module"].items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0)
    assert not torch.equal(weights["net.out.weight"], state["model"]["net.out.weight"])


def test_resuming_continues_the_exact_loss_sequence(toys, tmp_path: Path) -> None:
    full = train(toys.toy_config("train.steps=10"), tmp_path / "full", quiet=True, built=toys.toy_built())
    train(toys.toy_config("train.steps=7"), tmp_path / "part", quiet=True, built=toys.toy_built())
    again = train(toys.toy_config("train.steps=10"), tmp_path / "part", quiet=True, built=toys.toy_built())
    assert again.resumed_from == 7
    assert _losses(tmp_path / "part") == _losses(full.run_dir)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(again.checkpoint)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_resume_refuses_a_config_that_changes_the_training(toys, tmp_path: Path) -> None:
    train(toys.toy_config("train.steps=5"), tmp_path / "run", quiet=True, built=toys.toy_built())
    with pytest.raises(ConfigError, match=r"train.weight_decay: run has 0.0, given 0.5"):
        train(toys.toy_config("train.steps=6", "train.weight_decay=0.5"), tmp_path / "run", quiet=True,
              built=toys.toy_built())


def test_resume_may_change_the_learning_rate_and_says_so(toys, tmp_path: Path, capsys) -> None:
    train(toys.toy_config("train.steps=5"), tmp_path / "run", quiet=True, built=toys.toy_built())
    capsys.readouterr()
    result = train(toys.toy_config("train.steps=8", "train.lr=0.002"), tmp_path / "run", quiet=True,
                   built=toys.toy_built())
    assert result.resumed_from == 5
    assert "train.lr changed from 0.01 to 0.002 at step 5" in capsys.readouterr().err
    assert [r["lr"] for r in read_metrics(tmp_path / "run")] == [0.005] + [0.01] * 4 + [0.002] * 3
    assert RunConfig.load(tmp_path / "run" / "config.yaml").train.lr == 0.002
    train(toys.toy_config("train.steps=9", "train.lr=0.002"), tmp_path / "run", quiet=True, built=toys.toy_built())
    assert "train.lr changed" not in capsys.readouterr().err


def test_a_nonfinite_step_is_skipped_and_training_recovers(toys, tmp_path: Path, capsys) -> None:
    built = toys.toy_built(nan_calls={3})
    train(toys.toy_config("train.steps=6"), tmp_path / "run", quiet=True, built=built)
    rows = read_metrics(tmp_path / "run")
    assert math.isnan(rows[2]["loss"]) and all(math.isfinite(r["loss"]) for i, r in enumerate(rows) if i != 2)
    assert "step 3: NaN/Inf gradient norm, step skipped" in capsys.readouterr().err


def test_repeated_nonfinite_steps_stop_with_a_checkpoint(toys, tmp_path: Path) -> None:
    built = toys.toy_built(nan_calls=range(3, 100))
    start = {k: v.clone() for k, v in built.model.state_dict().items()}
    with pytest.raises(TrainingError, match="3 steps in a row had a NaN/Inf gradient; stopped at step 5"):
        train(toys.toy_config("train.steps=20", "train.max_nonfinite=3"), tmp_path / "run", quiet=True, built=built)
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert state["step"] == 5 and state["nonfinite"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not torch.equal(state["model"]["net.out.weight"], start["net.out.weight"])


def test_sample_grids_during_training_use_the_configured_sampler(toys, tmp_path: Path, monkeypatch) -> None:
    from diffspace import process
    from diffspace.noise import uniform_noise
    from diffspace.sampling import SampleResult

    calls = []

    def toy_sampler(process, net, shape, steps, generator=None, **kwargs):
        calls.append((shape, steps))
        return SampleResult(uniform_noise(shape, generator, "cpu") * 2 - 1, steps)

    record = process.Family("toy", process.ProcessConfig, lambda *a: None, {"toy": toy_sampler})
    monkeypatch.setitem(process._FAMILIES, "toy", record)
    cfg = toys.toy_config("train.steps=4", "train.sample_every=2", "sample.sampler=toy", "sample.num=6",
                          "sample.steps=3")
    result = train(cfg, tmp_path / "run", quiet=True, built=toys.toy_built())
    names = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert names == ["final.png", "step-000002.png", "step-000004.png"]
    assert result.grid == tmp_path / "run" / FINAL_GRID
    assert calls == [((6, 1, 4, 4), 3)] * 2


def test_progress_in_a_log_file_is_one_plain_line_per_logged_row(toys, tmp_path: Path, capsys) -> None:
    train(toys.toy_config("train.steps=6", "train.log_every=2"), tmp_path / "run", quiet=False, built=toys.toy_built())
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert "\r" not in err and [line.split()[1] for line in lines] == ["2/6", "4/6", "6/6"]
    assert all(re.fullmatch(r"step \d/6  loss \d+\.\d{4}  \d+ images/s  ETA \d+s", line) for line in lines), lines
    assert lines[-1].endswith("ETA 0s")


def test_progress_on_a_terminal_is_a_bar_and_durations_read_as_clock_time() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress(10, 0, enabled=True, stream=screen)
    progress.step()
    progress.row({"step": 1, "loss": 0.5, "images_per_sec": 100.0})
    progress.close()
    assert "\r" in screen.getvalue() and "loss=0.5000" in screen.getvalue()
    assert [format_duration(s) for s in (0.4, 42, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]


def test_tensorboard_logging_writes_events_or_says_what_to_install(toys, tmp_path: Path) -> None:
    cfg = toys.toy_config("train.steps=2", "train.tensorboard=true")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(TensorBoardMissing, match=r"pip install 'diffspace\[tensorboard\]'"):
            train(cfg, tmp_path / "run", quiet=True, built=toys.toy_built())
    else:
        train(cfg, tmp_path / "run", quiet=True, built=toys.toy_built())
        assert any((tmp_path / "run" / "tensorboard").iterdir())


# ----- subprocesses: SIGKILL and DDP --------------------------------------------------------

def _start_and_stop(script: Path, run: Path, sig: int) -> subprocess.Popen:
    """Start the slowed-down training script and send `sig` once it has a checkpoint at step ≥ 12."""
    proc = subprocess.Popen([sys.executable, str(script), str(run)], env={**os.environ, "TOY_DELAY": "0.04"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = latest_checkpoint(run)
        if found is not None and load_checkpoint(found)["step"] >= 12:
            break
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    return proc


def test_runs_stopped_by_sigkill_or_sigint_resume_with_the_identical_loss_sequence(toys, tmp_path: Path) -> None:
    body = """
    from diffspace.training import TrainingInterrupted
    try:
        train(toy_config("train.steps=60", "train.checkpoint_every=4"), sys.argv[1], quiet=True, built=toy_built())
    except TrainingInterrupted as err:
        print(err)
        sys.exit(3)
    """
    script = _script(tmp_path, body)
    subprocess.run([sys.executable, str(script), str(tmp_path / "whole")], check=True)
    whole = _losses(tmp_path / "whole")
    assert len(whole) == 60

    killed = _start_and_stop(script, tmp_path / "killed", signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert 12 <= load_checkpoint(latest_checkpoint(tmp_path / "killed"))["step"] < 60
    subprocess.run([sys.executable, str(script), str(tmp_path / "killed")], check=True)
    assert _losses(tmp_path / "killed") == whole

    interrupted = _start_and_stop(script, tmp_path / "interrupted", signal.SIGINT)
    assert interrupted.wait() == 3
    rows = read_metrics(tmp_path / "interrupted")
    assert load_checkpoint(latest_checkpoint(tmp_path / "interrupted"))["step"] == rows[-1]["step"] < 60
    subprocess.run([sys.executable, str(script), str(tmp_path / "interrupted")], check=True)
    assert _losses(tmp_path / "interrupted") == whole


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(toys, tmp_path: Path) -> None:
    """train.batch_size is the global batch, split over ranks: 2 gloo processes (batch 4 each) equal 1 process
    (batch 8) of the same config, with no grad_accum to match; 1 process with 2 micro-batches equals both."""
    body = """
    run, accum = sys.argv[1], sys.argv[2]
    train(toy_config("train.steps=6", f"train.grad_accum={accum}"), run, quiet=True, built=toy_built())
    """
    script = _script(tmp_path, body)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(script), str(tmp_path / "ddp"), "1"], check=True, env=env, timeout=120)
    subprocess.run([sys.executable, str(script), str(tmp_path / "single"), "1"], check=True, env=env)
    subprocess.run([sys.executable, str(script), str(tmp_path / "accumulated"), "2"], check=True, env=env)
    ddp = load_checkpoint(latest_checkpoint(tmp_path / "ddp"))
    single = load_checkpoint(latest_checkpoint(tmp_path / "single"))
    accumulated = load_checkpoint(latest_checkpoint(tmp_path / "accumulated"))
    assert ddp["step"] == single["step"] == 6
    assert len(ddp["rng"]) == 2
    for key in single["model"]:
        torch.testing.assert_close(ddp["model"][key], single["model"][key], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(accumulated["model"][key], single["model"][key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(_losses(tmp_path / "ddp")), torch.tensor(_losses(tmp_path / "single")))


@pytest.mark.slow
def test_train_compile_true_trains_the_quickstart_config_end_to_end(tmp_path: Path) -> None:
    """train.compile=true (torch.compile of the network, inductor's C++ backend on the CPU) trains 2 steps of the
    quickstart config and writes a model that loads and samples; its losses and gradient norms are the eager run's
    to 10⁻⁴ (step 2's loss follows from step 1's compiled gradients). Slow: the cold compile of the U-Net's forward
    and backward takes 1–3 minutes on a shared 2-core CPU."""
    import diffspace
    from diffspace.config import load_preset

    cfg = load_preset("quickstart").with_overrides(
        ["train.steps=2", "train.log_every=1", "train.checkpoint_every=2", "sample.num=0", "train.device=cpu"])
    rows = {}
    for flag in ("false", "true"):
        train(cfg.with_overrides([f"train.compile={flag}"]), tmp_path / flag, quiet=True)
        rows[flag] = read_metrics(tmp_path / flag)
    try:
        for name in ("loss", "grad_norm"):
            compiled, eager = ([row[name] for row in rows[flag]] for flag in ("true", "false"))
            assert len(compiled) == 2 and all(math.isfinite(v) for v in compiled)
            assert compiled == pytest.approx(eager, rel=1e-4), name
        model = diffspace.load(tmp_path / "true" / "model", device="cpu")
        samples = model.sample(2, steps=2, seed=0)
        assert samples.shape == (2, 1, 8, 8) and torch.isfinite(samples).all()
    finally:
        torch._dynamo.reset()
