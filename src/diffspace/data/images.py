"""Loaders for image data sets: digits, MNIST family, CIFAR-10, microstructure crops, folders.

Each loader returns an `ImageDataset` at native resolution in model space (see `transforms`);
`load_dataset` applies `max_items` and resizing afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffspace.data.cifar import read_batch
from diffspace.data.dataset import DataConfig, DatasetInfo, ImageDataset, split_generator
from diffspace.data.errors import DataError
from diffspace.data.files import (
    CIFAR10_SPLITS,
    IMAGE_SUFFIXES,
    IDX_FILES,
    find_cifar10_dir,
    read_digits,
    read_image,
    read_verified_idx,
    require_files,
)
from diffspace.data.idx import parse_idx
from diffspace.data.stream import folder_images
from diffspace.data.transforms import from_levels, resize_images, resize_method

DIGITS_TRAIN = 1500  # the digits' first 1500 images are "train", the last 297 "test" (scikit-learn's order)


def load_digits(cfg: DataConfig, root: Path) -> ImageDataset:
    """The 8×8 digits shipped with the package (scikit-learn's load_digits, values 0..16, 17 levels; no
    scikit-learn needed): first 1500 train, last 297 test."""
    images, targets = read_digits()
    levels = torch.from_numpy(images.astype(np.int64)).unsqueeze(1)
    labels = torch.from_numpy(targets.astype(np.int64))
    part = slice(0, DIGITS_TRAIN) if cfg.split == "train" else slice(DIGITS_TRAIN, None)
    info = DatasetInfo("digits", 1, (8, 8), (0.0, 16.0), 17, 10)
    return ImageDataset(from_levels(levels[part], 17), labels[part], info)


def read_idx_split(family: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Verified MNIST-family images (N, 28, 28) uint8 and labels (N,) uint8 of one split."""
    directory = root / family
    image_path, label_path = require_files(family, directory, IDX_FILES[split])
    images = parse_idx(read_verified_idx(family, image_path), (None, 28, 28), str(image_path))
    labels = parse_idx(read_verified_idx(family, label_path), (None,), str(label_path))
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{image_path} holds {images.shape[0]} images but {label_path} {labels.shape[0]} labels.")
    if labels.size and labels.max() > 9:
        raise DataError(f"{label_path}: labels must lie in 0..9, found {labels.max()}.")
    return images, labels


def load_idx(cfg: DataConfig, root: Path) -> ImageDataset:
    """MNIST or Fashion-MNIST (cfg.name) from verified IDX files: 28×28, 256 levels, 10 classes."""
    images, labels = read_idx_split(cfg.name, cfg.split, root)
    x = from_levels(torch.tensor(images).unsqueeze(1), 256)
    info = DatasetInfo(cfg.name, 1, (28, 28), (0.0, 255.0), 256, 10)
    return ImageDataset(x, torch.from_numpy(labels.astype(np.int64)), info)


def load_binarized_mnist(cfg: DataConfig, root: Path) -> ImageDataset:
    """MNIST binarized stochastically: b ~ Bernoulli(pixel/255), drawn with the split's generator
    seeded from cfg.seed (same seed, same images), mapped to {−1, 1}."""
    images, labels = read_idx_split("mnist", cfg.split, root)
    probability = torch.tensor(images).unsqueeze(1).to(torch.float32) / 255.0
    bits = torch.bernoulli(probability, generator=split_generator(cfg.seed, cfg.split))
    info = DatasetInfo("binarized-mnist", 1, (28, 28), (0.0, 1.0), 2, 10)
    return ImageDataset(from_levels(bits, 2), torch.from_numpy(labels.astype(np.int64)), info)


def load_cifar10(cfg: DataConfig, root: Path) -> ImageDataset:
    """CIFAR-10 from its python batches in `<root>/cifar10/[cifar-10-batches-py/]` or cfg.folder:
    32×32 RGB, 256 levels, 10 classes."""
    base = Path(cfg.folder).expanduser() if cfg.folder else root / "cifar10"
    paths = require_files("cifar10", find_cifar10_dir(base), CIFAR10_SPLITS[cfg.split])
    batches = [read_batch(path) for path in paths]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    info = DatasetInfo("cifar10", 3, (32, 32), (0.0, 255.0), 256, 10)
    return ImageDataset(from_levels(torch.from_numpy(images), 256), torch.from_numpy(labels), info)


