"""Trained models that stand alone: the model folder, `diffspace.load`, and refusals of bad folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import diffspace
from diffspace.cli import main
from diffspace.config import load_preset
from diffspace.data import DataConfig, load_dataset
from diffspace.model import ModelError, export_run
from diffspace.training import train

TINY = ["data.name=digits", "data.max_items=256", "model.size=", "model.channels=8", "model.channel_mult=1",
        "model.num_res_blocks=1", "model.attn_resolutions=", "train.steps=4", "train.batch_size=16",
        "train.checkpoint_every=4", "train.device=cpu", "sample.num=0", "sample.steps=5"]


@pytest.fixture(scope="module")
def gud_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gud-mnist-pca (PCA basis and fitted prior fitted to the data, softness-conditioned) on the built-in digits."""
    run = tmp_path_factory.mktemp("gud") / "run"
    train(load_preset("gud-mnist-pca").with_overrides(TINY), run, quiet=True)
    return run


def _no_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every read of a data set fails from here on (as on a machine without the data)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the data set was read")

    monkeypatch.setattr("diffspace.data.registry.LOADERS", {name: refuse for name in
                                                             __import__("diffspace.data.registry").data.registry.LOADERS})
    monkeypatch.setenv("DIFFSPACE_DATA", str(tmp_path / "empty"))


def test_a_model_folder_samples_and_scores_without_the_data(gud_run: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder, card = export_run(gud_run, tmp_path / "model")
    assert {p.name for p in folder.iterdir()} == {"config.yaml", "model.safetensors", "model.json"}
    assert card.family == "gaussian" and card.shape == (1, 8, 8) and card.levels == 17 and card.step == 4
    from_run = diffspace.load(gud_run, device="cpu")
    images = load_dataset(DataConfig(name="digits", split="test", max_items=12)).images
    expected_samples = from_run.sample(6, steps=5, seed=3, batch_size=6)
    expected_bits = from_run.nll(images, seed=1)
    expected_grid = tmp_path / "run.npz"
    assert main(["sample", "--run", str(gud_run), "--num", "6", "--steps", "5", "--seed", "3",
                 "--out", str(expected_grid), "--quiet"]) == 0
    np.savez(tmp_path / "test.npz", images=images.numpy())

    _no_data(monkeypatch, tmp_path)
    model = diffspace.load(folder, device="cpu")
    assert model.config == from_run.config and model.config.process.basis == "pca"
    assert torch.equal(model.model.process.basis.components, from_run.model.process.basis.components)
    torch.testing.assert_close(model.sample(6, steps=5, seed=3, batch_size=6), expected_samples, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.nll(images, seed=1), expected_bits, rtol=0, atol=1e-6)
    assert main(["sample", "--model", str(folder), "--num", "6", "--steps", "5", "--seed", "3",
                 "--out", str(tmp_path / "model.npz"), "--quiet"]) == 0
    assert np.allclose(np.load(tmp_path / "model.npz")["samples"], np.load(expected_grid)["samples"], atol=1e-6)
    report = tmp_path / "eval.json"
    assert main(["eval", "--model", str(folder), "--metrics", "bpd", "--images", str(tmp_path / "test.npz"),
                 "--bpd-num", "12", "--device", "cpu", "--out", str(report)]) == 0
    entry = json.loads(report.read_text())["entries"][0]
    assert entry["metric"] == "bpd" and entry["num_samples"] == 12 and np.isfinite(entry["value"])
    assert json.loads((folder / "model.json").read_text())["metrics"]["bpd"]["value"] == entry["value"]


def _bad_folder(kind: str, good: Path, tmp_path: Path) -> Path:
    folder = tmp_path / kind
    shutil.copytree(good, folder)
    if kind == "missing":
        (folder / "model.safetensors").unlink()
    elif kind == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif kind == "wrong-family":
        card = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps({**card, "family": "blackout"}))
    elif kind == "wrong-weights":
        (folder / "config.yaml").write_text((folder / "config.yaml").read_text().replace("channels: 8", "channels: 16"))
    elif kind == "newer":
        card = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps({**card, "format": 99, "diffspace": "9.0"}))
    return folder


@pytest.mark.parametrize(("kind", "message"), [
    ("missing", "is not a model folder (no model.safetensors)"),
    ("truncated", "model.safetensors is damaged or truncated"),
    ("wrong-family", "model.json says family 'blackout' but config.yaml has process.kind='gaussian'"),
    ("wrong-weights", "the saved weights do not fit this model's config"),
    ("newer", "is a model of format 99, written by diffspace 9.0"),
])
def test_a_bad_model_folder_is_one_line_with_status_2_and_writes_nothing(
        kind: str, message: str, gud_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _bad_folder(kind, export_run(gud_run, tmp_path / "good")[0], tmp_path)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        diffspace.load(folder)
    out = tmp_path / "out" / "s.png"
    assert main(["sample", "--model", str(folder), "--num", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.parent.exists()


def test_training_writes_the_model_folder_and_it_loads(gud_run: Path) -> None:
    model = diffspace.load(gud_run / "model", device="cpu")
    assert model.card.step == 4 and model.card.weights == "ema" and model.card.data == "digits"
    samples = model.sample(3, steps=2)
    assert samples.shape == (3, 1, 8, 8) and torch.isfinite(samples).all()
