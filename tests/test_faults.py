"""Fault injection: every fault a user or a machine inflicts ends in a resumed run or in one clear line.

Broken checkpoints (empty, truncated, corrupt, unrecorded and unreadable) fall back to the newest
intact one; NaN/Inf data are data errors; read-only run directories and outputs are refused before
any work; a full disk during a checkpoint write keeps the previous checkpoint; SIGTERM in a sample
grid saves a checkpoint within seconds; Ctrl-C never prints a traceback; one trainer per run
directory; a dead parent ends a torchrun worker. Runs are the quickstart preset at a few steps.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffspace import checkpoint
from diffspace.checkpoint import (
    RunError, check_writable, list_checkpoints, load_checkpoint, load_latest, record_path, save_checkpoint,
    verify_checkpoint,
)
from diffspace.cli import main
from diffspace.data import DataConfig, DataError, load_dataset
from diffspace.data.registry import check_values
from diffspace.training.lock import LOCK_FILE, RunLock

FAST = ["train.batch_size=16", "train.device=cpu", "train.checkpoint_every=2", "sample.num=4", "sample.steps=2",
        "data.max_items=64"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickstart run trained to step 4 with checkpoints at steps 2 and 4 (each test copies it)."""
    run = tmp_path_factory.mktemp("template") / "run"
    assert main(["train", "--quiet", "--run-dir", str(run), "train.steps=4", *FAST]) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt", "step-00000004.pt"]
    return run