def load_microstructure(cfg: DataConfig, root: Path) -> ImageDataset:
    """cfg.num_samples random crop_size² crops of the grayscale PNGs in `<root>/microstructure`
    (or cfg.folder): image and top-left corner uniform, drawn with the split's seeded generator."""
    directory = Path(cfg.folder).expanduser() if cfg.folder else root / "microstructure"
    paths = sorted(directory.glob("*.png")) if directory.is_dir() else []
    if not paths:
        raise DataError(
            f"microstructure: no .png files in {directory}. Copy the micrographs there "
            "(or set DataConfig.folder / --data-dir / $DIFFSPACE_DATA)."
        )
    images = [torch.from_numpy(read_image(p, "L").astype(np.int64)) for p in paths]
    c = cfg.crop_size
    for path, image in zip(paths, images):
        if image.shape[0] < c or image.shape[1] < c:
            raise DataError(f"{path} is {image.shape[1]}×{image.shape[0]}, smaller than crop_size {c}.")
    generator = split_generator(cfg.seed, cfg.split)
    which = torch.randint(len(images), (cfg.num_samples,), generator=generator)
    uniform = torch.rand((cfg.num_samples, 2), generator=generator, dtype=torch.float64)
    crops = torch.empty((cfg.num_samples, 1, c, c), dtype=torch.int64)
    for i, (j, (u, v)) in enumerate(zip(which.tolist(), uniform.tolist())):
        height, width = images[j].shape
        top, left = int(u * (height - c + 1)), int(v * (width - c + 1))
        crops[i, 0] = images[j][top : top + c, left : left + c]
    info = DatasetInfo("microstructure", 1, (c, c), (0.0, 255.0), 256, None)
    return ImageDataset(from_levels(crops, 256), None, info)


def load_folder(cfg: DataConfig, root: Path) -> ImageDataset:
    """Every image (png/jpg/jpeg/bmp/webp, searched recursively) under cfg.folder, or under its
    train/ or test/ subfolder when that exists (a folder without test/ has no test split).
    Grayscale or RGB per cfg.grayscale, 256 levels; images are resized to cfg.resolution if
    set, and must all share one size otherwise. With cfg.stream they are decoded per batch
    (`diffspace.data.stream.FolderImages`) instead of loaded."""
    if not cfg.folder:
        raise DataError("folder data set: set DataConfig.folder to the folder holding the images.")
    base = Path(cfg.folder).expanduser()
    if not base.is_dir():
        raise DataError(f"folder data set: {base} is not a folder.")
    directory = base / cfg.split
    if not directory.is_dir():
        if cfg.split == "test":
            raise DataError(f"folder data set: {base} has no test/ subfolder, so there is no test split.")
        directory = base
    paths = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"folder data set: no images ({', '.join(IMAGE_SUFFIXES)}) under {directory}.")
    if cfg.stream:
        images = folder_images(paths, cfg.grayscale, cfg.resolution, resize_method("folder", cfg.resize))
        info = DatasetInfo("folder", images.channels, images.size, (0.0, 255.0), 256, None)
        return ImageDataset(images, None, info)
    mode, channels = ("L", 1) if cfg.grayscale else ("RGB", 3)

    def chw(path: Path) -> Tensor:
        """One image as a (1, C, H, W) uint8 tensor."""
        array = read_image(path, mode)
        return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], channels)).permute(2, 0, 1)[None]

    if cfg.resolution:  # every image resized as it is read, into one preallocated tensor
        method = resize_method("folder", cfg.resize)
        images = torch.empty((len(paths), channels, cfg.resolution, cfg.resolution))
        for i, path in enumerate(paths):
            images[i] = resize_images(from_levels(chw(path), 256), cfg.resolution, method)[0]
    else:  # the 8-bit images first (a quarter of the floats' size), then one float32 tensor
        raw = [chw(path) for path in paths]
        sizes = sorted({tuple(t.shape[-2:]) for t in raw})
        if len(sizes) > 1:
            listed = ", ".join(f"{w}×{h}" for h, w in sizes)
            raise DataError(
                f"folder data set: images under {directory} have different sizes ({listed}); "
                "set DataConfig.resolution to resize them to one square size."
            )
        images = torch.empty((len(raw), channels, *sizes[0]))
        for i, image in enumerate(raw):
            images[i] = from_levels(image[0], 256)
        del raw
    info = DatasetInfo("folder", channels, tuple(images.shape[-2:]), (0.0, 255.0), 256, None)
    return ImageDataset(images, None, info)
