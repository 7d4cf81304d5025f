"""Priors: the terminal law N(m, Σ) of a Gaussian diffusion, Σ = Uᵀ diag(λ) U diagonal in a basis U.

A prior holds λ (one variance per basis component, shape (C, H, W)) and a data-space
mean m. Three families:

- white: λ_k = v for every component (pixel variance v);
- power law / Matérn, trace class: λ_k = HW · a² (τ² + |k|²)^(−s) on the Fourier or DCT
  basis, s > 1 so that Σ_k (τ² + |k|²)^(−s) < ∞ in 2-D. The factor HW follows the
  function-space convention of `diffspace.resolution`: basis coefficients are √(HW)
  times the resolution-independent Fourier coefficients, so the mean squared pixel
  value Σ_k a²(τ² + |k|²)^(−s) converges as the grid is refined;
- Laplacian, trace class: λ_k = HW · a² (τ² + μ_k)^(−s) with μ_k the symbol of the
  periodic (Fourier) or Neumann (DCT) 5-point Laplacian −Δ_h/(4π²) on the H×W grid,
  μ_k = (H²/π²) sin²(π k_y/H) + (W²/π²) sin²(π k_x/W) → |k|² as the grid is refined. The
  constant mode keeps λ_0 = HW a² τ^(−2s) > 0. (The reference code of Hagemann et al.
  applies |−Δ_h|^(−s/2) and sets the infinite k = 0 factor to zero, so its noise has no
  mean mode and its covariance is singular; the τ² shift here avoids that defect.)
- fitted: λ_k and m estimated from data (GUD's whitening choice).

White noise (λ_k = HW, i.e. power_law_prior with s = 0) is the non-trace-class control:
its mean squared pixel value grows like HW as the grid is refined.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffspace.resolution import power_law_variance
from diffspace.spaces import Basis, DCTBasis, FourierBasis, Shape


class Prior(nn.Module):
    """Per-component variances λ (in basis coordinates) and a data-space mean m."""

    def __init__(self, variance: Tensor, mean: Tensor | None = None) -> None:
        super().__init__()
        if variance.dim() != 3:
            raise ValueError(f"prior variances are shaped (C, H, W); got {tuple(variance.shape)}")
        if not bool((variance > 0).all()):
            raise ValueError("prior variances must be strictly positive")
        self.register_buffer("variance", variance.clone())
        self.register_buffer("mean", torch.zeros_like(variance) if mean is None else mean.clone())

    @property
    def shape(self) -> Shape:
        """The (C, H, W) shape this prior describes."""
        return tuple(self.variance.shape)

    def log_variance_labels(self) -> Tensor:
        """Labels −log λ (float64, CPU): with softness 1 these reproduce standard diffusion."""
        return -torch.log(self.variance.detach().to("cpu", torch.float64))

    def sample(self, basis: Basis, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw x = m + Uᵀ(√λ ⊙ ξ), ξ ~ N(0, I), shape (num, C, H, W)."""
        noise = torch.randn(
            (num, *self.shape), generator=generator, device=self.variance.device, dtype=self.variance.dtype
        )
        return basis.decode(noise * self.variance.sqrt()) + self.mean


def white_prior(shape: Shape, variance: float = 1.0) -> Prior:
    """λ_k = v for every component: N(0, v I) in any orthonormal basis."""
    if variance <= 0:
        raise ValueError(f"white prior variance must be > 0; got {variance}")
    return Prior(torch.full(shape, float(variance)))


def power_law_prior(
    basis: Basis,
    shape: Shape,
    tau: float = 1.0,
    exponent: float = 2.0,
    amplitude: float = 1.0,
    allow_non_trace_class: bool = False,
) -> Prior:
    """λ_k = HW · a² (τ² + |k|²)^(−s) on a Fourier or DCT basis; trace class iff s > 1."""
    if not isinstance(basis, (FourierBasis, DCTBasis)):
        raise ValueError(
            f"a power-law prior needs frequency labels: use the fourier or dct basis, not {basis.name!r}"
        )
    if exponent <= 1.0 and not allow_non_trace_class:
        raise ValueError(
            f"power-law exponent s = {exponent} does not give a trace-class covariance in 2-D "
            "(Σ_k (τ² + |k|²)^(−s) diverges unless s > 1); choose s > 1, or pass "
            "allow_non_trace_class=True for a deliberate white-noise control"
        )
    if tau <= 0 and exponent > 0:
        raise ValueError(f"power-law prior needs τ > 0 (the k = 0 mode is otherwise infinite); got {tau}")
    return Prior(power_law_variance(basis.labels(shape), shape, tau, exponent, amplitude).to(torch.float32))


def laplacian_symbol(basis: Basis, shape: Shape) -> Tensor:
    """μ_k of −Δ_h/(4π²) on a grid: (H²/π²) sin²(θ_y) + (W²/π²) sin²(θ_x), θ = πk/H (Fourier) or πi/(2H) (DCT)."""
    _, h, w = shape
    if isinstance(basis, FourierBasis):
        ky = torch.fft.fftfreq(h, d=1.0 / h).to(torch.float64)
        kx = torch.fft.fftfreq(w, d=1.0 / w).to(torch.float64)
        theta_y, theta_x = math.pi * ky / h, math.pi * kx / w
    elif isinstance(basis, DCTBasis):
        theta_y = math.pi * torch.arange(h, dtype=torch.float64) / (2 * h)
        theta_x = math.pi * torch.arange(w, dtype=torch.float64) / (2 * w)
    else:
        raise ValueError(
            f"a Laplacian prior needs a frequency basis: use the fourier or dct basis, not {basis.name!r}"
        )
    symbol = (h / math.pi) ** 2 * theta_y.sin()[:, None] ** 2 + (w / math.pi) ** 2 * theta_x.sin()[None, :] ** 2
    return symbol.expand(shape).clone()


def laplacian_prior(
    basis: Basis, shape: Shape, tau: float = 1.0, exponent: float = 2.0, amplitude: float = 1.0
) -> Prior:
    """λ_k = HW · a² (τ² + μ_k)^(−s), μ_k the grid Laplacian's symbol (laplacian_symbol); needs τ > 0, s > 1."""
    if exponent <= 1.0:
        raise ValueError(
            f"Laplacian-prior exponent s = {exponent} does not give a trace-class covariance in 2-D; choose s > 1"
        )
    if tau <= 0:
        raise ValueError(
            f"Laplacian prior needs τ > 0: τ = {tau} leaves the constant mode with infinite (or, as in the "
            "reference code, zeroed) variance"
        )
    _, h, w = shape
    variance = h * w * amplitude**2 * (tau**2 + laplacian_symbol(basis, shape)) ** (-exponent)
    return Prior(variance.to(torch.float32))


def fitted_prior(basis: Basis, data: Tensor, floor: float = 1e-3) -> Prior:
    """λ_k = Var_data[(U(x − m))_k] and m = E_data[x]; λ floored at `floor` × mean(λ)."""
    if data.dim() != 4 or data.shape[0] < 2:
        raise ValueError(f"fitting a prior needs data shaped (N ≥ 2, C, H, W); got {tuple(data.shape)}")
    data64 = data.to(torch.float64)
    mean = data64.mean(0)
    coeffs = torch.cat([basis.encode(chunk - mean) for chunk in data64.split(4096)])
    variance = coeffs.var(0)
    variance = variance.clamp_min(floor * float(variance.mean()))
    return Prior(variance.to(torch.float32), mean.to(torch.float32))