@pytest.fixture()
def run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m diffspace.cli ARGS` in the background, stdout and stderr captured."""
    return subprocess.Popen([sys.executable, "-m", "diffspace.cli", *args], cwd=cwd, env=_subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """The pids of the processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _ended(pid: int) -> bool:
    """True when the process has exited (gone, or a zombie that nobody reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


# ----- checkpoints ------------------------------------------------------------------------------------

def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate_unrecorded(path: Path) -> None:
    record_path(path).unlink()
    _truncate(path)


@pytest.mark.parametrize(("damage", "problem"), [
    (_empty, "is empty (0 bytes)"),
    (_truncate, "is truncated ("),
    (_flip_a_byte, "is corrupt (SHA-256"),
    (_truncate_unrecorded, "cannot be loaded (RuntimeError: PytorchStreamReader"),
])
def test_a_broken_newest_checkpoint_is_reported_and_training_resumes_from_the_previous(
        damage, problem: str, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    newest = run / "checkpoints" / "step-00000004.pt"
    damage(newest)
    code, out, err = _run(["export", "--run", str(run), "--out", str(run / "exported")], capsys)
    assert code == 0 and "model folder of step 2" in out
    assert err.startswith(f"checkpoint {newest} {problem}") and len(err.strip().splitlines()) == 1
    assert err.strip().endswith("; using the older step-00000002.pt")
    assert newest.exists()  # readers never rename or delete

    code, out, err = _run(["train", "--quiet", "--run-dir", str(run), "train.steps=6"], capsys)
    assert code == 0 and "to step 6 (resumed from step 2)" in out
    assert f"checkpoint {newest} {problem}" in err and "renamed it step-00000004.pt.corrupt" in err
    assert (run / "checkpoints" / "step-00000004.pt.corrupt").is_file()  # set aside, not deleted
    assert load_checkpoint(run / "checkpoints" / "step-00000004.pt")["step"] == 4  # rewritten by the resumed run
    assert all(verify_checkpoint(p) is None for p in list_checkpoints(run))


def test_sample_uses_the_newest_intact_checkpoint(run: Path, tmp_path: Path, capsys) -> None:
    _truncate(run / "checkpoints" / "step-00000004.pt")
    out = tmp_path / "s.npz"
    code, _, err = _run(["sample", "--run", str(run), "--num", "2", "--steps", "2", "--out", str(out)], capsys)
    assert code == 0 and "using the older step-00000002.pt" in err
    assert int(np.load(out)["step"]) == 2


def test_every_checkpoint_broken_is_one_line_and_exit_2_with_nothing_deleted(run: Path, capsys) -> None:
    for path in list_checkpoints(run):
        _truncate(path)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    for argv in (["train", "--quiet", "--run-dir", str(run), "train.steps=6"],
                 ["sample", "--run", str(run), "--num", "2", "--out", str(run / "x.png")],
                 ["export", "--run", str(run)]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "no usable checkpoint" in err and "all 2 are broken" in err and "nothing was deleted" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_checkpoints_written_before_records_existed_still_load(run: Path, capsys) -> None:
    for path in list_checkpoints(run):
        record_path(path).unlink()
    code, out, err = _run(["train", "--quiet", "--run-dir", str(run), "train.steps=5"], capsys)
    assert code == 0 and "resumed from step 4" in out and "checkpoint" not in err


def test_retention_never_deletes_older_checkpoints_before_the_new_one_is_complete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1}, keep_last=1)
    save_checkpoint(tmp_path, 2, {"step": 2}, keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002.pt"]
    record = json.loads(record_path(list_checkpoints(tmp_path)[0]).read_text())
    assert record["file"] == "step-00000002.pt" and record["bytes"] == list_checkpoints(tmp_path)[0].stat().st_size

    def no_space(state, handle) -> None:
        handle.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 3, {"step": 3}, keep_last=1)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002.pt",
                                                                          "step-00000002.pt.json"]
    assert load_latest(tmp_path)[1]["step"] == 2


# ----- data ---------------------------------------------------------------------------------------------

def _darcy(root: Path, y: torch.Tensor) -> Path:
    folder = root / "darcy"
    folder.mkdir(parents=True)
    torch.save({"x": torch.zeros(y.shape, dtype=torch.bool), "y": y}, folder / "darcy_train_16.pt")
    return root


def test_nan_and_inf_data_are_a_data_error_naming_set_count_and_first_item(tmp_path: Path, capsys) -> None:
    y = torch.rand(10, 16, 16)
    y[3, 4, 5], y[3, 0, 0], y[7, 1, 1] = float("nan"), float("inf"), -float("inf")
    root = _darcy(tmp_path / "data", y)
    with pytest.raises(DataError, match=r"data set darcy: 3 NaN/Inf values in 2 of 10 items, the first in item 3"):
        load_dataset(DataConfig(name="darcy"), root)
    assert load_dataset(DataConfig(name="darcy", max_items=3), root).images.shape[0] == 3  # unused items unchecked
    code, _, err = _run(["train", "--quiet", "--run-dir", str(tmp_path / "run"), "--data-dir", str(root),
                         "data.name=darcy", "train.steps=2", *FAST], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "3 NaN/Inf values" in err


def test_the_value_check_counts_across_its_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffspace.data.registry as registry

    monkeypatch.setattr(registry, "CHECK_CHUNK", 3)  # 10 items: chunks of 3, 3, 3, 1
    images = torch.zeros(10, 1, 2, 2)
    images[4, 0, 0, 0], images[4, 0, 1, 1], images[9, 0, 0, 1] = float("nan"), float("inf"), float("nan")
    images[1, 0, 0, 0] = 2.0  # out of range, but NaN/Inf are reported first
    with pytest.raises(DataError, match=r"data set x: 3 NaN/Inf values in 2 of 10 items, the first in item 4"):
        check_values(images, "x", levels=256)
    images[4], images[9] = 0.0, 0.0
    images[8, 0, 1, 0] = -1.5
    with pytest.raises(DataError, match=r"2 out-of-range .* values in 2 of 10 items, the first in item 1"):
        check_values(images, "x", levels=256)


def test_discrete_data_outside_model_space_are_a_data_error() -> None:
    images = torch.zeros(5, 1, 2, 2)
    images[2, 0, 1, 1] = 1.5
    with pytest.raises(DataError, match=r"data set x: 1 out-of-range .* values in 1 of 5 items, the first in item 2"):
        check_values(images, "x", levels=256)
    check_values(images, "x", levels=None)  # continuous fields may take any finite value
    check_values(torch.linspace(-1, 1, 256).view(256, 1, 1, 1), "x", levels=256)


def test_a_nonfinite_loss_from_nonfinite_input_is_a_data_error_not_a_learning_rate_problem(tmp_path: Path) -> None:
    from diffspace.build import build
    from diffspace.config import load_preset
    from diffspace.training import train

    cfg = load_preset("quickstart").with_overrides(["train.steps=4", *FAST, "sample.num=0"])
    built = build(cfg)
    built.dataset.images[5, 0, 2, 3] = float("nan")
    with pytest.raises(DataError, match=r"NaN/Inf input values \(first in item 5 of data set digits\).*not the "
                                        r"learning rate.*checkpoint: .*step-0000000\d\.pt"):
        train(cfg, tmp_path / "run", quiet=True, built=built)
    assert list_checkpoints(tmp_path / "run")


# ----- the file system ----------------------------------------------------------------------------------

def _unprivileged() -> list[str]:
    """A command prefix under which a chmod'ed folder is read-only: none for a normal user; for root,
    setpriv without the capabilities that override file permissions (skipped where it cannot)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"]).returncode != 0:
        pytest.skip("running as root without a working setpriv: a chmod'ed folder stays writable for root")
    return prefix


def test_read_only_run_directory_and_outputs_are_refused_before_any_work(run: Path, tmp_path: Path) -> None:
    """Each command, in a subprocess that cannot write to a read-only folder. The outputs are refused before
    the work: the train command's data set does not exist (loading it first would be a data error, exit 1),
    and sampling 10⁶ images with 10⁴ steps would outlast the timeout."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "old-run").mkdir()
    locked.chmod(0o555)
    (locked / "old-run").chmod(0o555)
    empty = tmp_path / "no-data"
    empty.mkdir()
    cases = [
        (["train", "--run-dir", str(locked / "new-run"), "--data-dir", str(empty), "data.name=mnist"],
         f"run directory {locked / 'new-run'} is not writable"),
        (["train", "--run-dir", str(locked / "old-run"), "--data-dir", str(empty), "data.name=mnist"],
         f"run directory {locked / 'old-run'} is not writable"),
        (["sample", "--run", str(run), "--num", "1000000", "--steps", "10000", "--out", str(locked / "s.png")],
         f"--out {locked / 's.png'} is not writable"),
        (["eval", "--run", str(run), "--metrics", "bpd", "--bpd-num", "1000000", "--out", str(locked / "r.json")],
         f"--out {locked / 'r.json'} is not writable"),
        (["export", "--run", str(run), "--out", str(locked / "sub" / "model")],
         f"--out {locked / 'sub' / 'model'} is not writable"),
    ]
    script = ("import contextlib, io, json, sys\nfrom diffspace.cli import main\nfor argv in json.loads(sys.argv[1]):\n"
              "    err = io.StringIO()\n    with contextlib.redirect_stderr(err):\n        code = main(argv)\n"
              "    print(json.dumps([code, err.getvalue()]))\n")
    prefix = _unprivileged()
    try:
        done = subprocess.run([*prefix, sys.executable, "-c", script, json.dumps([argv for argv, _ in cases])],
                              capture_output=True, text=True, env=_subprocess_env(), timeout=300)
        assert done.returncode == 0, done.stderr
        for (argv, message), line in zip(cases, done.stdout.splitlines(), strict=True):
            code, err = json.loads(line)
            assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    finally:
        locked.chmod(0o755)
        (locked / "old-run").chmod(0o755)
    assert not (locked / "new-run").exists() and not any((locked / "old-run").iterdir())


def test_outputs_that_are_folders_or_lie_under_files_are_refused(run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a-file").write_text("")
    for out, message in ((tmp_path, "is a folder; give a file name"),
                         (tmp_path / "a-file" / "s.png", "is a file, not a folder")):
        code, _, err = _run(["sample", "--run", str(run), "--num", "1", "--out", str(out)], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(RunError, match="is a file, not a folder"):
        check_writable(tmp_path / "a-file", "run directory", folder=True)


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_checkpoint(
        run: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    real_open = open

    class FullDisk:
        """A file that takes 64 KiB, then fails like a full disk."""

        def __init__(self, path, mode):
            self.file, self.left = real_open(path, mode), 64 * 1024

        def write(self, data) -> int:
            if len(data) > self.left:
                self.file.write(bytes(data[: self.left]))
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(data)
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    def full_for_checkpoints(path, mode="r", *args, **kwargs):
        if Path(path).name.endswith(".pt") and "w" in mode:
            return FullDisk(path, mode)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", full_for_checkpoints, raising=False)
    code, _, err = _run(["train", "--quiet", "--run-dir", str(run), "train.steps=6", "train.keep_last=1"], capsys)
    previous = run / "checkpoints" / "step-00000004.pt"
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert (f"could not write the checkpoint of step 6 (No space left on device); the newest complete checkpoint is "
            f"{previous}; free disk space and run the same command to resume") in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000002.pt", "step-00000002.pt.json", "step-00000004.pt", "step-00000004.pt.json"]
    assert verify_checkpoint(previous) is None and load_checkpoint(previous)["step"] == 4
    assert not (run / LOCK_FILE).read_bytes()  # the lock is released on errors too
    monkeypatch.undo()
    code, out, _ = _run(["train", "--quiet", "--run-dir", str(run), "train.steps=6", "train.keep_last=1"], capsys)
    assert code == 0 and "resumed from step 4" in out
    assert [p.name for p in list_checkpoints(run)] == ["step-00000006.pt"]


def test_a_real_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """On a 12 MB tmpfs (a private mount namespace, where `unshare` allows one) the second 7 MB checkpoint
    does not fit: one line, exit 1, the first checkpoint verified intact."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["unshare", "--mount", "--map-root-user", "--"]
    if shutil.which("unshare") is None or subprocess.run([*mount, "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare --mount --map-root-user fails) for a small tmpfs")
    script = (f"mount -t tmpfs -o size=12m tmpfs {disk} && {sys.executable} -m diffspace.cli train --quiet "
              f"--run-dir {disk / 'run'} train.steps=4 {' '.join(FAST)}; echo status=$?; "
              f"{sys.executable} -c 'from diffspace.checkpoint import *; "
              f"print([(p.name, verify_checkpoint(p)) for p in list_checkpoints(\"{disk / 'run'}\")])'")
    done = subprocess.run([*mount, "sh", "-c", script], capture_output=True, text=True, env=_subprocess_env(),
                          timeout=300)
    assert "status=1" in done.stdout and "Traceback" not in done.stderr, done.stderr
    assert "could not write the checkpoint of step 4 (No space left on device)" in done.stderr
    assert "[('step-00000002.pt', None)]" in done.stdout


# ----- signals ------------------------------------------------------------------------------------------

SLOW_GRID = ["train.steps=4", "train.checkpoint_every=100", "train.sample_every=2", "train.log_every=1",
             "sample.num=64", "sample.steps=20000", "train.batch_size=16", "train.device=cpu", "data.max_items=64"]


def _in_grid(run: Path) -> bool:
    """True once the metrics of step 2 are written: the sample grid of step 2 starts right after."""
    metrics = run / "metrics.csv"
    return metrics.exists() and any(line.startswith("2,") for line in metrics.read_text().splitlines())


def test_sigterm_during_a_sample_grid_saves_a_checkpoint_within_seconds(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _cli(["train", "--quiet", "--run-dir", str(run), *SLOW_GRID], tmp_path)
    try:
        _wait_for(lambda: _in_grid(run), 120, "the step-2 sample grid")
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        saved = run / "checkpoints" / "step-00000002.pt"
        _wait_for(lambda: record_path(saved).exists(), 5, "the checkpoint after SIGTERM")
        assert time.monotonic() - sent <= 5
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    assert "interrupted at step 2; checkpoint: " in err and "sample grid abandoned" in err
    assert verify_checkpoint(saved) is None and load_checkpoint(saved)["step"] == 2
    assert not (run / "samples" / "step-000002.png").exists()


def test_sigterm_during_sampling_ends_it_within_seconds_with_one_line(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "many.npz"
    proc = _cli(["sample", "--run", str(run), "--num", "100000", "--steps", "10000", "--out", str(out)], tmp_path)
    try:
        maps = Path(f"/proc/{proc.pid}/maps")
        _wait_for(lambda: "torch" in maps.read_text(), 60, "the import of torch")
        time.sleep(3)  # loading the run, or already sampling
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - sent <= 5
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip() == "diffspace sample: interrupted" and not out.exists()


@pytest.mark.parametrize("gap", [0.0, 0.3])
def test_a_double_ctrl_c_in_a_grid_stops_at_once_without_a_traceback(gap: float, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _cli(["train", "--quiet", "--run-dir", str(run), *SLOW_GRID], tmp_path)
    try:
        _wait_for(lambda: _in_grid(run), 120, "the step-2 sample grid")
        proc.send_signal(signal.SIGINT)
        time.sleep(gap)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not (run / LOCK_FILE).read_bytes()


def test_ctrl_c_during_start_up_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    proc = _cli(["train", "--quiet", "--run-dir", str(tmp_path / "run"), "train.steps=2", *FAST], tmp_path)
    maps = Path(f"/proc/{proc.pid}/maps")
    _wait_for(lambda: "torch" in maps.read_text(), 60, "the import of torch")  # main() is running: it imports torch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().endswith("interrupted")


# ----- one trainer per run directory --------------------------------------------------------------------

def test_a_second_trainer_on_a_run_directory_is_refused_and_a_stale_lock_is_taken_over(
        tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    first = _cli(["train", "--quiet", "--run-dir", str(run), *SLOW_GRID], tmp_path)
    try:
        _wait_for(lambda: (run / LOCK_FILE).exists() and (run / LOCK_FILE).read_bytes(), 120, "the first trainer")
        code, _, err = _run(["train", "--quiet", "--run-dir", str(run), "train.steps=2", *FAST], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert f"{run} is being trained by pid {first.pid} on host {socket.gethostname()}" in err
    finally:
        first.kill()
        first.communicate()
    code, _, err = _run(["train", "--quiet", "--run-dir", str(run), "train.steps=2", *FAST], capsys)
    assert code == 0
    assert f"taking over the lock of {run} from pid {first.pid} on host {socket.gethostname()}" in err
    assert "which is no longer running" in err
    assert (run / LOCK_FILE).read_bytes() == b""


def test_run_lock_records_its_owner_and_refuses_other_hosts(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run"):
        record = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(RunError, match=f"is being trained by pid {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run").exists()  # a directory made only for the lock goes again
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    with pytest.raises(RunError, match=f"delete {tmp_path / 'kept' / LOCK_FILE} and start again"):
        RunLock(tmp_path / "kept").acquire()


def test_a_worker_ends_when_its_launcher_dies(tmp_path: Path) -> None:
    """The mechanism that ends torchrun workers whose launcher was killed: a parent starts a child that calls
    distributed.end_with_parent, the parent is SIGKILLed, the child receives SIGTERM and ends."""
    child = ("import sys, time\nfrom diffspace.training.distributed import end_with_parent\n"
             "assert end_with_parent()\nprint('ready', flush=True)\ntime.sleep(120)\n")
    parent = ("import subprocess, sys\n"
              f"proc = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE, text=True)\n"
              "assert proc.stdout.readline().strip() == 'ready'\nprint(proc.pid, flush=True)\nproc.wait()\n")
    launcher = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                                env=_subprocess_env())
    try:
        pid = int(launcher.stdout.readline())
        launcher.kill()
        launcher.wait()
        _wait_for(lambda: _ended(pid), 10, "the orphaned child to end")
    finally:
        launcher.kill()



@pytest.mark.slow
def test_killing_the_torchrun_launcher_ends_its_workers_with_a_checkpoint(tmp_path: Path) -> None:
    """torchrun with 2 gloo workers in a slow sample grid; SIGKILL the launcher alone: both workers get
    SIGTERM from the kernel, save the step-2 checkpoint together and end."""
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "diffspace.cli",
         "train", "--quiet", "--run-dir", str(run), *SLOW_GRID], cwd=tmp_path, env=_subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _in_grid(run), 180, "the step-2 sample grid")
        workers = _children(launcher.pid)
        assert len(workers) == 2
        launcher.kill()
        launcher.wait()
        _wait_for(lambda: all(_ended(pid) for pid in workers), 30, "the workers to end")
    finally:
        launcher.kill()
        for pid in _children(launcher.pid):
            os.kill(pid, signal.SIGKILL)
    saved = run / "checkpoints" / "step-00000002.pt"
    assert verify_checkpoint(saved) is None and len(load_checkpoint(saved)["rng"]) == 2
    assert not (run / LOCK_FILE).read_bytes()
