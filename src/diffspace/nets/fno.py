"""A Fourier neural operator score network: one set of weights for every grid resolution.

The network acts on point values of functions on the unit square (the convention of
`diffspace.resolution`). Its spectral convolutions use forward-normalised coefficients
c_k = (1/HW) Σ_x f(x) e^{−2πi k·x}, which do not depend on the grid for a band-limited f,
and the pointwise layers commute with sampling; so, for band-limited inputs, the output at
N and at 2N are point values of the same function up to the aliasing of the nonlinearities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .config import NetConfig
from .embeddings import ConditionEmbedding

#: Grid features: (sin 2πy, cos 2πy, sin 2πx, cos 2πx), band-limited at frequency 1.
GRID_CHANNELS: int = 4


def kept_modes(size: int, modes: int) -> int:
    """m′ = min(modes, ⌊(size − 1)/2⌋ + 1): an FFT axis of `size` points resolves the frequencies
    0, ±1, …, ±(m′ − 1) without a Nyquist alias; they sit at indices [0, m′) and [size − m′ + 1, size)."""
    return min(modes, (size - 1) // 2 + 1)


def grid_features(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 4, H, W) periodic coordinates (sin 2πy, cos 2πy, sin 2πx, cos 2πx) at y = i/H, x = j/W."""
    y = 2 * math.pi * torch.arange(height, device=device, dtype=dtype) / height
    x = 2 * math.pi * torch.arange(width, device=device, dtype=dtype) / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([yy.sin(), yy.cos(), xx.sin(), xx.cos()])[None]


def linear_per_pixel(layer: nn.Linear, v: torch.Tensor) -> torch.Tensor:
    """y[b, :, i, j] = A v[b, :, i, j] + c: the nn.Linear `layer` (A, c) applied to the channels of every
    pixel of v (B, C, H, W), as one batched GEMM (A times each sample's C × HW map). The maps stay
    channels first, the layout in which the FFTs need no transposes; a channels-last nn.Linear call
    would cost a transpose copy on each side of every FFT (measured slower, benchmarks/fno_step.py)."""
    batch, channels, height, width = v.shape
    out = torch.baddbmm(layer.bias[None, :, None], layer.weight.expand(batch, -1, -1),
                        v.reshape(batch, channels, height * width))
    return out.view(batch, -1, height, width)


