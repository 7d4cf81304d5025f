"""Loaders for function data: Gaussian random fields (generated) and Darcy flow (files).

Function data stay real-valued in model space (no rescaling): a grf sample has exactly the
spectrum E|c_k|² = (τ² + |k|²)^(−s) of `sample_power_law_field`, with c_k the
forward-normalised Fourier coefficients of `diffspace.resolution`.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import torch

from diffspace.data.dataset import DataConfig, DatasetInfo, ImageDataset, split_generator
from diffspace.data.errors import DataError
from diffspace.data.transforms import from_levels
from diffspace.resolution import power_law_variance
from diffspace.spaces import FourierBasis

GRF_DEFAULT_RESOLUTION = 32
DARCY_NATIVE_RESOLUTION = 16


def sample_power_law_field(
    num: int, size: int, tau: float, exponent: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Periodic Gaussian random fields on the unit square with spectrum (τ² + |k|²)^(−s), (num, 1, N, N):
    x = Uᵀ(√λ ξ) in the real Fourier basis U with λ = `power_law_variance`, ξ ~ N(0, I)."""
    basis, shape = FourierBasis(), (1, size, size)
    variance = power_law_variance(basis.labels(shape), shape, tau, exponent).to(torch.float32)
    noise = torch.randn((num, *shape), generator=generator, dtype=torch.float32)
    return basis.decode(noise * variance.sqrt())


def load_grf(cfg: DataConfig, root: Path) -> ImageDataset:
    """cfg.num_samples periodic Gaussian random fields on the unit square at cfg.resolution
    (default 32), spectrum λ_k = (τ² + |k|²)^(−s), drawn with the split's seeded generator."""
    size = cfg.resolution or GRF_DEFAULT_RESOLUTION
    try:
        fields = sample_power_law_field(
            cfg.num_samples, size, cfg.grf_tau, cfg.grf_exponent, split_generator(cfg.seed, cfg.split)
        )
    except ValueError as exc:
        raise DataError(f"grf: {exc}") from exc
    info = DatasetInfo("grf", 1, (size, size), (-math.inf, math.inf), None, None)
    return ImageDataset(fields, None, info)


def darcy_path(root: Path, split: str, resolution: int) -> Path:
    """`<root>/darcy/darcy_{split}_{resolution}.pt`, falling back to the native 16×16 file when
    the requested resolution has no file (load_dataset then resizes, spectrally by default)."""
    directory = root / "darcy"
    wanted = directory / f"darcy_{split}_{resolution or DARCY_NATIVE_RESOLUTION}.pt"
    if wanted.is_file():
        return wanted
    native = directory / f"darcy_{split}_{DARCY_NATIVE_RESOLUTION}.pt"
    if native.is_file():
        return native
    present = sorted(p.name for p in directory.glob("darcy_*.pt")) if directory.is_dir() else []
    raise DataError(
        f"darcy: neither {wanted.name} nor {native.name} in {directory} (present: {', '.join(present) or 'none'}). "
        "Copy the Darcy-flow files there (or point --data-dir / $DIFFSPACE_DATA at a folder holding darcy/)."
    )


def load_darcy(cfg: DataConfig, root: Path) -> ImageDataset:
    """Darcy flow from a dict {x: bool permeability (N, H, W), y: float pressure (N, H, W)}:
    field "x" maps to {−1, 1} (2 levels); field "y" stays real (value_range = its min and max)."""
    path = darcy_path(root, cfg.split, cfg.resolution)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{path} is truncated or not a Darcy-flow torch file ({exc}).") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), torch.Tensor) for k in ("x", "y")):
        raise DataError(f"{path}: expected a dict with tensors 'x' (permeability) and 'y' (pressure).")
    field = data[cfg.field]
    if field.ndim != 3 or field.shape != data["x"].shape or data["x"].shape != data["y"].shape:
        raise DataError(f"{path}: x and y must share one shape (N, H, W); got {tuple(data['x'].shape)}, {tuple(data['y'].shape)}.")
    size = (field.shape[1], field.shape[2])
    if cfg.field == "x":
        info = DatasetInfo("darcy", 1, size, (0.0, 1.0), 2, None)
        return ImageDataset(from_levels(field.unsqueeze(1).to(torch.int64), 2), None, info)
    values = field.unsqueeze(1).to(torch.float32)
    info = DatasetInfo("darcy", 1, size, (float(values.min()), float(values.max())), None, None)
    return ImageDataset(values, None, info)
