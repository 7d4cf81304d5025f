"""The `diffspace` command: help and version, presets, train/resume/sample/export end to end on a
few steps of the quickstart preset, and one clear line with the right exit status for user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from diffspace import __version__
from diffspace.cli import main
from diffspace.config import load_preset

FAST = ["train.steps=3", "train.batch_size=16", "train.device=cpu", "train.checkpoint_every=2",
        "sample.num=4", "sample.steps=2", "data.max_items=64"]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["export"], ["presets"], ["data"],
                                     ["data", "fetch"], ["data", "check"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: diffspace")


def test_presets_lists_names_with_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["presets"], capsys)
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert code == 0 and {"quickstart", "mnist"} <= set(lines)
    assert "digits" in lines["quickstart"] and "MNIST" in lines["mnist"]


def test_train_resume_sample_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(["train", "--quiet", *FAST], capsys)
    run = Path("runs/quickstart")
    assert code == 0
    assert f"samples: {run / 'samples/final.png'}" in out and (run / "samples/final.png").is_file()
    assert (run / "model" / "model.safetensors").is_file() and (run / "model" / "model.json").is_file()

    code, out, _ = _run(["train", "--quiet", "train.steps=4"], capsys)
    assert code == 0 and "to step 4 (resumed from step 3)" in out

    code, out, _ = _run(["sample", "--run", str(run), "--num", "5", "--steps", "2", "--out", "s.npz"], capsys)
    assert code == 0 and "wrote 5 samples to s.npz" in out
    data = np.load("s.npz")
    assert data["samples"].shape == (5, 1, 8, 8) and int(data["levels"]) == 17 and int(data["step"]) == 4
    for batch in ("2", "3"):
        argv = ["sample", "--run", str(run), "--num", "5", "--steps", "2", "--batch-size", batch, "--out", f"b{batch}.npz"]
        assert _run(argv, capsys)[0] == 0
        assert np.allclose(np.load(f"b{batch}.npz")["samples"], data["samples"], atol=1e-5)  # sample i: seed and i only

    code, out, _ = _run(["sample", "--run", str(run), "--num", "4", "--sampler", "euler_maruyama", "--no-ema",
                         "--out", "grid.png"], capsys)
    assert code == 0 and "euler_maruyama, 2 steps" in out and "raw weights" in out
    assert Image.open("grid.png").size == (19 * 8, 19 * 8)

    code, out, _ = _run(["export", "--run", str(run), "--out", "raw-model", "--no-ema"], capsys)
    assert code == 0 and "step 4 (gaussian, raw weights) to raw-model" in out
    assert any(key.startswith("net.") for key in load_file("raw-model/model.safetensors"))
    code, out, _ = _run(["sample", "--model", "raw-model", "--num", "4", "--sampler", "euler_maruyama",
                         "--out", "raw.png"], capsys)
    assert code == 0 and Image.open("raw.png").tobytes() == Image.open("grid.png").tobytes()

    code, _, err = _run(["train", "--quiet", "--preset", "quickstart", "--run-dir", str(run), "train.ema_decay=0.5"],
                        capsys)
    assert code == 2 and f"train.ema_decay: run has {load_preset('quickstart').train.ema_decay!r}, given 0.5" in err

    code, _, err = _run(["sample", "--run", str(run), "--num", "2", "--sampler", "hune", "--out", "x.png"], capsys)
    assert code == 2 and "did you mean 'heun'" in err


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["train", "train.stepz=3"], 2, "did you mean 'train.steps'"),
    (["train", "--preset", "quikstart"], 2, "did you mean 'quickstart'"),
    (["train", "train.lr=-1"], 2, "train.lr must be > 0.0"),
    (["train", "sample.sampler=tau_leaping"], 2, "sampler 'tau_leaping' does not fit process.kind=gaussian"),
    (["sample", "--run", "no/such/run", "--num", "2", "--out", "x.png"], 2, "no/such/run is neither a model folder nor a run directory"),
    (["sample", "--run", "no/such/run", "--num", "2", "--out", "x.jpg"], 2, "--out must end in .png"),
    (["sample", "--run", "no/such/run", "--num", "0", "--out", "x.png"], 2, "--num must be ≥ 1"),
    (["export", "--run", "no/such/run"], 2, "no/such/run is neither a model folder nor a run directory"),
    (["data", "check", "mnsit"], 2, "did you mean 'mnist'"),
    (["train", "data.split=tset"], 2, "data.split must be one of train, test; got 'tset' (did you mean 'test'?)"),
    (["train", "data.resolution=-8"], 2, "data.resolution must be ≥ 0; got -8"),
    (["train", "process.kind=blackout", "process.softness=0.3"], 2,
     "process.softness is a knob of the gaussian and flow families, but process.kind is 'blackout'"),
    (["train", "process.softness=0.3"], 2, "process.softness is read by the soft-conditioning schedule only"),
    (["train", "process.kind=blackot"], 2, "unknown process.kind 'blackot' (did you mean 'blackout'?)"),
    (["sample", "--run", "no/such/run", "--num", "2", "--out", "x.png", "--batch-size", "0"], 2,
     "--batch-size must be ≥ 1"),
])
def test_user_errors_are_one_line_with_an_exit_status(argv: list[str], status: int, message: str,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(argv, capsys)
    assert code == status
    assert message in err and len(err.strip().splitlines()) == 1


def test_data_check_reports_missing_files_with_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["data", "check", "mnist", "--data-dir", str(tmp_path)], capsys)
    assert code == 1 and "missing" in out
    code, out, _ = _run(["data", "check", "digits"], capsys)
    assert code == 0 and "shipped with diffspace" in out and "SHA-256 verified" in out


def test_the_installed_command_runs_without_tracebacks(tmp_path: Path) -> None:
    version = subprocess.run([sys.executable, "-m", "diffspace.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"diffspace {__version__}"
    bad = subprocess.run([sys.executable, "-m", "diffspace.cli", "train", "model.chanels=8"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == ("diffspace train: config error: unknown config key 'model.chanels' "
                                  "(did you mean 'model.channels'?)")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["presets"], ["train", "--help"], ["sample", "--help"],
                                  ["eval", "--help"], ["plot", "--help"]])
def test_version_help_and_presets_do_not_import_torch(argv: list[str]) -> None:
    """These answer at once (the issue measured 3.4–4 s, all of it `import torch`): the modules loaded by the
    command, not the wall time, are checked."""
    code = ("import sys\nfrom diffspace.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout
    assert done.stderr.strip().splitlines()[-1] == "no torch"


def test_sample_takes_every_sampler_with_its_grid_and_knobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--sampler NAME --steps N with --grid, --rho, --t-end and --option KEY=VALUE reach the sampler, the NFE is
    reported, the run's own sample knobs apply to its own sampler, and a knob the sampler lacks is one line, exit 2."""
    monkeypatch.chdir(tmp_path)
    assert _run(["train", "--quiet", *FAST, "sample.sampler=edm_heun", "sample.options.churn=5"], capsys)[0] == 0
    run = "runs/quickstart"
    for argv, expected in [
        (["--sampler", "dpmpp_2m", "--steps", "3", "--grid", "edm", "--rho", "5", "--option", "eta=0.5"],
         "dpmpp_2m, 3 steps, grid=edm, rho=5.0, eta=0.5: 4 network evaluations per batch"),
        (["--sampler", "ddim", "--steps", "3", "--grid", "windows", "--t-end", "0.01"],
         "ddim, 3 steps, grid=windows, t_end=0.01: 4 network evaluations"),
        (["--sampler", "dpmpp_3m"], "dpmpp_3m, 2 steps: 3 network evaluations"),  # the run's sample.steps=2
        ([], "edm_heun, 2 steps, churn=5: 5 network evaluations"),  # the run's own sampler and knob
    ]:
        code, out, err = _run(["sample", "--run", run, "--num", "2", *argv, "--out", "s.npz"], capsys)
        assert code == 0 and expected in out, (out, err)
    code, _, err = _run(["sample", "--run", run, "--num", "2", "--sampler", "ddim", "--option", "churn=1",
                         "--out", "s.npz"], capsys)
    assert code == 2 and "sampler 'ddim' has no option 'churn'" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["sample", "--run", run, "--num", "2", "--option", "churn", "--out", "s.npz"], capsys)
    assert code == 2 and "--option 'churn' is not of the form KEY=VALUE" in err
    code, _, err = _run(["sample", "--run", run, "--num", "2", "--sampler", "ddim", "--rho", "2", "--grid", "logsnr",
                         "--out", "s.npz"], capsys)
    assert code == 2 and "grid 'logsnr' takes no rho" in err
