"""Data that outgrow memory: a folder of images read from disk per batch, with DataLoader workers.

`FolderImages` stands where a loaded data set keeps its (N, C, H, W) tensor: it knows the shape and
decodes the items it is indexed with (`images[index_tensor]`), so nothing but the batches in flight
is held in memory. `StepLoader` serves the training loop: for every optimizer step it yields this
rank's rows of the step's global batch (from the run's deterministic `BatchOrder`, at the position a
checkpoint restored), decoded by `workers` processes into pinned memory ahead of use. Because the
order is a pure function of (seed, epoch) and the loader restarts from the checkpointed position, a
streamed run resumes exactly as an in-memory one does.
"""

from __future__ import annotations

import copy
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diffspace.data.errors import DataError
from diffspace.data.files import read_image
from diffspace.data.transforms import from_levels, resize_images
from diffspace.system import end_with_parent


class FolderImages:
    """Lazily decoded images of a folder: shape (N, C, H, W) in model space, decoded on indexing."""

    def __init__(self, paths: Sequence[Path], grayscale: bool, size: tuple[int, int], resize: str | None) -> None:
        self.paths, self.grayscale, self.size, self.resize = list(paths), grayscale, tuple(size), resize
        self.channels = 1 if grayscale else 3

    @property
    def shape(self) -> torch.Size:
        """(N, C, H, W), as a tensor's."""
        return torch.Size((len(self.paths), self.channels, *self.size))

    @property
    def ndim(self) -> int:
        """4, as a batch of images has."""
        return 4

    def __len__(self) -> int:
        """The number of images."""
        return len(self.paths)

    def decode(self, index: int) -> Tensor:
        """Image `index` as (C, H, W) in model space (resized to the folder's size when it differs)."""
        array = read_image(self.paths[index], "L" if self.grayscale else "RGB").astype(np.int64)
        chw = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], self.channels)).permute(2, 0, 1)
        image = from_levels(chw.unsqueeze(0), 256)
        if tuple(image.shape[-2:]) != self.size:
            if self.resize is None:
                raise DataError(f"{self.paths[index]} is {image.shape[-1]}×{image.shape[-2]}, not "
                                f"{self.size[1]}×{self.size[0]} like the folder's other images; set data.resolution")
            image = resize_images(image, self.size[0], self.resize)
        return image[0]

    def __getitem__(self, index: int | slice | Tensor | Sequence[int]) -> FolderImages | Tensor:
        """A slice is another (lazy) FolderImages; an int, index tensor or list decodes those images."""
        if isinstance(index, slice):
            return FolderImages(self.paths[index], self.grayscale, self.size, self.resize)
        if isinstance(index, int):
            return self.decode(index)
        return torch.stack([self.decode(int(i)) for i in torch.as_tensor(index).flatten()])

    def contiguous(self) -> FolderImages:
        """Itself (nothing is held in memory)."""
        return self


def folder_images(paths: Sequence[Path], grayscale: bool, resolution: int, resize: str) -> FolderImages:
    """FolderImages of `paths` at resolution² (0: their common size, read from the file headers)."""
    if resolution:
        return FolderImages(paths, grayscale, (resolution, resolution), resize)
    sizes = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.setdefault(image.size, path)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path} is not a readable image ({exc}).") from exc
    if len(sizes) > 1:
        listed = ", ".join(f"{w}×{h}" for w, h in sorted(sizes))
        raise DataError(f"folder data set: images have different sizes ({listed}); set DataConfig.resolution to resize "
                        "them to one square size.")
    (width, height), = sizes
    return FolderImages(paths, grayscale, (height, width), None)


def _end_with_trainer(worker: int) -> None:
    """In each DataLoader worker: die (SIGKILL) when the trainer process dies."""
    end_with_parent(signal.SIGKILL)


class _Items(Dataset):
    """FolderImages as a map-style Dataset (what DataLoader workers decode)."""

    def __init__(self, images: FolderImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images.decode(index)


class _StepRows:
    """The batch sampler: per step, this rank's rows of the global batch, from a copy of the run's order."""

    def __init__(self, order: object, rows: range) -> None:
        self.order, self.rows = copy.deepcopy(order), rows

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.order.next()[self.rows.start:self.rows.stop].tolist()


class StepLoader:
    """Yields, step after step, the decoded images of this rank's rows `rows` of each global batch of `order`
    (from its current position), decoded by `workers` processes (0: in this process) into pinned memory.
    The kernel kills a worker the moment its trainer dies (PR_SET_PDEATHSIG on Linux), so a trainer killed
    with SIGKILL leaves no worker behind holding memory or its run-directory lock."""

    def __init__(self, images: FolderImages, order: object, rows: range, workers: int, pin_memory: bool) -> None:
        loader = DataLoader(_Items(images), batch_sampler=_StepRows(order, rows), num_workers=workers,
                            pin_memory=pin_memory, persistent_workers=workers > 0,
                            prefetch_factor=2 if workers > 0 else None, worker_init_fn=_end_with_trainer)
        self._batches = iter(loader)

    def next(self) -> Tensor:
        """The next step's images of this rank, (len(rows), C, H, W)."""
        return next(self._batches)
