"""Orthonormal bases for diffusion: where to diffuse.

A basis maps a batch x of shape (B, C, H, W) to coefficients c = U x of the same
shape, with U orthogonal, so decode(encode(x)) = x and ‖encode(x)‖ = ‖x‖ (Parseval).
Each component carries a label used by schedules to order components:

| basis   | label of a component                                              |
| ------- | ----------------------------------------------------------------- |
| pixel   | its column index j (left-to-right generation)                     |
| dct     | wavenumber |k| = ½√(i² + j²) for DCT mode (i, j) (cycles per unit)  |
| fourier | wavenumber |k| = √(k_y² + k_x²) for integer frequencies k          |
| haar    | scale: 0 for the coarsest average, 1 … L for details coarse → fine |
| pca     | rank of the principal component (0 = largest variance)           |

DCT and Fourier labels share units, so a spectrum λ(|k|) means the same in both.
"""

from __future__ import annotations

import abc
import functools
import math
from pathlib import Path

import torch
from torch import Tensor, nn

Shape = tuple[int, int, int]


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"bases act on batches shaped (B, C, H, W); got shape {tuple(x.shape)}")


class Basis(nn.Module, abc.ABC):
    """An orthonormal change of coordinates c = U x acting on (B, C, H, W) batches (abstract: each
    basis defines encode, decode and labels)."""

    name = "basis"

    @abc.abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Coefficients c = U x."""

    @abc.abstractmethod
    def decode(self, c: Tensor) -> Tensor:
        """Values x = Uᵀ c."""

    @abc.abstractmethod
    def labels(self, shape: Shape) -> Tensor:
        """Ordering label of every component, shape (C, H, W), float64 on the CPU."""

    def forward(self, x: Tensor) -> Tensor:
        return self.encode(x)


def column_labels(shape: Shape) -> Tensor:
    """Label = column index j of each component (left-to-right ordering)."""
    c, h, w = shape
    return torch.arange(w, dtype=torch.float64).expand(c, h, w).clone()


def row_labels(shape: Shape) -> Tensor:
    """Label = row index i of each component (top-to-bottom ordering)."""
    c, h, w = shape
    return torch.arange(h, dtype=torch.float64)[:, None].expand(c, h, w).clone()


class PixelBasis(Basis):
    """The identity: c = x. Labels are column indices."""

    name = "pixel"

    def encode(self, x: Tensor) -> Tensor:
        _check_batch(x)
        return x

    def decode(self, c: Tensor) -> Tensor:
        _check_batch(c)
        return c

    def labels(self, shape: Shape) -> Tensor:
        return column_labels(shape)


@functools.lru_cache(maxsize=32)
def _dct_matrix(n: int, dtype: torch.dtype, device: str) -> Tensor:
    """Orthonormal DCT-II matrix D[k, m] = √(2/n) c_k cos(π (m + ½) k / n), c_0 = 1/√2."""
    m = torch.arange(n, dtype=torch.float64)
    k = m[:, None]
    mat = math.sqrt(2.0 / n) * torch.cos(math.pi * (m[None, :] + 0.5) * k / n)
    mat[0] /= math.sqrt(2.0)
    return mat.to(dtype=dtype, device=device)


class DCTBasis(Basis):
    """Orthonormal 2-D DCT-II: c = D_H x D_Wᵀ, any H×W. Labels |k| = ½√(i² + j²)."""

    name = "dct"

    def _matrices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(x)
        device = str(x.device)
        return _dct_matrix(x.shape[-2], x.dtype, device), _dct_matrix(x.shape[-1], x.dtype, device)

    def encode(self, x: Tensor) -> Tensor:
        dh, dw = self._matrices(x)
        return dh @ x @ dw.T

    def decode(self, c: Tensor) -> Tensor:
        dh, dw = self._matrices(c)
        return dh.T @ c @ dw

    def labels(self, shape: Shape) -> Tensor:
        c, h, w = shape
        i = torch.arange(h, dtype=torch.float64)[:, None]
        j = torch.arange(w, dtype=torch.float64)[None, :]
        return (0.5 * torch.sqrt(i**2 + j**2)).expand(c, h, w).clone()


def _partner(c: Tensor) -> Tensor:
    """The coefficient at the conjugate frequency (−k) mod (H, W) of every position."""
    return torch.roll(torch.flip(c, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))


@functools.lru_cache(maxsize=32)
def _fourier_masks(h: int, w: int, device: str) -> tuple[Tensor, Tensor]:
    """(self-conjugate, canonical) masks over (H, W) frequency positions."""
    index = torch.arange(h * w).view(h, w)
    partner = _partner(index)
    return (index == partner).to(device), (index < partner).to(device)


class FourierBasis(Basis):
    """Real orthonormal 2-D Fourier basis; no complex tensor leaves it.

    With X = fft2(x, norm="ortho") and k̄ = −k mod (H, W): a self-conjugate frequency
    (DC, Nyquist) stores Re X_k; for each conjugate pair the canonical position k
    (smaller flat index) stores √2 Re X_k and its partner k̄ stores √2 Im X_k.
    Labels are |k| with signed integer frequencies.
    """

    name = "fourier"

    def encode(self, x: Tensor) -> Tensor:
        _check_batch(x)
        spectrum = torch.fft.fft2(x, norm="ortho")
        own, canonical = _fourier_masks(x.shape[-2], x.shape[-1], str(x.device))
        paired = torch.where(canonical, spectrum.real, -spectrum.imag) * math.sqrt(2.0)
        return torch.where(own, spectrum.real, paired).to(x.dtype)

    def decode(self, c: Tensor) -> Tensor:
        _check_batch(c)
        own, canonical = _fourier_masks(c.shape[-2], c.shape[-1], str(c.device))
        partner = _partner(c)
        real = torch.where(own, c, torch.where(canonical, c, partner) / math.sqrt(2.0))
        imag = torch.where(own, torch.zeros_like(c), torch.where(canonical, partner, -c) / math.sqrt(2.0))
        return torch.fft.ifft2(torch.complex(real, imag), norm="ortho").real.to(c.dtype)

    def labels(self, shape: Shape) -> Tensor:
        c, h, w = shape
        ky = torch.fft.fftfreq(h, d=1.0 / h).to(torch.float64)[:, None]
        kx = torch.fft.fftfreq(w, d=1.0 / w).to(torch.float64)[None, :]
        return torch.sqrt(ky**2 + kx**2).expand(c, h, w).clone()


class HaarBasis(Basis):
    """Multi-level orthonormal 2-D Haar wavelet transform in the Mallat layout.

    One level maps each 2×2 block (a b; c d) to the average (a+b+c+d)/2 (top-left
    quadrant) and the details (a−b+c−d)/2, (a+b−c−d)/2, (a−b−c+d)/2. `levels` = None
    uses as many levels as 2^L divides both H and W.
    """

    name = "haar"

    def __init__(self, levels: int | None = None) -> None:
        super().__init__()
        self.levels = levels

    def num_levels(self, h: int, w: int) -> int:
        """Number of levels used for an H×W grid (validated against divisibility)."""
        possible = 0
        while h % (2 ** (possible + 1)) == 0 and w % (2 ** (possible + 1)) == 0:
            possible += 1
        if self.levels is None:
            return possible
        if self.levels > possible:
            raise ValueError(
                f"a {self.levels}-level Haar transform needs H and W divisible by {2**self.levels}; "
                f"got {h}×{w} (at most {possible} levels fit): lower haar levels or resize the data"
            )
        return self.levels

    def encode(self, x: Tensor) -> Tensor:
        _check_batch(x)
        out = x.clone()
        h, w = x.shape[-2:]
        for _ in range(self.num_levels(h, w)):
            block = out[..., :h, :w].clone()
            a, b = block[..., 0::2, 0::2], block[..., 0::2, 1::2]
            c, d = block[..., 1::2, 0::2], block[..., 1::2, 1::2]
            h2, w2 = h // 2, w // 2
            out[..., :h2, :w2] = (a + b + c + d) / 2
            out[..., :h2, w2:w] = (a - b + c - d) / 2
            out[..., h2:h, :w2] = (a + b - c - d) / 2
            out[..., h2:h, w2:w] = (a - b - c + d) / 2
            h, w = h2, w2
        return out

    def decode(self, c: Tensor) -> Tensor:
        _check_batch(c)
        out = c.clone()
        full_h, full_w = c.shape[-2:]
        levels = self.num_levels(full_h, full_w)
        for level in reversed(range(levels)):
            h, w = full_h >> level, full_w >> level
            h2, w2 = h // 2, w // 2
            avg, dx = out[..., :h2, :w2].clone(), out[..., :h2, w2:w].clone()
            dy, dxy = out[..., h2:h, :w2].clone(), out[..., h2:h, w2:w].clone()
            out[..., 0:h:2, 0:w:2] = (avg + dx + dy + dxy) / 2
            out[..., 0:h:2, 1:w:2] = (avg - dx + dy - dxy) / 2
            out[..., 1:h:2, 0:w:2] = (avg + dx - dy - dxy) / 2
            out[..., 1:h:2, 1:w:2] = (avg - dx - dy + dxy) / 2
        return out

    def labels(self, shape: Shape) -> Tensor:
        c, h, w = shape
        levels = self.num_levels(h, w)
        labels = torch.zeros(h, w, dtype=torch.float64)
        for level in range(levels):  # level 0 = finest details, label L
            hh, ww = h >> level, w >> level
            labels[:hh, :ww] = levels - level
            labels[: hh // 2, : ww // 2] = 0.0
        return labels.expand(c, h, w).clone()


def haar_column_labels(shape: Shape, levels: int | None = None) -> Tensor:
    """Label = x + d·W/L for a Haar coefficient (Mallat layout) at scale d (0 the coarsest average,
    1 … L details coarse → fine) whose support is centred on pixel column x: left-to-right
    generation in which each finer level trails the coarser one by W/L columns. No level fits
    (odd W or H): the column index."""
    c, h, w = shape
    basis = HaarBasis(levels)
    num = basis.num_levels(h, w)
    if num == 0:
        return column_labels(shape)
    scale = basis.labels(shape)[0]
    column = torch.arange(w, dtype=torch.float64)
    labels = torch.zeros(h, w, dtype=torch.float64)
    for d in range(num + 1):
        band = w >> num if d == 0 else w >> (num - d + 1)
        support = w / band
        centre = (torch.remainder(column, band) + 0.5) * support - 0.5
        labels = torch.where(scale == d, centre + d * w / num, labels)
    return labels.expand(c, h, w).clone()


class PCABasis(Basis):
    """Principal components of a data set: c = Vᵀ x with V the covariance eigenvectors.

    Fitted on mean-removed data (the mean is kept in `mean` for priors); encoding is the
    pure rotation so that Parseval holds. Eigenvectors are stored in float64 and cast to
    the input's dtype, so float64 round trips are exact to 1e-10. Components are laid out row-major in
    (C, H, W) by decreasing variance; the label is the rank.
    """

    name = "pca"

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        dim = math.prod(shape)
        self.shape = tuple(shape)
        self.register_buffer("components", torch.eye(dim, dtype=torch.float64))
        self.register_buffer("variances", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))

    @classmethod
    def fit(cls, data: Tensor) -> "PCABasis":
        """Eigen-decompose the covariance (float64) of data (N, C, H, W); N ≥ 2."""
        _check_batch(data)
        if data.shape[0] < 2:
            raise ValueError("PCA needs at least 2 samples to estimate a covariance")
        basis = cls(tuple(data.shape[1:]))
        flat = data.reshape(data.shape[0], -1).to(torch.float64)
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.T @ centred / (flat.shape[0] - 1)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        order = torch.argsort(eigvals, descending=True)
        basis.components.copy_(eigvecs[:, order])
        basis.variances.copy_(eigvals[order].clamp_min(0.0))
        basis.mean.copy_(mean.view(basis.shape))
        return basis

    def _check_shape(self, x: Tensor) -> None:
        _check_batch(x)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"this PCA basis was fitted on shape {self.shape}; got {tuple(x.shape[1:])}")

    def encode(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        return (x.reshape(x.shape[0], -1) @ self.components.to(x.dtype)).view_as(x)

    def decode(self, c: Tensor) -> Tensor:
        self._check_shape(c)
        return (c.reshape(c.shape[0], -1) @ self.components.to(c.dtype).T).view_as(c)

    def labels(self, shape: Shape) -> Tensor:
        if tuple(shape) != self.shape:
            raise ValueError(f"this PCA basis was fitted on shape {self.shape}; got {tuple(shape)}")
        return torch.arange(math.prod(shape), dtype=torch.float64).view(shape)

    def save(self, path: str | Path) -> None:
        """Write shape, mean, eigenvectors and variances to a file."""
        torch.save({"shape": self.shape, **self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> "PCABasis":
        """Read a basis written by `save`."""
        state = torch.load(path, weights_only=True)
        basis = cls(tuple(state.pop("shape")))
        basis.load_state_dict(state)
        return basis


BASES: dict[str, type[Basis]] = {
    "pixel": PixelBasis,
    "dct": DCTBasis,
    "fourier": FourierBasis,
    "haar": HaarBasis,
    "pca": PCABasis,
}

#: The basis names, as configs spell them.
BASIS_NAMES: tuple[str, ...] = tuple(BASES)
