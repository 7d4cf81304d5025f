"""Tests for diffspace.data: loaders, model-space mapping, checksums, fetch and errors.

Real data come from $DIFFSPACE_DATA or ../shared/data next to the repository; tests that
need them skip with a reason when they are absent. Everything else writes its own files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffspace.validation import ConfigError

from diffspace.data import (
    DATASETS,
    DataConfig,
    DataError,
    ImageDataset,
    check,
    data_dir,
    fetch,
    from_levels,
    load_dataset,
    to_levels,
)
from diffspace.data.files import IDX_MIRRORS, IDX_SHA256, read_digits
from diffspace.data.idx import parse_idx
from diffspace.data.registry import LOADERS
from diffspace.resolution import resize

IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _shared_data() -> Path | None:
    """$DIFFSPACE_DATA if set and present, else ../shared/data beside the repository, else None."""
    env = os.environ.get("DIFFSPACE_DATA", "")
    candidates = ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2] / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), None)


@pytest.fixture(scope="module")
def real_data() -> Callable[[str], Path]:
    """Return a function giving the real-data root for one data set, skipping (with a reason) if absent."""
    root = _shared_data()

    def need(name: str) -> Path:
        if root is None:
            pytest.skip("real data not found: set DIFFSPACE_DATA or provide ../shared/data")
        if not (root / name).is_dir():
            pytest.skip(f"real data for {name} not found in {root}")
        return root

    return need


@pytest.fixture(scope="module")
def loaded(real_data: Callable[[str], Path]) -> Callable[[str, str], ImageDataset]:
    """Load (name, split) from real data once per module."""
    cache: dict[tuple[str, str], ImageDataset] = {}

    def get(name: str, split: str) -> ImageDataset:
        if (name, split) not in cache:
            cache[(name, split)] = load_dataset(DataConfig(name=name, split=split), real_data(name))
        return cache[(name, split)]

    return get


# ---------------------------------------------------------------- model-space mapping


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_levels_round_trip_and_endpoints(levels: int) -> None:
    k = torch.arange(levels)
    x = from_levels(k, levels)
    assert x.dtype == torch.float32
    assert x[0].item() == -1.0 and x[-1].item() == 1.0
    torch.testing.assert_close(x, 2 * k.double().div(levels - 1).float() - 1)
    assert torch.equal(to_levels(x, levels), k)
    step = 2.0 / (levels - 1)
    assert torch.equal(to_levels(x + 0.49 * step, levels), k)  # rounds to the nearest level
    assert to_levels(torch.tensor([-3.0, 7.0]), levels).tolist() == [0, levels - 1]  # clamps


def test_digits_shape_range_levels_and_round_trip() -> None:
    train = load_dataset(DataConfig(name="digits", split="train"))
    test = load_dataset(DataConfig(name="digits", split="test"))
    assert train.images.shape == (1500, 1, 8, 8) and test.images.shape == (297, 1, 8, 8)
    assert len(train) == 1500 and train[3].shape == (1, 8, 8)
    assert train.info.levels == 17 and train.info.value_range == (0.0, 16.0) and train.info.num_classes == 10
    both = torch.cat([train.images, test.images])
    assert both.min().item() == -1.0 and both.max().item() == 1.0
    assert torch.equal(from_levels(to_levels(both, 17), 17), both)
    labels = torch.cat([train.labels, test.labels])
    assert torch.equal(torch.bincount(labels), torch.tensor([178, 182, 177, 183, 181, 182, 181, 179, 174, 180]))


def test_packaged_digits_equal_scikit_learns_bit_for_bit() -> None:
    """The shipped digits.npz holds exactly sklearn.datasets.load_digits(), in its order (so the same split)."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="compares with scikit-learn's copy")
    raw = sklearn_datasets.load_digits()
    train = load_dataset(DataConfig(name="digits", split="train"))
    test = load_dataset(DataConfig(name="digits", split="test"))
    both = torch.cat([train.images, test.images])
    assert torch.equal(to_levels(both, 17)[:, 0], torch.from_numpy(raw.images.astype(np.int64)))
    assert torch.equal(torch.cat([train.labels, test.labels]), torch.from_numpy(raw.target.astype(np.int64)))
    images, labels = read_digits()
    assert np.array_equal(images.astype(np.float64), raw.images) and np.array_equal(labels, raw.target)


