"""`load_dataset`: validate a `DataConfig`, dispatch to the data set's loader, then apply
`max_items` (keep the first items), check the values and resize to `resolution`, in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from diffspace.data.catalog import check_name
from diffspace.data.dataset import DataConfig, ImageDataset
from diffspace.data.errors import DataError
from diffspace.data.fields import load_darcy, load_grf
from diffspace.data.files import data_dir as resolve_data_dir
from diffspace.data.images import (
    load_binarized_mnist,
    load_cifar10,
    load_digits,
    load_folder,
    load_idx,
    load_microstructure,
)
from diffspace.data.transforms import resize_images, resize_method
from diffspace.validation import check_fields

LOADERS: dict[str, Callable[[DataConfig, Path], ImageDataset]] = {
    "digits": load_digits,
    "mnist": load_idx,
    "fashion-mnist": load_idx,
    "binarized-mnist": load_binarized_mnist,
    "cifar10": load_cifar10,
    "grf": load_grf,
    "microstructure": load_microstructure,
    "darcy": load_darcy,
    "folder": load_folder,
}


def validate(cfg: DataConfig) -> None:
    """ConfigError naming the field for any value of `cfg` outside its allowed set (the field rules of DataConfig)."""
    check_name(cfg.name)
    check_fields(cfg, "data.")


#: Items checked at a time by `check_values`.
CHECK_CHUNK = 4096


def check_values(images: Tensor, name: str, levels: int | None) -> None:
    """DataError unless every value is finite and, for data with discrete levels, in model space
    [−1, 1] (to float32 rounding); the message names the data set, the count of bad values and the first bad item."""
    for what, is_bad in (("NaN/Inf", lambda x: ~torch.isfinite(x)),
                         ("out-of-range (outside [−1, 1] in model space)", lambda x: x.abs() > 1.0 + 1e-5)):
        if what != "NaN/Inf" and levels is None:
            continue
        count, items, first = 0, 0, None
        for start in range(0, len(images), CHECK_CHUNK):  # in chunks: the masks stay small for large data sets
            bad = is_bad(images[start : start + CHECK_CHUNK])
            per_item = bad.flatten(1).any(1)
            if per_item.any():
                count, items = count + int(bad.sum()), items + int(per_item.sum())
                first = start + int(per_item.nonzero()[0]) if first is None else first
        if first is not None:
            raise DataError(f"data set {name}: {count} {what} values in {items} of {len(images)} items, the first in "
                            f"item {first}; repair or remove those items")


def load_dataset(cfg: DataConfig, data_dir: str | Path | None = None) -> ImageDataset:
    """Load data set `cfg.name` in model space from `data_dir(data_dir)`, keep the first
    `cfg.max_items` items (0 = all), check their values (`check_values`) and resize to
    `cfg.resolution` (0 = native) with `cfg.resize` (auto = spectral for grf/darcy, area for images)."""
    validate(cfg)
    dataset = LOADERS[cfg.name](cfg, resolve_data_dir(data_dir))
    images, labels, info = dataset.images, dataset.labels, dataset.info
    if cfg.max_items:
        images = images[: cfg.max_items]
        labels = None if labels is None else labels[: cfg.max_items]
    if isinstance(images, Tensor):  # streamed 8-bit images are in model space by construction
        check_values(images, cfg.name, info.levels)
    if cfg.resolution and info.size != (cfg.resolution, cfg.resolution):
        images = resize_images(images, cfg.resolution, resize_method(cfg.name, cfg.resize))
        info = replace(info, size=(cfg.resolution, cfg.resolution))
    return ImageDataset(images.contiguous(), labels, info)
