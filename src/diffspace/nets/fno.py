"""A Fourier neural operator score network: one set of weights for every grid resolution.

The network acts on point values of functions on the unit square (the convention of
`diffspace.resolution`). Its spectral convolutions use forward-normalised coefficients
c_k = (1/HW) Σ_x f(x) e^{−2πi k·x}, which do not depend on the grid for a band-limited f,
and the pointwise layers commute with sampling; so, for band-limited inputs, the output at
N and at 2N are point values of the same function up to the aliasing of the nonlinearities.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import NetConfig
from .embeddings import ConditionEmbedding

#: Grid features: (sin 2πy, cos 2πy, sin 2πx, cos 2πx), band-limited at frequency 1.
GRID_CHANNELS: int = 4


def frequency_rows(size: int, modes: int) -> torch.Tensor:
    """Indices along an FFT axis of length `size` of the frequencies 0, 1, …, m−1, −(m−1), …, −1,
    with m = min(modes, ⌊(size − 1)/2⌋ + 1): those the grid resolves without a Nyquist alias."""
    kept = min(modes, (size - 1) // 2 + 1)
    return torch.cat([torch.arange(kept), torch.arange(size - kept + 1, size)])


@functools.lru_cache(maxsize=64)
def _rows_on(size: int, modes: int, device: str) -> torch.Tensor:
    """frequency_rows(size, modes) on `device`, built once per (size, modes, device)."""
    return frequency_rows(size, modes).to(device)


def grid_features(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 4, H, W) periodic coordinates (sin 2πy, cos 2πy, sin 2πx, cos 2πx) at y = i/H, x = j/W."""
    y = 2 * math.pi * torch.arange(height, device=device, dtype=dtype) / height
    x = 2 * math.pi * torch.arange(width, device=device, dtype=dtype) / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([yy.sin(), yy.cos(), xx.sin(), xx.cos()])[None]


class SpectralConv2d(nn.Module):
    """K v = F⁻¹[R_k (F v)_k]: a learned complex matrix R_k (in → out channels) for every
    frequency with |k_y| < modes and 0 ≤ k_x < modes, zero elsewhere.

    F is the forward-normalised real FFT (rfft2), so R acts on resolution-independent
    coefficients. A grid too coarse to resolve a frequency drops it (that is the restriction
    of the operator to the grid); from H, W ≥ 2·modes − 1 every mode is used. The weights are
    stored as real pairs (…, 2) and viewed as complex; the transform runs in float32 (or
    float64 for float64 inputs), outside any autocast.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, modes
        scale = 1.0 / math.sqrt(in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.randn(2 * modes - 1, modes, in_channels, out_channels, 2))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Apply K to v of shape (B, in, H, W); returns (B, out, H, W) in v's real dtype (≥ float32)."""
        height, width = v.shape[-2:]
        dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
        with torch.autocast(v.device.type, enabled=False):
            coeffs = torch.fft.rfft2(v.to(dtype), norm="forward")
            rows = _rows_on(height, self.modes, str(v.device))
            cols = min(self.modes, (width - 1) // 2 + 1)
            weight_rows = _rows_on(2 * self.modes - 1, (rows.numel() + 1) // 2, str(v.device))
            weight = torch.view_as_complex(self.weight.to(dtype)[weight_rows, :cols].contiguous())
            selected = coeffs[:, :, rows, :cols]
            mixed = torch.einsum("bixy,xyio->boxy", selected, weight)
            out = coeffs.new_zeros(v.shape[0], self.out_channels, height, width // 2 + 1)
            out[:, :, rows, :cols] = mixed
            return torch.fft.irfft2(out, s=(height, width), norm="forward")


class FNO(nn.Module):
    """Fourier neural operator εθ(x_t, t, cond) on any H×W grid.

    Lifting v₀ = P[x, grid] + b₀(e); Fourier layers v_{l+1} = GELU(K_l v_l + W_l v_l + b_l(e))
    (no GELU after the last), with K_l a SpectralConv2d, W_l a pointwise (1×1) convolution and
    b_l(e) a per-channel shift from the embedding e of t and of each cond key; projection
    Q = 1×1 conv (width → 4·width), GELU, 1×1 conv (→ out channels), zero-initialised so a new
    net outputs 0. P reads the input channels and the periodic grid features. `size` is
    accepted for build_net's signature; the network itself has no fixed size.
    """

    def __init__(self, cfg: NetConfig, in_channels: int, out_channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, cfg.modes
        width, emb_dim = cfg.width, 4 * cfg.width
        self.embed = ConditionEmbedding(width, emb_dim, cfg.cond_keys)
        self.lift = nn.Conv2d(in_channels + GRID_CHANNELS, width, 1)
        self.shifts = nn.ModuleList(nn.Linear(emb_dim, width) for _ in range(cfg.layers + 1))
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, cfg.modes) for _ in range(cfg.layers))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(cfg.layers))
        self.project = nn.Conv2d(width, 4 * width, 1)
        self.out = nn.Conv2d(4 * width, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, **cond: torch.Tensor | float) -> torch.Tensor:
        """Return the network output (B, out_channels, H, W) for x_t (B, in_channels, H, W)."""
        if x_t.ndim != 4 or x_t.shape[1] != self.in_channels:
            raise ValueError(f"FNO expects x_t of shape (B, {self.in_channels}, H, W), got {tuple(x_t.shape)}")
        batch, _, height, width = x_t.shape
        emb = F.silu(self.embed(t, batch, x_t.device, cond))
        grid = grid_features(height, width, x_t.device, x_t.dtype).expand(batch, -1, -1, -1)
        v = self.lift(torch.cat([x_t, grid], dim=1)) + self.shifts[0](emb)[:, :, None, None]
        last = len(self.spectral) - 1
        for layer, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            v = spectral(v).to(v.dtype) + pointwise(v) + self.shifts[layer + 1](emb)[:, :, None, None]
            if layer != last:
                v = F.gelu(v)
        return self.out(F.gelu(self.project(v)))