def test_digits_load_without_scikit_learn(tmp_path: Path) -> None:
    """With scikit-learn unimportable the digits still load (and scikit-learn is never imported)."""
    code = ("import sys\nsys.modules['sklearn'] = None\n"
            "from diffspace.data import DataConfig, load_dataset\n"
            "data = load_dataset(DataConfig(name='digits', split='test'))\n"
            "print(tuple(data.images.shape), int(data.labels[0]), int(data.labels[-1]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(297,", "1,", "8,", "8)", "1", "8"]


def test_a_damaged_packaged_digits_file_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = read_digits()
    images = images.copy()
    images[0, 0, 0] ^= 1
    np.savez_compressed(tmp_path / "digits.npz", images=images, labels=labels)
    monkeypatch.setattr("diffspace.data.files.resources.files", lambda package: tmp_path)
    with pytest.raises(DataError, match="images in the packaged file .* are not the published ones"):
        load_dataset(DataConfig(name="digits"))


# ---------------------------------------------------------------- MNIST family (real data)


@pytest.mark.parametrize(
    ("name", "first_labels", "mean"),
    [("mnist", (5, 7), 0.1307), ("fashion-mnist", (9, 9), 0.2860)],
)
def test_idx_data_sets_shapes_range_labels(
    loaded: Callable[[str, str], ImageDataset], name: str, first_labels: tuple[int, int], mean: float
) -> None:
    train, test = loaded(name, "train"), loaded(name, "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    for ds in (train, test):
        assert ds.images.dtype == torch.float32 and ds.labels is not None and ds.labels.dtype == torch.int64
        assert ds.images.min().item() == -1.0 and ds.images.max().item() == 1.0
        head = ds.images[:5000]
        assert torch.equal(from_levels(to_levels(head, 256), 256), head)  # on the 8-bit grid
        assert ds.labels.min().item() == 0 and ds.labels.max().item() == 9
        assert bool((torch.bincount(ds.labels, minlength=10) > 0).all())
        assert ds.info.levels == 256 and ds.info.size == (28, 28) and ds.info.num_classes == 10
    # layout: the published first labels and the published mean intensity of the train set
    assert (train.labels[0].item(), test.labels[0].item()) == first_labels
    assert abs(float((train.images + 1).mean() / 2) - mean) < 5e-4


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_check_reports_verified_checksums(real_data: Callable[[str], Path], name: str) -> None:
    lines = check(name, real_data(name))
    assert len(lines) == 4 and all("checksum OK" in line for line in lines)


def _copy_idx(source: Path, dest: Path, files: tuple[str, ...]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(source / f, dest / f)


def test_tampered_content_fails_with_file_and_checksums(real_data: Callable[[str], Path], tmp_path: Path) -> None:
    source = real_data("mnist") / "mnist"
    _copy_idx(source, tmp_path / "mnist", ("t10k-images-idx3-ubyte.gz",))
    content = bytearray(gzip.decompress((source / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    content[8] = (content[8] + 1) % 10  # first label, still a valid digit
    target = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(bytes(content)))
    actual = hashlib.sha256(bytes(content)).hexdigest()
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name="mnist", split="test"), tmp_path)
    message = str(err.value)
    assert str(target) in message and actual in message
    assert IDX_SHA256["mnist"]["t10k-labels-idx1-ubyte.gz"] in message
    assert any("MISMATCH" in line and "t10k-labels" in line for line in check("mnist", tmp_path))


def test_truncated_gzip_fails_naming_the_file(real_data: Callable[[str], Path], tmp_path: Path) -> None:
    source = real_data("mnist") / "mnist"
    _copy_idx(source, tmp_path / "mnist", ("t10k-labels-idx1-ubyte.gz",))
    target = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    data = (source / target.name).read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        load_dataset(DataConfig(name="mnist", split="test"), tmp_path)
    assert str(target) in str(err.value)


def test_missing_files_name_files_directory_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name="fashion-mnist", split="train"), tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "fashion-mnist") in message and "diffspace data fetch fashion-mnist" in message
    assert all(line.endswith("missing") for line in check("fashion-mnist", tmp_path))


