"""The data types every loader returns: what a data set is, how it is configured, the tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a loaded data set.

    value_range — range of the raw values before mapping to model space ((0, 255) for 8-bit).
    levels      — number of discrete intensity levels (256, 2, 17) or None for continuous fields.
    """

    name: str
    channels: int
    size: tuple[int, int]
    value_range: tuple[float, float]
    levels: int | None
    num_classes: int | None


@dataclass
class DataConfig:
    """Which data set to load and how; every field is a plain YAML-serialisable value.

    name        — one of `diffspace.data.DATASETS`.
    split       — "train" | "test".
    resolution  — 0 = native size; otherwise resize (or generate) to resolution × resolution.
    resize      — "auto" | "area" | "spectral"; auto = spectral for function data (grf, darcy),
                  area for images.
    max_items   — 0 = all; otherwise keep the first max_items items.
    seed        — seeds every random choice (binarization, crops, random fields).
    num_samples — grf and microstructure: how many fields to generate / crops to take.
    crop_size   — microstructure: side length of each square crop, in pixels.
    grf_tau, grf_exponent — grf spectrum λ_k = (τ² + |k|²)^(−s) with τ = grf_tau, s = grf_exponent.
    folder      — folder data set: its path; microstructure: optional override of its folder;
                  cifar10: optional folder holding the batches.
    grayscale   — folder data set: convert to 1 channel (True) or RGB (False).
    field       — darcy: "x" (permeability) or "y" (pressure).
    stream      — folder data set: read the images from disk per batch (`diffspace.data.stream`) instead of
                  holding them all in memory, for folders larger than memory.
    workers     — with `stream`: DataLoader worker processes decoding ahead of training (0: decode in the
                  training process).
    """

    name: str = "digits"
    split: str = field(default="train", metadata={"choices": ("train", "test")})
    resolution: int = field(default=0, metadata={"min": 0})
    resize: str = field(default="auto", metadata={"choices": ("auto", "area", "spectral")})
    max_items: int = field(default=0, metadata={"min": 0})
    seed: int = field(default=0, metadata={"min": 0})
    num_samples: int = field(default=1000, metadata={"min": 1})
    crop_size: int = field(default=64, metadata={"min": 1})
    grf_tau: float = field(default=3.0, metadata={"gt": 0.0})
    grf_exponent: float = 2.0
    folder: str = ""
    grayscale: bool = True
    stream: bool = False
    workers: int = field(default=2, metadata={"min": 0})
    field: str = field(default="y", metadata={"choices": ("x", "y")})  # last: the name shadows dataclasses.field

    def __post_init__(self) -> None:
        """Only the folder data set streams."""
        if self.stream and self.name != "folder":
            raise ValueError(f"data.stream=true reads a folder of images per batch; data.name={self.name!r} is "
                             "loaded into memory (use data.name=folder with data.folder=PATH)")


class ImageDataset(Dataset):
    """Images in model space: `images` (N, C, H, W) float32 — or, for a streamed folder, a
    `diffspace.data.stream.FolderImages` that decodes the items it is indexed with —, optional int64
    `labels` (N,), `info`. Indexing returns the image alone, shape (C, H, W)."""

    def __init__(self, images: Tensor, labels: Tensor | None, info: DatasetInfo) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels is not None and labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be ({images.shape[0]},), got shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.info = info

    def __len__(self) -> int:
        """Number of images."""
        return self.images.shape[0]

    @property
    def streamed(self) -> bool:
        """Whether the images are read from disk per batch rather than held as a tensor."""
        return not isinstance(self.images, Tensor)

    def __getitem__(self, index: int) -> Tensor:
        """Image `index`, shape (C, H, W)."""
        return self.images[index]


def split_generator(seed: int, split: str) -> torch.Generator:
    """A CPU generator for the random choices of one split: seeded 2·seed for "train" and
    2·seed + 1 for "test", so the two splits never share a random stream."""
    return torch.Generator().manual_seed(2 * seed + (1 if split == "test" else 0))
