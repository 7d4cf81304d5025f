"""Resolution change: the one place that resizes data, noise and model inputs.

Function-space convention (multilevel family). An H×W image is the point values
f(i/H, j/W) of a periodic function f on the unit square. Its Fourier coefficients
are taken with the "forward" normalisation

    c_k = (1/HW) Σ_x f(x) e^{−2πi k·x},

so that a band-limited function has the same c_k at every resolution that resolves
it. Restriction to a coarser grid keeps the modes the coarse grid can represent
(truncation); prolongation to a finer grid adds zero modes (zero padding). At an
even grid's Nyquist frequency n/2 the two aliases ±n/2 are summed on restriction and
split in half on prolongation, so restrict(prolong(x)) == x exactly and point values
of band-limited functions are preserved both ways.

Images (as opposed to functions) are resized by area averaging when shrinking and
bilinear interpolation when enlarging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RESIZE_METHODS = ("spectral", "area")


def _fourier_resize_axis(x: Tensor, n: int, dim: int) -> Tensor:
    """Truncate or zero-pad the Fourier series of x along `dim` to n points (real in, real out)."""
    size = x.shape[dim]
    if n == size:
        return x
    coeffs = torch.fft.fft(x, dim=dim, norm="forward")
    kept = min(size, n)
    nonneg = (kept + 1) // 2  # frequencies 0 … ⌈kept/2⌉−1
    neg = (kept - 1) // 2  # frequencies −1 … −neg
    out_shape = list(coeffs.shape)
    out_shape[dim] = n
    out = coeffs.new_zeros(out_shape)
    out.narrow(dim, 0, nonneg).copy_(coeffs.narrow(dim, 0, nonneg))
    if neg:
        out.narrow(dim, n - neg, neg).copy_(coeffs.narrow(dim, size - neg, neg))
    if kept % 2 == 0:
        half = kept // 2
        if n < size:  # restriction: both aliases of the coarse Nyquist mode fold onto it
            nyquist = coeffs.narrow(dim, half, 1) + coeffs.narrow(dim, size - half, 1)
            out.narrow(dim, half, 1).copy_(nyquist)
        else:  # prolongation: the coarse Nyquist mode splits evenly between ±half
            nyquist = coeffs.narrow(dim, half, 1) / 2
            out.narrow(dim, half, 1).copy_(nyquist)
            out.narrow(dim, n - half, 1).copy_(nyquist)
    return torch.fft.ifft(out, dim=dim, norm="forward").real.to(x.dtype)


def spectral_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample (…, H, W) point values to (…, h, w) by Fourier truncation / zero padding."""
    out = _fourier_resize_axis(x, size[0], dim=-2)
    return _fourier_resize_axis(out, size[1], dim=-1)


def area_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Shrink (B, C, H, W) images by area averaging; enlarge them by bilinear interpolation."""
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def resize(x: Tensor, size: int | tuple[int, int], method: str) -> Tensor:
    """Resize a batch (B, C, H, W) to `size` with method "spectral" (functions) or "area" (images)."""
    target = (size, size) if isinstance(size, int) else tuple(size)
    if x.dim() != 4:
        raise ValueError(f"resize expects a batch shaped (B, C, H, W); got shape {tuple(x.shape)}")
    if method == "spectral":
        return spectral_resize(x, target)
    if method == "area":
        return area_resize(x, target)
    raise ValueError(f"unknown resize method {method!r}; choose one of {RESIZE_METHODS}")


def power_law_variance(wavenumbers: Tensor, shape: tuple[int, int, int], tau: float, exponent: float,
                       amplitude: float = 1.0) -> Tensor:
    """λ_k = HW · a² (τ² + |k|²)^(−s) for basis coefficients with wavenumbers |k| on an H×W grid: the variance of
    a power-law field whose resolution-independent Fourier coefficients have E|c_k|² = a²(τ² + |k|²)^(−s)."""
    _, h, w = shape
    return h * w * amplitude**2 * (tau**2 + wavenumbers**2) ** (-exponent)