def test_parse_idx_checks_magic_dimensions_and_length() -> None:
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    good = header + bytes(range(24))
    assert parse_idx(good, (None, 3, 4), "f").shape == (2, 3, 4)
    assert parse_idx(good, (None, 3, 4), "f")[1, 2, 3] == 23
    with pytest.raises(DataError, match="magic"):
        parse_idx(bytes([0, 0, 9, 3]) + good[4:], (None, 3, 4), "f")
    with pytest.raises(DataError, match="magic"):
        parse_idx(good, (None,), "f")
    with pytest.raises(DataError, match="dimensions"):
        parse_idx(good, (None, 28, 28), "f")
    with pytest.raises(DataError, match="holds 23"):
        parse_idx(good[:-1], (None, 3, 4), "f")


def test_binarized_mnist_reproducible_and_seeded(real_data: Callable[[str], Path]) -> None:
    root = real_data("mnist")
    a = load_dataset(DataConfig(name="binarized-mnist", split="test", seed=0), root)
    b = load_dataset(DataConfig(name="binarized-mnist", split="test", seed=0), root)
    c = load_dataset(DataConfig(name="binarized-mnist", split="test", seed=1), root)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert set(torch.unique(a.images).tolist()) == {-1.0, 1.0} and a.info.levels == 2
    # E[bit] = pixel/255: the mean bit matches the mean intensity within 5 binomial standard errors
    gray = (load_dataset(DataConfig(name="mnist", split="test"), root).images.double() + 1) / 2
    bits = (a.images.double() + 1) / 2
    assert abs(float(bits.mean() - gray.mean())) < 5 * math.sqrt(0.25 / bits.numel())
    assert float(bits[gray == 0].sum()) == 0 and float(bits[gray == 1].mean()) == 1


def test_area_resize_28_to_14_is_block_means(real_data: Callable[[str], Path]) -> None:
    root = real_data("mnist")
    native = load_dataset(DataConfig(name="mnist", split="test", max_items=100), root)
    half = load_dataset(DataConfig(name="mnist", split="test", max_items=100, resolution=14), root)
    assert half.images.shape == (100, 1, 14, 14) and half.info.size == (14, 14)
    blocks = native.images.reshape(100, 1, 14, 2, 14, 2).mean(dim=(3, 5))
    torch.testing.assert_close(half.images, blocks, rtol=0, atol=1e-6)
    assert torch.equal(half.labels, native.labels)


# ---------------------------------------------------------------- CIFAR-10 (written by the test)


def _write_cifar(directory: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, list[int]]]:
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        n = 2 + i % 2
        data = rng.integers(0, 200, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels, b"filenames": [b"x.png"] * n}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = (data, labels)
    return batches


def test_cifar10_layout_from_pickle_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    directory = tmp_path / "cifar10" / "cifar-10-batches-py"
    batches = _write_cifar(directory, rng)
    data, labels = batches["data_batch_2"]
    data[1, 1 * 1024 + 5 * 32 + 7] = 255  # green, row 5, column 7 of the 2nd image of batch 2
    (directory / "data_batch_2").write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    train = load_dataset(DataConfig(name="cifar10"), tmp_path)
    assert train.images.shape == (2 + 3 + 2 + 3 + 2, 3, 32, 32) and train.info.levels == 256
    index = len(batches["data_batch_1"][1]) + 1
    assert train.images[index, 1, 5, 7].item() == 1.0
    assert to_levels(train.images[index], 256).flatten().tolist() == data[1].tolist()
    expected_labels = [v for j in range(1, 6) for v in batches[f"data_batch_{j}"][1]]
    assert train.labels.tolist() == expected_labels
    test = load_dataset(DataConfig(name="cifar10", split="test"), tmp_path)
    assert torch.equal(to_levels(test.images, 256).reshape(-1, 3072), torch.from_numpy(batches["test_batch"][0]).long())
    # the batch folder itself is accepted, directly under cifar10/ or through cfg.folder
    direct = tmp_path / "direct"
    shutil.copytree(directory, direct / "cifar10")
    assert torch.equal(load_dataset(DataConfig(name="cifar10", split="test"), direct).images, test.images)
    via_folder = DataConfig(name="cifar10", split="test", folder=str(directory))
    assert torch.equal(load_dataset(via_folder, tmp_path / "elsewhere").images, test.images)
    assert all("MISMATCH" in line for line in check("cifar10", tmp_path))  # not the published batches