def _kept_blocks(tensor: torch.Tensor, rows: int, cols: int, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of the two blocks of kept modes along dimensions (axis, axis + 1): rows [0, r) (k_y = 0 … r − 1)
    and the last r − 1 rows (k_y = −(r − 1) … −1), by columns [0, c) (k_x = 0 … c − 1). Axis 2 for spectra
    (B, C, H, c), axis 0 for the weights (2·modes − 1, modes, in, out)."""
    top = tensor.narrow(axis, 0, rows).narrow(axis + 1, 0, cols)
    bottom = tensor.narrow(axis, tensor.shape[axis] - rows + 1, rows - 1).narrow(axis + 1, 0, cols)
    return top, bottom


def _kept_spectrum(v: torch.Tensor, rows: int, cols: int, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept blocks of rfft2(v) for v (B, C, H, W): rfft along x, keep columns [0, c), FFT along y of those
    columns only (the same coefficients as slicing rfft2's output, without transforming dropped columns)."""
    half = torch.fft.rfft(v, dim=3, norm=norm)[..., :cols]
    return _kept_blocks(torch.fft.fft(half, dim=2, norm=norm), rows, cols, axis=2)


def _grid_values(blocks: tuple[torch.Tensor, torch.Tensor], height: int, width: int, norm: str) -> torch.Tensor:
    """irfft2 (B, C, H, W) of the spectrum (B, C, H, W//2 + 1) that holds `blocks` in the kept modes and 0
    elsewhere: inverse FFT along y of the c kept columns, then irfft along x (which zero-pads columns c … W//2)."""
    top, bottom = blocks
    spectrum = top.new_zeros(top.shape[0], top.shape[1], height, top.shape[3])
    spectrum[:, :, : top.shape[2]] = top
    spectrum[:, :, height - bottom.shape[2] :] = bottom
    return torch.fft.irfft(torch.fft.ifft(spectrum, dim=2, norm=norm), n=width, dim=3, norm=norm)


class _SpectralMix(torch.autograd.Function):
    """u = F⁻¹[R_k X_k], X = F v, on the kept modes, with the backward written out. For the upstream gradient
    g and S = F g unnormalised: ∂L/∂v = F⁻¹[R_kᴴ S_k]/(HW) (the adjoint operator, again two FFTs) and
    ∂L/∂R_k = a_k Σ_b conj(X_k) S_kᵀ, a = 1 at k_x = 0 and 2 elsewhere (the Hermitian half rfft2 omits).
    Autograd of the forward would run a full complex FFT and scatter zero spectra instead. Inputs and
    outputs are (B, C, H, W). First derivatives only: a double backward raises."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, v: torch.Tensor, weight: torch.Tensor, rows: int,
                cols: int) -> torch.Tensor:
        """v (B, in, H, W) real, weight (2·modes − 1, modes, in, out, 2) real pairs → (B, out, H, W)."""
        height, width = v.shape[2:]
        coeffs = _kept_spectrum(v, rows, cols, "forward")
        kernel = _kept_blocks(torch.view_as_complex(weight), rows, cols, axis=0)
        mixed = tuple(torch.einsum("bixy,xyio->boxy", x, r) for x, r in zip(coeffs, kernel))
        ctx.save_for_backward(*coeffs, weight)
        ctx.grid = (rows, cols, height, width)
        return _grid_values(mixed, height, width, "forward")

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        """(∂L/∂v, ∂L/∂weight) from ∂L/∂u."""
        *coeffs, weight = ctx.saved_tensors
        rows, cols, height, width = ctx.grid
        upstream = _kept_spectrum(grad, rows, cols, "backward")
        grad_v = grad_weight = None
        if ctx.needs_input_grad[0]:
            kernel = _kept_blocks(torch.view_as_complex(weight), rows, cols, axis=0)
            adjoint = tuple(torch.einsum("boxy,xyio->bixy", s, r.conj()) for s, r in zip(upstream, kernel))
            grad_v = _grid_values(adjoint, height, width, "backward")
        if ctx.needs_input_grad[1]:
            grad_complex = torch.zeros_like(torch.view_as_complex(weight))
            for block, x, s in zip(_kept_blocks(grad_complex, rows, cols, axis=0), coeffs, upstream):
                block.copy_(torch.einsum("bixy,boxy->xyio", x.conj(), s))
            grad_complex[:, 1:] *= 2
            grad_weight = torch.view_as_real(grad_complex)
        return grad_v, grad_weight, None, None


class SpectralConv2d(nn.Module):
    """K v = F⁻¹[R_k (F v)_k]: a learned complex matrix R_k (in → out channels) for every
    frequency with |k_y| < modes and 0 ≤ k_x < modes, zero elsewhere.

    F is the forward-normalised real FFT (rfft2), so R acts on resolution-independent
    coefficients. A grid too coarse to resolve a frequency drops it (that is the restriction
    of the operator to the grid); from H, W ≥ 2·modes − 1 every mode is used. The weights are
    stored as real pairs (2·modes − 1, modes, in, out, 2), rows k_y = 0, 1, …, modes − 1,
    −(modes − 1), …, −1, and read as complex views; the kept modes are two slices of the
    spectrum, mixed by einsum and written into a zero spectrum by slicing (no index gather or
    scatter, no copy of the weights). The transform runs in float32 (float64 for float64 inputs)
    outside any autocast, and the output is cast back to the input's dtype.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, modes
        scale = 1.0 / math.sqrt(in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.randn(2 * modes - 1, modes, in_channels, out_channels, 2))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Apply K to v of shape (B, in, H, W); returns (B, out, H, W) in v's dtype."""
        rows, cols = kept_modes(v.shape[2], self.modes), kept_modes(v.shape[3], self.modes)
        dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
        with torch.autocast(v.device.type, enabled=False):
            out = _SpectralMix.apply(v.to(dtype), self.weight.to(dtype), rows, cols)
        return out.to(v.dtype)


def _squeeze_pointwise_weights(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str,
                               *_: object) -> None:
    """Load-state-dict pre-hook: checkpoints written before the pointwise layers became nn.Linear hold
    1×1 convolution weights (out, in, 1, 1); reshape them to (out, in). Spectral weights are unchanged."""
    names = ["lift", "project", "out", *(f"pointwise.{i}" for i in range(len(module.pointwise)))]
    for name in names:
        key = f"{prefix}{name}.weight"
        weight = state_dict.get(key)
        if weight is not None and weight.ndim == 4 and weight.shape[2:] == (1, 1):
            state_dict[key] = weight.flatten(1)


class FNO(nn.Module):
    """Fourier neural operator εθ(x_t, t, cond) on any H×W grid.

    Lifting v₀ = P[x, grid] + b₀(e); Fourier layers v_{l+1} = GELU(K_l v_l + W_l v_l + b_l(e))
    (no GELU after the last), with K_l a SpectralConv2d, W_l a pointwise linear map of the
    channels and b_l(e) a per-channel shift from the embedding e of t and of each cond key;
    projection Q = linear (width → 4·width), GELU, linear (→ out channels), zero-initialised so
    a new net outputs 0. P reads the input channels and the periodic grid features. P, W_l and
    Q are nn.Linear layers applied to every pixel (`linear_per_pixel`); state dicts in which they
    were 1×1 convolutions load through a pre-hook that reshapes (out, in, 1, 1) weights to (out, in).
    `size` is accepted for build_net's signature; the network itself has no fixed size.
    """

    def __init__(self, cfg: NetConfig, in_channels: int, out_channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, cfg.modes
        width, emb_dim = cfg.width, 4 * cfg.width
        self.embed = ConditionEmbedding(width, emb_dim, cfg.cond_keys)
        self.lift = nn.Linear(in_channels + GRID_CHANNELS, width)
        self.shifts = nn.ModuleList(nn.Linear(emb_dim, width) for _ in range(cfg.layers + 1))
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, cfg.modes) for _ in range(cfg.layers))
        self.pointwise = nn.ModuleList(nn.Linear(width, width) for _ in range(cfg.layers))
        self.project = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, out_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_load_state_dict_pre_hook(_squeeze_pointwise_weights)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, **cond: torch.Tensor | float) -> torch.Tensor:
        """Return the network output (B, out_channels, H, W) for x_t (B, in_channels, H, W)."""
        if x_t.ndim != 4 or x_t.shape[1] != self.in_channels:
            raise ValueError(f"FNO expects x_t of shape (B, {self.in_channels}, H, W), got {tuple(x_t.shape)}")
        batch, _, height, width = x_t.shape
        emb = F.silu(self.embed(t, batch, x_t.device, cond))
        grid = grid_features(height, width, x_t.device, x_t.dtype).expand(batch, -1, -1, -1)
        v = linear_per_pixel(self.lift, torch.cat([x_t, grid], dim=1)) + self.shifts[0](emb)[:, :, None, None]
        last = len(self.spectral) - 1
        for layer, (spectral, skip) in enumerate(zip(self.spectral, self.pointwise)):
            h = spectral(v)  # a fresh tensor (not a view) that autograd does not keep: summed into in place
            h += linear_per_pixel(skip, v)
            h += self.shifts[layer + 1](emb)[:, :, None, None]
            v = F.gelu(h) if layer != last else h
        return linear_per_pixel(self.out, F.gelu(linear_per_pixel(self.project, v)))
