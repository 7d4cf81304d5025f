"""`diffspace eval`: the report's fields and grid on a few-step quickstart run; metric-name and applicability errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffspace.cli import main
from diffspace.config import ConfigError, load_preset
from diffspace.evaluate import METRICS, EvalOptions, evaluate_path, parse_metrics
from diffspace.training import train
from test_domain_metrics import shared_data

FAST = ["train.steps=2", "train.batch_size=16", "train.device=cpu", "train.checkpoint_every=2",
        "sample.num=0", "data.max_items=64"]
FIELDS = {"metric", "value", "stderr", "num_samples", "nfe", "sampler", "steps", "checkpoint_step", "device", "details"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "run"
    train(load_preset("quickstart").with_overrides(FAST), path, quiet=True)
    return path


def test_report_has_every_field_and_a_grid(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    options = EvalOptions(num=6, steps=3, sampler="euler_maruyama", bpd_num=10, device="cpu")
    evaluate_path(run_dir, parse_metrics("function,bpd"), out, options)
    report = json.loads(out.read_text())
    assert report["checkpoint_step"] == 2 and report["device"] == "cpu" and report["run"] == str(run_dir)
    names = [entry["metric"] for entry in report["entries"]]
    assert names == ["spectrum_error_max", "sliced_wasserstein", "riesz_mmd", "bpd"]
    for entry in report["entries"]:
        assert set(entry) == FIELDS and entry["checkpoint_step"] == 2 and entry["device"] == "cpu"
    function, bpd = report["entries"][0], report["entries"][-1]
    assert function["num_samples"] == 6 and function["sampler"] == "euler_maruyama" and function["steps"] == 3
    assert function["nfe"] == 4  # 3 steps + the final denoising call
    assert bpd["num_samples"] == 10 and bpd["stderr"] > 0 and bpd["details"]["dequantized"]
    assert bpd["details"]["split"] == "test" and bpd["details"]["levels"] == 17 and bpd["value"] > 0
    grid = Image.open(report["grid"])
    assert Path(report["grid"]) == out.with_suffix(".png") and grid.size[0] > 8


def test_data_metrics_alone_draw_no_samples(run_dir: Path, tmp_path: Path) -> None:
    report = evaluate_path(run_dir, ["bpd"], tmp_path / "r.json", EvalOptions(bpd_num=4, device="cpu"))
    assert report.grid is None and not (tmp_path / "r.png").exists()


def test_unknown_and_inapplicable_metrics_are_named(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'fid'"):
        parse_metrics("fid,fdi")
    with pytest.raises(ConfigError, match="packaged ones exist for mnist, fashion-mnist"):
        evaluate_path(run_dir, ["domain_fid"], tmp_path / "r.json", EvalOptions(num=4, steps=2, device="cpu"))
    with pytest.raises(ConfigError, match=r"\.json"):
        evaluate_path(run_dir, ["bpd"], tmp_path / "r.txt", EvalOptions(device="cpu"))


def test_eval_command_prints_each_figure_with_its_sample_count(run_dir: Path, tmp_path: Path, capsys) -> None:
    code = main(["eval", "--run", str(run_dir), "--metrics", "bpd", "--bpd-num", "4", "--device", "cpu",
                 "--out", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and "bpd = " in out and "(n = 4; elbo (GaussianDiffusion); step 2; cpu)" in out
    assert f"report: {tmp_path / 'r.json'}" in out
    code = main(["eval", "--run", str(run_dir), "--metrics", "fdi", "--out", str(tmp_path / "r.json")])
    assert code == 2 and "did you mean 'fid'" in capsys.readouterr().err


def test_eval_help_names_every_metric(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in METRICS)


def test_sample_extend_right_widens_a_column_sequential_run(tmp_path: Path, capsys) -> None:
    run = tmp_path / "columns"
    train(load_preset("quickstart").with_overrides(
        [*FAST, "process.schedule=soft", "process.labels=column", "process.softness=0.2"]), run, quiet=True)
    code = main(["sample", "--run", str(run), "--num", "2", "--steps", "3", "--extend-right", "5",
                 "--out", str(tmp_path / "wide.npz")])
    assert code == 0 and "extended by 5 columns" in capsys.readouterr().out
    assert np.load(tmp_path / "wide.npz")["samples"].shape == (2, 1, 8, 13)
    code = main(["sample", "--run", str(run), "--num", "2", "--extend-right", "5", "--resolution", "16",
                 "--out", str(tmp_path / "x.npz")])
    assert code == 2 and "leave out --resolution" in capsys.readouterr().err


def test_domain_metrics_of_an_mnist_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Domain FID, precision/recall and class balance on a 2-step MNIST run (300 reference images, cached)."""
    root = shared_data("mnist")
    monkeypatch.setenv("DIFFSPACE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "mnist"
    train(load_preset("quickstart").with_overrides([*FAST, "data.name=mnist"]), run, data_dir=root, quiet=True)
    options = EvalOptions(num=8, steps=2, reference_num=300, data_dir=str(root), device="cpu")
    report = evaluate_path(run, ["domain_fid", "precision_recall", "class_balance"], tmp_path / "r.json", options)
    entries = {e.metric: e for e in report.entries}
    assert set(entries) == {"domain_fid", "precision", "recall", "class_balance_tv"}
    assert entries["domain_fid"].value > 0 and entries["domain_fid"].details["num_reference"] == 300
    assert 0 <= entries["precision"].value <= 1 and entries["precision"].stderr is not None
    balance = entries["class_balance_tv"]
    assert 0 <= balance.value <= 1 and len(balance.details["reference_predicted"]) == 10
    assert sum(balance.details["frequencies"]) == pytest.approx(1.0) and balance.num_samples == 8
    assert len(list((tmp_path / "cache" / "stats").iterdir())) == 1