def test_cifar10_corrupt_and_malicious_pickles_raise_data_error(tmp_path: Path) -> None:
    directory = tmp_path / "cifar10"
    _write_cifar(directory, np.random.default_rng(1))
    test_batch = directory / "test_batch"
    test_batch.write_bytes(test_batch.read_bytes()[:100])
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name="cifar10", split="test"), tmp_path)
    assert str(test_batch) in str(err.value)
    marker = tmp_path / "executed"
    test_batch.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(DataError, match="not allowed"):
        load_dataset(DataConfig(name="cifar10", split="test"), tmp_path)
    assert not marker.exists()
    with pytest.raises(DataError) as missing:
        load_dataset(DataConfig(name="cifar10", split="test"), tmp_path / "nothing")
    assert "test_batch" in str(missing.value) and "diffspace data fetch cifar10" in str(missing.value)


class _Exploit:
    """A pickle that would create a file when loaded by an unrestricted unpickler."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (self.path, "w"))


# ---------------------------------------------------------------- function data


def test_grf_per_mode_variance_matches_spectrum() -> None:
    n, size, tau, s = 2000, 16, 3.0, 2.0
    cfg = DataConfig(name="grf", num_samples=n, resolution=size, grf_tau=tau, grf_exponent=s, seed=3)
    ds = load_dataset(cfg)
    assert ds.images.shape == (n, 1, size, size) and ds.info.levels is None
    coeffs = torch.fft.fft2(ds.images[:, 0].double(), norm="forward")  # c_k = (1/N²) Σ_x f(x) e^{−2πik·x}
    k = torch.fft.fftfreq(size, d=1.0 / size).double()
    spectrum = (tau**2 + k[:, None] ** 2 + k[None, :] ** 2) ** (-s)
    ratio = coeffs.abs().square().mean(0) / spectrum
    # |c_k|²/λ_k is Exp(1) (complex modes) or χ²₁ (real modes): std of an n-sample mean ≤ √(2/n)
    assert float((ratio - 1).abs().max()) < 5 * math.sqrt(2 / n)
    assert abs(float(ratio.mean()) - 1) < 5 * math.sqrt(2 / (n * size * size / 2))
    assert torch.equal(load_dataset(cfg).images, ds.images)
    other = load_dataset(DataConfig(name="grf", num_samples=n, resolution=size, split="test", seed=3))
    assert not torch.equal(other.images, ds.images)
    assert load_dataset(DataConfig(name="grf", num_samples=4)).images.shape == (4, 1, 32, 32)


def test_darcy_loads_both_resolutions_and_fields(real_data: Callable[[str], Path]) -> None:
    root = real_data("darcy")
    raw = torch.load(root / "darcy" / "darcy_test_32.pt", weights_only=True)
    y32 = load_dataset(DataConfig(name="darcy", split="test", resolution=32), root)
    assert y32.images.shape == (50, 1, 32, 32) and y32.info.levels is None
    assert torch.equal(y32.images[:, 0], raw["y"].float())
    x32 = load_dataset(DataConfig(name="darcy", split="test", resolution=32, field="x"), root)
    assert torch.equal(x32.images[:, 0], raw["x"].float() * 2 - 1) and x32.info.levels == 2
    y16 = load_dataset(DataConfig(name="darcy", split="test"), root)
    assert y16.images.shape == (50, 1, 16, 16) and y16.info.size == (16, 16)
    train = load_dataset(DataConfig(name="darcy", split="train"), root)
    assert train.images.shape == (1000, 1, 16, 16)
    # no train file at 32: the 16×16 file is prolonged spectrally, and restriction undoes it
    up = load_dataset(DataConfig(name="darcy", split="train", resolution=32), root)
    assert up.images.shape == (1000, 1, 32, 32) and up.info.size == (32, 32)
    torch.testing.assert_close(resize(up.images, (16, 16), "spectral"), train.images, rtol=0, atol=1e-5)


def test_darcy_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="darcy_train_16.pt"):
        load_dataset(DataConfig(name="darcy"), tmp_path)
    (tmp_path / "darcy").mkdir()
    bad = tmp_path / "darcy" / "darcy_train_16.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name="darcy"), tmp_path)
    assert str(bad) in str(err.value)


# ---------------------------------------------------------------- microstructure and folders


def test_microstructure_crops_are_windows_of_the_images(tmp_path: Path) -> None:
    folder = tmp_path / "microstructure"
    folder.mkdir()
    pattern = (np.arange(256).reshape(16, 16)).astype(np.uint8)  # value 16·row + column
    Image.fromarray(pattern).save(folder / "a.png")
    cfg = DataConfig(name="microstructure", num_samples=50, crop_size=5, seed=2)
    ds = load_dataset(cfg, tmp_path)
    assert ds.images.shape == (50, 1, 5, 5) and ds.labels is None and ds.info.levels == 256
    levels = to_levels(ds.images, 256)[:, 0]
    corners = set()
    for crop in levels:
        top, left = divmod(int(crop[0, 0]), 16)
        assert top <= 11 and left <= 11
        assert torch.equal(crop, torch.from_numpy(pattern[top : top + 5, left : left + 5]).long())
        corners.add((top, left))
    assert len(corners) > 20  # 144 possible corners, 50 draws: the corners vary
    assert torch.equal(load_dataset(cfg, tmp_path).images, ds.images)
    with pytest.raises(DataError, match="smaller than crop_size"):
        load_dataset(DataConfig(name="microstructure", crop_size=17), tmp_path)
    with pytest.raises(DataError, match="no .png files"):
        load_dataset(DataConfig(name="microstructure"), tmp_path / "empty")


def test_microstructure_real_crops(real_data: Callable[[str], Path]) -> None:
    root = real_data("microstructure")
    cfg = DataConfig(name="microstructure", num_samples=40, crop_size=32, seed=0)
    a, b = load_dataset(cfg, root), load_dataset(cfg, root)
    c = load_dataset(DataConfig(name="microstructure", num_samples=40, crop_size=32, seed=1), root)
    assert a.images.shape == (40, 1, 32, 32) and len(a) == 40
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.min() >= -1 and a.images.max() <= 1


def test_folder_grayscale_rgb_sizes_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    arrays = [rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / ("sub" if i == 2 else "") / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    rgb = load_dataset(DataConfig(name="folder", folder=str(folder), grayscale=False))
    assert rgb.images.shape == (3, 3, 10, 12) and rgb.info.channels == 3 and rgb.info.size == (10, 12)
    assert torch.equal(to_levels(rgb.images, 256), torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).long())
    gray = load_dataset(DataConfig(name="folder", folder=str(folder)))
    expected = np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in arrays])
    assert gray.images.shape == (3, 1, 10, 12)
    assert torch.equal(to_levels(gray.images, 256)[:, 0], torch.from_numpy(expected).long())
    Image.fromarray(arrays[0][:6, :6]).save(folder / "small.png")
    with pytest.raises(DataError, match="different sizes"):
        load_dataset(DataConfig(name="folder", folder=str(folder)))
    assert load_dataset(DataConfig(name="folder", folder=str(folder), resolution=5)).images.shape == (4, 1, 5, 5)
    with pytest.raises(DataError, match="no test/ subfolder"):
        load_dataset(DataConfig(name="folder", folder=str(folder), split="test"))
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name="folder", folder=str(folder), resolution=5))
    assert str(folder / "broken.png") in str(err.value)
    with pytest.raises(DataError, match="DataConfig.folder"):
        load_dataset(DataConfig(name="folder"))


def test_folder_split_subfolders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            Image.fromarray(np.full((4, 4), 10 * i, dtype=np.uint8)).save(tmp_path / split / f"{i}.png")
    assert len(load_dataset(DataConfig(name="folder", folder=str(tmp_path)))) == 3
    assert len(load_dataset(DataConfig(name="folder", folder=str(tmp_path), split="test"))) == 2


# ---------------------------------------------------------------- names, config, directories


def test_unknown_name_lists_names_and_suggests_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(DataConfig(name="fashion_mnist"))
    assert "did you mean 'fashion-mnist'?" in str(err.value)
    assert all(name in str(err.value) for name in DATASETS)
    for call in (lambda: fetch("mnits", tmp_path), lambda: check("cifar", tmp_path)):
        with pytest.raises(ConfigError, match="did you mean"):
            call()
    assert set(LOADERS) == set(DATASETS)


@pytest.mark.parametrize(
    ("field", "value"),
    [("split", "val"), ("resize", "bicubic"), ("field", "z"), ("resolution", -1), ("max_items", 1.5), ("crop_size", 0)],
)
def test_invalid_config_values_raise_config_errors(field: str, value: object) -> None:
    cfg = DataConfig(name="digits")
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=f"data.{field}"):
        load_dataset(cfg)


def test_max_items_keeps_the_first_items() -> None:
    full = load_dataset(DataConfig(name="digits"))
    head = load_dataset(DataConfig(name="digits", max_items=10))
    assert torch.equal(head.images, full.images[:10]) and torch.equal(head.labels, full.labels[:10])


def test_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DIFFSPACE_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert data_dir() == tmp_path / "home" / ".cache" / "diffspace"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "diffspace"
    monkeypatch.setenv("DIFFSPACE_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_dir(str(tmp_path / "s")) == tmp_path / "s"


# ---------------------------------------------------------------- fetch (no network)


def _offline(*args: object, **kwargs: object) -> object:
    raise urllib.error.URLError("network unreachable (test)")


def test_fetch_offline_names_files_urls_and_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(DataError) as err:
        fetch("mnist", tmp_path, progress=False)
    message = str(err.value)
    assert str(tmp_path / "mnist") in message
    for name in IDX_NAMES:
        assert name in message
        assert all(mirror + name in message for mirror in IDX_MIRRORS["mnist"])
    assert not any((tmp_path / "mnist").iterdir())  # no partial files left behind
    with pytest.raises(DataError, match="cifar-10-python.tar.gz") as cifar:
        fetch("cifar10", tmp_path, progress=False)
    assert str(tmp_path / "cifar10") in str(cifar.value)
    assert fetch("digits", tmp_path) == [] and fetch("grf", tmp_path) == []
    with pytest.raises(DataError, match="microstructure"):
        fetch("microstructure", tmp_path)


def test_fetch_keeps_present_verified_files(
    monkeypatch: pytest.MonkeyPatch, real_data: Callable[[str], Path], tmp_path: Path
) -> None:
    source = real_data("mnist") / "mnist"
    (tmp_path / "mnist").mkdir()
    for name in IDX_NAMES:
        (tmp_path / "mnist" / name).symlink_to(source / name)
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    assert sorted(fetch("mnist", tmp_path, progress=False)) == sorted(tmp_path / "mnist" / n for n in IDX_NAMES)


class _Response(io.BytesIO):
    """A stand-in for an HTTP response: a byte stream with headers."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.headers = {"Content-Length": str(len(content))}


def test_fetch_downloads_verifies_and_falls_back_to_next_mirror(
    monkeypatch: pytest.MonkeyPatch, real_data: Callable[[str], Path], tmp_path: Path
) -> None:
    source = real_data("mnist") / "mnist"
    first, second = IDX_MIRRORS["mnist"]
    requested: list[str] = []

    def serve(request: urllib.request.Request, timeout: float) -> _Response:
        url = request.full_url
        requested.append(url)
        name = url.rsplit("/", 1)[1]
        if url.startswith(first) and name.startswith("t10k"):
            return _Response(gzip.compress(b"wrong content"))  # fails verification: next mirror
        return _Response((source / name).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    paths = fetch("mnist", tmp_path, progress=False)
    assert [p.name for p in paths] == list(IDX_NAMES)
    assert all(line.endswith("checksum OK") for line in check("mnist", tmp_path))
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(IDX_NAMES)
    assert second + "t10k-images-idx3-ubyte.gz" in requested and second + "train-images-idx3-ubyte.gz" not in requested
