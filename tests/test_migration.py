"""Config version 2 (the `process:` tagged union) reads version-1 files: a run directory written before the
change samples and resumes exactly, and saved presets migrate to the same config."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from diffspace.sample import sample_model
from diffspace.config import CONFIG_VERSION, ConfigError, RunConfig, load_preset
from diffspace.training import read_metrics, train

FIXTURES = Path(__file__).parent / "fixtures" / "v1"


def test_a_version_1_run_directory_samples_and_resumes_exactly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    assert "version" not in yaml.safe_load((run / "config.yaml").read_text())
    report = sample_model(run, tmp_path / "s.npz", num=3, steps=4)
    samples = np.load(report.path)["samples"]
    assert report.step == 4 and samples.shape == (3, 1, 8, 8) and np.isfinite(samples).all()
    cfg = RunConfig.load(run / "config.yaml").with_overrides(["train.steps=6"])
    result = train(cfg, run, quiet=True)
    assert result.resumed_from == 4 and result.step == 6
    # the first four rows are the old run's; the resumed steps draw the per-sample loss randomness of this
    # version (one stream per row of the global batch), so they are new draws of the same losses' law
    expected, rows = read_metrics(_expected(tmp_path)), read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows[:4]] == [r["loss"] for r in expected[:4]]
    assert all(abs(a["loss"] - b["loss"]) < 0.2 for a, b in zip(rows[4:], expected[4:]))
    assert yaml.safe_load((run / "config.yaml").read_text())["version"] == CONFIG_VERSION


def _expected(tmp_path: Path) -> Path:
    """A folder whose metrics.csv is the run resumed to step 6 by the code that wrote it."""
    folder = tmp_path / "expected"
    folder.mkdir()
    shutil.copy(FIXTURES / "run-continued-metrics.csv", folder / "metrics.csv")
    return folder


@pytest.mark.parametrize(("preset", "resolved"), [
    ("gud-mnist-pca", ["process.dequantize=false"]),   # version 1 trained on the levels themselves
    ("blackout-binarized-mnist", ["process.max_count=1"]),     # now taken from the data unless set
    ("mdm-mnist-cld", ["process.levels=256"]),
])
def test_saved_version_1_configs_migrate_to_the_preset(preset: str, resolved: list[str]) -> None:
    flat = yaml.safe_load((FIXTURES / f"{preset}.yaml").read_text())
    assert "version" not in flat and {"blackout", "multivariate"} <= set(flat["process"])
    assert RunConfig.load(FIXTURES / f"{preset}.yaml") == load_preset(preset).with_overrides(resolved)


def test_a_config_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"version": CONFIG_VERSION + 1, "train": {"steps": 3}}))
    with pytest.raises(ConfigError, match=f"version {CONFIG_VERSION + 1}, written by a newer diffspace"):
        RunConfig.load(path)
