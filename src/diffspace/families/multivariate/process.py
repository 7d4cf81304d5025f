"""Multivariate diffusion with auxiliary variables (Singhal, Goldstein, Ranganath; ICLR 2023).

Per pixel the state is u = (y, v¹ … v^{K−1}): y the transformed data (logit, then a basis),
v the auxiliaries; a batch is stored variable-major as (B, K·C, H, W). The forward SDE

    du = β(t)A₀ u dt + √(2β(t)D) dW,   A₀ = −(Q + D)Σ_∞⁻¹,

keeps N(0, Σ_∞) invariant. The hybrid kernel conditions on y₀ alone (v₀ ~ N(0, σ₀²I)):
u_t | y₀ ~ N(φ_t y₀, Σ_t), φ_t = Φ_t e₁, Σ_t from Σ₀ = diag(0, σ₀², …) by the matrix-fraction
decomposition (`linear_sde`). The network predicts ε in u_t = φ_t y₀ + L_t ε (L_t L_tᵀ = Σ_t);
its score is s = −L_t⁻ᵀ ε̂. With G = 2βD, M = L⁻¹GL⁻ᵀ, A = βA₀ and d = C·H·W, the ELBO is

    −log p(x) ≤ ∫_{t_min}^1 E[½(ε̂ − ε)ᵀ(M ⊗ I)(ε̂ − ε)] − ½ d tr M − d tr A dt     (diffusion)
               + E[−log N(u₁; 0, Σ_∞) | y₀]                                    (prior cross-entropy)
               − d[½(K−1) log 2πe + ½ log det Σ_{t_min} + ½ log φᵀΣ_{t_min}⁻¹φ]  (decoder at t_min)
               − log |det ∂y/∂x|                                              (transform)

(the denoising score-matching form of ½‖gᵀs‖² + ∇·(ggᵀs) − ∇·f integrated by parts against
q(u_t | y₀)). The decoder p(y₀ | u_{t_min}) = N(y₀; φᵀΣ⁻¹u/φᵀΣ⁻¹φ, 1/φᵀΣ⁻¹φ) plus the kernel
entropy tends to the auxiliary entropy H(q(v₀)) = d ½(K−1) log 2πeσ₀² as t_min → 0; the bound
"without offset" uses that limit in its place.

All K×K maths (expm, Cholesky, triangular solves) runs in float64 whatever the state's dtype: it is
a few hundred K×K matrices per step, and in float32 the tiny x-variance of CLD/ALDA kernels near
t_min (∝ τ³ … τ⁵) would be lost to round-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable

import torch
from torch import Tensor, nn

from diffspace.families.multivariate.config import IMPORTANCE, TRANSFORMS
from diffspace.families.multivariate.kernels import (
    LinearBeta, doublings_for, drift_matrix, fraction_block, fraction_kernel, kron_apply, kron_quadratic,
    symmetric_sqrt,
)
from diffspace.families.multivariate.samplers import SAMPLERS
from diffspace.likelihood import dequantize, discrete_bpd
from diffspace.noise import Generator, gaussian_noise, stratified_times
from diffspace.process import Capabilities, Marginal, Prediction
from diffspace.sampling import noise_grid
from diffspace.spaces import Basis, PixelBasis, Shape

Net = Callable[..., Tensor]

#: Points of the log-spaced time grid on which the "trace" importance density is tabulated.
IMPORTANCE_GRID = 128


@dataclass
class Kernel:
    """Hybrid-kernel quantities at a batch of times, one K×K row per sample (float64).

    drift A(t) = β(t)A₀, ggt = 2β(t)D, phi Φ_t, cov Σ_t, chol L_t, linv L_t⁻¹.
    """

    drift: Tensor
    ggt: Tensor
    phi: Tensor
    cov: Tensor
    chol: Tensor
    linv: Tensor

    def weight(self) -> Tensor:
        """M = L⁻¹ (g gᵀ) L⁻ᵀ: ½‖s − ∇log q‖²_{ggᵀ} = ½(ε̂ − ε)ᵀ M (ε̂ − ε) per pixel."""
        return torch.bmm(torch.bmm(self.linv, self.ggt), self.linv.transpose(1, 2))

    def rows(self, index: slice) -> Kernel:
        """The kernel at the times `index` selects."""
        return Kernel(*(getattr(self, f.name)[index] for f in fields(self)))

    def expand(self, batch: int) -> Kernel:
        """A kernel at one time as the same kernel at `batch` times (views, nothing copied)."""
        return Kernel(*(getattr(self, f.name).expand(batch, -1, -1) for f in fields(self)))


@dataclass
class ElboTerms:
    """Per-sample terms of the negative ELBO of −log p(x), in nats; `dim` = C·H·W.

    diffusion — the time integral over [t_min, 1], one importance-weighted draw.
    prior     — cross-entropy E[−log N(u₁; 0, Σ_∞) | y₀].
    decoder   — −E log p(y₀ | u_{t_min}) − H(q(u_{t_min} | y₀)): the truncation ("offset") term.
    aux_entropy — −H(q(v₀)), the t_min → 0 limit of `decoder`.
    jacobian  — −log |det ∂y/∂x| of the data transform.
    """

    diffusion: Tensor
    prior: Tensor
    decoder: Tensor
    aux_entropy: Tensor
    jacobian: Tensor
    dim: int

    def nll(self, offset: bool = True) -> Tensor:
        """−ELBO in nats: diffusion + prior + (decoder if offset else aux_entropy) + jacobian."""
        start = self.decoder if offset else self.aux_entropy
        return self.diffusion + self.prior + start + self.jacobian

    def bpd(self, offset: bool = True, levels: int = 0) -> Tensor:
        """Bits/dim: −ELBO/(d ln 2), of the discrete data (+ log₂((L−1)/2) per dim) when levels > 0."""
        if levels:
            return discrete_bpd(self.nll(offset), self.dim, levels)
        return self.nll(offset) / (self.dim * math.log(2.0))


def _forget_cached(module: MultivariateDiffusion, incompatible_keys: Any) -> None:
    """load_state_dict post-hook: drop what was cached from the buffers, which were just loaded."""
    module._forget()


class MultivariateDiffusion(nn.Module):
    """A linear diffusion on (y, v¹ … v^{K−1}) per pixel: forward maths, ELBO and reverse-time quantities."""

    def __init__(
        self,
        matrices: nn.Module,
        data_shape: Shape,
        schedule: LinearBeta,
        *,
        x_var: float = 1.0,
        aux_var: float = 1.0,
        aux_init_var: float = 0.01,
        t_min: float = 1e-3,
        importance: str = "trace",
        transform: str = "logit",
        logit_alpha: float = 0.05,
        levels: int = 256,
        basis: Basis | None = None,
        resolution_free: bool = True,
    ) -> None:
        super().__init__()
        if importance not in IMPORTANCE:
            raise ValueError(f"unknown importance {importance!r}; choose one of {IMPORTANCE}")
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; choose one of {TRANSFORMS}")
        if not 0.0 < t_min < 1.0 or min(x_var, aux_var, aux_init_var) <= 0 or not 0 < logit_alpha < 0.5:
            raise ValueError(
                "need 0 < t_min < 1, positive x_var, aux_var, aux_init_var and 0 < logit_alpha < ½; got "
                f"t_min={t_min}, x_var={x_var}, aux_var={aux_var}, aux_init_var={aux_init_var}, "
                f"logit_alpha={logit_alpha}")
        if len(data_shape) != 3:
            raise ValueError(f"data_shape must be (C, H, W); got {tuple(data_shape)}")
        if levels == 1 or levels < 0:
            raise ValueError(f"levels must be 0 (continuous data) or at least 2; got {levels}")
        q, _ = matrices()
        self.num_vars = q.shape[0]
        self.matrices, self.schedule = matrices, schedule
        self.data_shape = tuple(data_shape)
        self.t_min, self.importance, self.transform = t_min, importance, transform
        self.logit_alpha, self.levels, self.aux_init_var = logit_alpha, levels, aux_init_var
        self.basis = basis if basis is not None else PixelBasis()
        k = self.num_vars
        self.register_buffer("stationary_var", torch.tensor([x_var] + [aux_var] * (k - 1), dtype=torch.float64))
        self.register_buffer("sigma0", torch.diag(torch.tensor([0.0] + [aux_init_var] * (k - 1), dtype=torch.float64)))
        self.capabilities = Capabilities(discrete=False, ode_likelihood=False,
                                         resolution_free=resolution_free and not self.learned,
                                         samplers=tuple(SAMPLERS), grids=("edm", "logsnr"))
        # What follows from (Q, D) alone, each with the `_matrices_key` it was computed for: the importance table
        # (on its device), B(1)·‖block‖₂, the covariance check, D^½ and, for fixed diffusions, the kernel at the ends.
        self._importance_table: tuple[Any, tuple[Tensor, Tensor, Tensor, Tensor]] | None = None
        self._reach_cache: tuple[Any, float] | None = None
        self._checked_key: Any = None
        self._d_sqrt: tuple[Any, Tensor] | None = None
        self._ends: Kernel | None = None
        self.register_load_state_dict_post_hook(_forget_cached)

    def _forget(self) -> None:
        """Drop what was cached from (Q, D) and the buffers (they were just loaded)."""
        self._importance_table = self._reach_cache = self._checked_key = self._d_sqrt = self._ends = None

    def _matrices_key(self) -> tuple[tuple[Tensor, ...], tuple[int, ...]]:
        """What identifies the current (Q, D): the learned parameters (the objects) and their version counters,
        which every in-place update (an optimizer step, a load) advances; () for a fixed diffusion."""
        params = tuple(self.matrices.parameters())
        return params, tuple(p._version for p in params)

    def _is_current(self, key: Any) -> bool:
        """Whether `key` (a `_matrices_key`, or None) is the current one."""
        if key is None:
            return False
        params, versions = self._matrices_key()
        return len(params) == len(key[0]) and all(a is b for a, b in zip(params, key[0])) and versions == key[1]

    @property
    def learned(self) -> bool:
        """Whether (Q, D) are trained parameters (then nothing that depends on them may be cached)."""
        return any(True for _ in self.matrices.parameters())

    # ----- coordinates -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the buffers live."""
        return self.stationary_var.device

    def _check(self, x: Tensor, channels: int) -> None:
        c, h, w = self.data_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != (channels, h, w):
            raise ValueError(f"this process expects (B, {channels}, {h}, {w}) tensors; got shape {tuple(x.shape)}")

    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(B, C, H, W) → (B, K·C, H, W): x and its K − 1 auxiliaries as channel blocks."""
        if len(data_shape) != 4:
            raise ValueError(f"state_shape needs a (B, C, H, W) shape; got {tuple(data_shape)}")
        b, c, h, w = data_shape
        return b, c * self.num_vars, h, w

    def network_channels(self, data_channels: int) -> tuple[int, int]:
        """(in, out) channels of the network: C·K each (the network sees u_t and predicts ε)."""
        return data_channels * self.num_vars, data_channels * self.num_vars

    def _unit_interval(self, x: Tensor) -> tuple[Tensor, float]:
        """p ∈ [0, 1) of model-space x and dp/dx: p = (k + u + ½)/L for dequantized levels, else (x + 1)/2."""
        if self.levels:
            scale = (self.levels - 1) / (2.0 * self.levels)
            return (x + 1) * scale + 0.5 / self.levels, scale
        return (x + 1) * 0.5, 0.5

    def encode_data(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(y, log|det ∂y/∂x| per sample) with y = U logit(λ + (1 − 2λ)p) (or y = U x for transform "none")."""
        self._check(x, self.data_shape[0])
        if self.transform == "none":
            return self.basis.encode(x), x.new_zeros(x.shape[0])
        p, scale = self._unit_interval(x)
        s = self.logit_alpha + (1 - 2 * self.logit_alpha) * p
        if bool(((s <= 0) | (s >= 1)).any()):
            raise ValueError("data lie outside the logit transform's domain: expected model-space values in "
                             f"[−1, 1] (dequantized on {self.levels} levels); got range "
                             f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")
        y = torch.log(s) - torch.log1p(-s)
        log_det = math.log((1 - 2 * self.logit_alpha) * scale) - torch.log(s) - torch.log1p(-s)
        return self.basis.encode(y), log_det.flatten(1).sum(1)

    def decode_data(self, y: Tensor) -> Tensor:
        """Inverse of `encode_data`: x from y (model space)."""
        y = self.basis.decode(y)
        if self.transform == "none":
            return y
        p = (torch.sigmoid(y) - self.logit_alpha) / (1 - 2 * self.logit_alpha)
        if self.levels:
            return (p * self.levels - 0.5) * 2.0 / (self.levels - 1) - 1.0
        return 2.0 * p - 1.0

    def to_state(self, x: Tensor) -> Tensor:
        """The state at t = 0 with the auxiliaries at their mean: u = (y, 0, …, 0), y = encode_data(x)."""
        y = self.encode_data(x)[0]
        blocks = [y] + [torch.zeros_like(y)] * (self.num_vars - 1)
        return torch.cat(blocks, dim=1)

    def from_state(self, u: Tensor) -> Tensor:
        """x in model space from the state: the first C channels, transformed back (auxiliaries dropped)."""
        self._check(u, self.data_shape[0] * self.num_vars)
        return self.decode_data(u[:, : self.data_shape[0]])

    # ----- forward process ---------------------------------------------------------------
    def kernel(self, t: Tensor) -> Kernel:
        """The K×K kernel at times t (B,), read as min(max(t, t_min), 1); a batch of one time repeated without copies
        (a sampler's `t.expand(B)`) is computed once.

        The covariance is checked (ValueError when it is singular) once per value of (Q, D): on the importance
        grid of [t_min, 1] when the table is built, else at t_min (the covariance from a point,
        ∫₀^τ e^{uA₀}Γe^{uA₀ᵀ} du, only grows with τ, so t_min is the worst case). Apart from that check and
        B(1)·‖block‖₂, read back once per value of (Q, D) (so once for a fixed diffusion, once per optimizer step for
        a learned one, and never again while sampling), nothing is read from the device."""
        if t.dim() == 1 and t.numel() > 1 and t.stride(0) == 0:
            return self.kernel(t[:1]).expand(t.numel())
        if not self._is_current(self._checked_key):
            if self.importance == "trace":
                self._importance_cells(t.device)
            else:
                with torch.no_grad():
                    self._kernel(torch.full((1,), self.t_min, dtype=torch.float64, device=t.device), check=True)
                self._checked_key = self._matrices_key()
        return self._kernel(t, check=False)

    def _reach(self, block: Tensor) -> float:
        """B(1)·‖block‖₂, a bound of τ‖block‖₂ over t ∈ [t_min, 1] that fixes the doublings of `matrix_fraction`
        (read back once per value of (Q, D))."""
        if self._reach_cache is not None and self._is_current(self._reach_cache[0]):
            return self._reach_cache[1]
        reach = float(self.schedule.integral(1.0)) * float(torch.linalg.matrix_norm(block.detach(), ord=2))
        self._reach_cache = (self._matrices_key(), reach)
        return reach

    def _kernel(self, t: Tensor, check: bool) -> Kernel:
        """The kernel at every time of t (no de-duplication); `check` reads the Cholesky status back."""
        times = t.detach().to(torch.float64).clamp(self.t_min, 1.0)
        q, d = self.matrices()
        a0 = drift_matrix(q, d, self.stationary_var)
        gamma = 2 * d
        block = fraction_block(a0, gamma)
        phi, cov = fraction_kernel(block, self.schedule.integral(times), self.sigma0,
                                   doublings_for(self._reach(block)))
        chol, info = torch.linalg.cholesky_ex(cov)
        if check and bool((info != 0).any()):
            raise ValueError(f"the kernel covariance is singular at t = {float(times[info != 0][0]):.3g}: raise "
                             "t_min or aux_init_var, or use a diffusion whose noise reaches x")
        eye = torch.eye(self.num_vars, dtype=torch.float64, device=chol.device).expand_as(chol)
        linv = torch.linalg.solve_triangular(chol, eye, upper=False)
        beta = self.schedule.beta(times)[:, None, None]
        return Kernel(drift=beta * a0, ggt=beta * gamma, phi=phi, cov=cov, chol=chol, linv=linv)

    def kernel_with_ends(self, t: Tensor) -> tuple[Kernel, Kernel]:
        """(the kernel at t (B,), the kernel at (t_min, 1)): one evaluation for a learned diffusion; a fixed one's
        ends are computed once per device."""
        ends = torch.tensor([self.t_min, 1.0], dtype=torch.float64, device=t.device)
        if self.learned:  # never cached: it is differentiated in (Q, D)
            both = self.kernel(torch.cat([t.detach().to(torch.float64), ends]))
            return both.rows(slice(0, len(t))), both.rows(slice(len(t), None))
        if self._ends is None or self._ends.phi.device != t.device:
            self._ends = self.kernel(ends)
        return self.kernel(t), self._ends

    def log_snr(self, t: Tensor) -> Tensor:
        """λ(t) = log φ_tᵀΣ_t⁻¹φ_t per time (T,), float64: the log-SNR of the data in u_t (the precision of the best
        linear estimate of y₀ from u_t given y₀'s kernel), non-increasing in t; φ²/σ² for the VP diffusion."""
        kernel = self.kernel(t)
        return torch.log((kernel.linv @ kernel.phi[:, :, :1]).pow(2).sum((1, 2)))

    def time_grid(self, name: str, steps: int, rho: float | None, t_end: float,
                  cond: dict[str, Any] | None = None) -> Tensor:
        """The grids "edm" and "logsnr" in this diffusion's noise coordinate γ = −λ (`log_snr`), from t = 1 to
        t_end (`diffspace.sampling.noise_grid`); times below t_min read as t_min."""
        with torch.no_grad():
            return noise_grid(name, steps, rho, t_end, lambda t: -self.log_snr(t.to(self.device)).cpu())

    def _mean(self, y0: Tensor, kernel: Kernel) -> Tensor:
        """E[u_t | y₀] = φ_t y₀ per pixel (v₀ at its mean 0), shape (B, K·C, H, W)."""
        phi = kernel.phi[:, :, 0].to(y0.dtype)
        return (phi[:, :, None] * y0.reshape(y0.shape[0], 1, -1)).reshape(self.state_shape(tuple(y0.shape)))

    def marginal(self, x0: Tensor, t: Tensor, generator: Generator = None, **cond: Any) -> Marginal:
        """u_t = φ_t y₀ + L_t ε with y₀ = encode_data(x0), ε ~ N(0, I); the target is ε."""
        y0 = self.encode_data(x0)[0]
        kernel = self.kernel(t)
        eps = gaussian_noise(self.state_shape(tuple(y0.shape)), generator, y0.device, y0.dtype)
        return Marginal(self._mean(y0, kernel) + kron_apply(kernel.chol, eps), eps)

    def prior_sample(
        self, shape: tuple[int, ...], generator: Generator = None, device: torch.device | None = None
    ) -> Tensor:
        """u₁ ~ N(0, Σ_∞ ⊗ I), the stationary law, for a state shape (B, K·C, H, W)."""
        noise = gaussian_noise(tuple(shape), generator, device or self.device)
        std = self.stationary_var.sqrt().to(noise)
        return (noise.reshape(shape[0], self.num_vars, -1) * std[:, None]).reshape(shape)

    # ----- predictions -------------------------------------------------------------------
    def predict_eps(self, net: Net, u: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Tensor:
        """ε̂(u_t, t) = net(u_t, max(t, t_min), **cond) in the state's dtype."""
        return net(u, t.clamp_min(self.t_min), **(cond or {})).to(u.dtype)

    def predict(self, net: Net, u: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Prediction:
        """One network evaluation: score −(L_t⁻ᵀ ⊗ I) ε̂ and the state with y replaced by E[y₀ | u_t] =
        φᵀ(u − Lε̂)/φᵀφ (Tweedie) and the auxiliaries by 0; context (kernel, ε̂)."""
        kernel = self.kernel(t)
        eps = self.predict_eps(net, u, t, cond)
        residual = (u - kron_apply(kernel.chol, eps)).reshape(u.shape[0], self.num_vars, -1)
        phi = kernel.phi[:, :, 0].to(u.dtype)
        denoised = torch.zeros_like(residual)
        denoised[:, 0] = torch.einsum("bk,bkd->bd", phi, residual) / (phi**2).sum(1, keepdim=True)
        score = -kron_apply(kernel.linv.transpose(1, 2), eps)
        return Prediction(score=score, denoised=denoised.reshape(u.shape), context=(kernel, eps))

    def reverse_sde(self, u: Tensor, t: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
        """(drift, g) of the reverse SDE du = [A u − ggᵀ s] dt + g dW̄, with ggᵀ s = −(ggᵀL⁻ᵀ) ε̂ and
        g = (2βD)^½ as (B, K, K) factors applied by `diffusion_noise`."""
        kernel, eps = prediction.context
        drift = kron_apply(kernel.drift, u) + kron_apply(kernel.ggt @ kernel.linv.transpose(1, 2), eps)
        beta = self.schedule.beta(t.detach().to(torch.float64).clamp(self.t_min, 1.0))
        return drift, torch.sqrt(2 * beta)[:, None, None] * self._diffusion_sqrt()

    def _diffusion_sqrt(self) -> Tensor:
        """D^½ (K, K), so that (2βD)^½ = √(2β) D^½; kept per value of (Q, D) when no gradient is recorded (the
        eigendecomposition reads its status back from the device)."""
        if self._d_sqrt is not None and self._is_current(self._d_sqrt[0]) and not torch.is_grad_enabled():
            return self._d_sqrt[1]
        root = symmetric_sqrt(self.matrices()[1])
        if not torch.is_grad_enabled():
            self._d_sqrt = (self._matrices_key(), root)
        return root

    def diffusion_noise(self, g: Tensor, noise: Tensor) -> Tensor:
        """(g ⊗ I) ξ: the per-pixel K×K diffusion factor applied to white noise."""
        return kron_apply(g, noise)

    def pf_ode_velocity(self, u: Tensor, t: Tensor, prediction: Prediction) -> Tensor:
        """Probability-flow ODE: du/dt = A u − ½ ggᵀ s = A u + ½(ggᵀL⁻ᵀ) ε̂."""
        kernel, eps = prediction.context
        return kron_apply(kernel.drift, u) + 0.5 * kron_apply(kernel.ggt @ kernel.linv.transpose(1, 2), eps)

    def prior_log_density(self, u: Tensor) -> Tensor:
        """log N(u; 0, Σ_∞ ⊗ I) per sample."""
        var = self.stationary_var.to(u.dtype)
        blocks = u.reshape(u.shape[0], self.num_vars, -1)
        pixels = blocks.shape[-1]
        quadratic = (blocks.pow(2) / var[:, None]).sum((1, 2))
        return -0.5 * (quadratic + pixels * (var.log().sum() + self.num_vars * math.log(2 * math.pi)))

    def likelihood_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Not defined: the probability-flow ODE gives the density of (y, auxiliaries) jointly, not of x."""
        raise ValueError("a multivariate diffusion has no exact ODE likelihood of the data (the state holds "
                         "auxiliary variables); use the ELBO (bpd)")

    # ----- objectives --------------------------------------------------------------------
    def _importance_cells(self, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(grid, cell widths, cell masses, CDF) of the "trace" density ∝ tr(ggᵀ Σ_t⁻¹) on a log-spaced grid
        (trapezoid cell masses); built once per value of (Q, D) and device (once for fixed diffusions, every
        optimizer step for learned ones), checking the covariance on the grid as it goes."""
        cached = self._importance_table
        if cached is not None and self._is_current(cached[0]) and cached[1][0].device == torch.device(device):
            return cached[1]
        key = self._matrices_key()
        grid = torch.logspace(math.log10(self.t_min), 0.0, IMPORTANCE_GRID, dtype=torch.float64, device=device)
        with torch.no_grad():
            density = torch.diagonal(self._kernel(grid, check=True).weight(), dim1=1, dim2=2).sum(1)
        self._checked_key = key
        width = grid[1:] - grid[:-1]
        mass = 0.5 * (density[1:] + density[:-1]) * width
        mass = mass / mass.sum()
        table = (grid, width, mass, torch.cumsum(mass, 0))
        self._importance_table = (key, table)
        return table

    def importance_times(self, batch: int, generator: Generator, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """Stratified t ∈ [t_min, 1] (float64) and weights 1/p(t): p uniform, or ("trace") piecewise constant
        on `_importance_cells`, held fixed (no gradient), so that E[w f(t)] = ∫ f exactly."""
        u = stratified_times(batch, generator, device).to(torch.float64)
        if self.importance == "uniform":
            return self.t_min + u * (1 - self.t_min), torch.full_like(u, 1 - self.t_min)
        grid, width, mass, cdf = self._importance_cells(device)
        cell = torch.searchsorted(cdf, u, right=True).clamp(max=len(mass) - 1)
        fraction = ((u - (cdf[cell] - mass[cell])) / mass[cell]).clamp(0.0, 1.0)
        return grid[cell] + fraction * width[cell], width[cell] / mass[cell]

    def elbo_terms(
        self, net: Net, x0: Tensor, generator: Generator = None, cond: dict[str, Any] | None = None
    ) -> ElboTerms:
        """The terms of −ELBO(x₀) (module docstring) with one importance-sampled t and ε per sample."""
        x0 = x0.to(torch.promote_types(x0.dtype, torch.float32))
        y0, log_det = self.encode_data(x0)
        batch, dim, k = y0.shape[0], y0[0].numel(), self.num_vars
        t, weight = self.importance_times(batch, generator, y0.device)
        kernel, ends = self.kernel_with_ends(t)
        eps = gaussian_noise(self.state_shape(tuple(y0.shape)), generator, y0.device, y0.dtype)
        u = self._mean(y0, kernel) + kron_apply(kernel.chol, eps)
        eps_hat = self.predict_eps(net, u, t.to(y0.dtype), cond)
        m = kernel.weight()
        trace_m = torch.diagonal(m, dim1=1, dim2=2).sum(1)
        trace_a = torch.diagonal(kernel.drift, dim1=1, dim2=2).sum(1)
        integrand = 0.5 * kron_quadratic(m, eps_hat - eps) - dim * (0.5 * trace_m + trace_a)
        aux = -0.5 * dim * (k - 1) * math.log(2 * math.pi * math.e * self.aux_init_var)
        terms = (weight * integrand, self._prior_cross_entropy(y0, ends), -dim * self._start_entropy(ends),
                 torch.full_like(weight, aux), -log_det)
        return ElboTerms(*(term.to(y0.dtype).expand(batch) for term in terms), dim=dim)

    def _prior_cross_entropy(self, y0: Tensor, ends: Kernel) -> Tensor:
        """E[−log N(u₁; 0, Σ_∞) | y₀] = ½ Σ_pixels [tr(Σ_∞⁻¹Σ₁) + y₀²φ₁ᵀΣ_∞⁻¹φ₁ + K log 2π + log det Σ_∞]."""
        var = self.stationary_var
        phi, cov = ends.phi[1, :, 0], ends.cov[1]
        per_pixel = torch.diagonal(cov) @ (1 / var) + self.num_vars * math.log(2 * math.pi) + var.log().sum()
        squares = y0.to(torch.float64).pow(2).flatten(1).sum(1)
        return 0.5 * (y0[0].numel() * per_pixel + squares * (phi**2 / var).sum())

    def _start_entropy(self, ends: Kernel) -> Tensor:
        """E log p(y₀ | u) + H(q(u | y₀)) per pixel at t_min: ½(K−1) log 2πe + ½ log det Σ + ½ log φᵀΣ⁻¹φ."""
        chol, phi = ends.chol[0], ends.phi[0, :, 0]
        whitened = ends.linv[0] @ phi
        return (0.5 * (self.num_vars - 1) * math.log(2 * math.pi * math.e)
                + torch.log(torch.diagonal(chol)).sum() + torch.log(whitened.norm()))

    def nll_bound(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """−ELBO of the continuous density of model-space x₀ in bits/dim, per sample (with the decoder term)."""
        return self.elbo_terms(net, x0, generator, cond).bpd(offset=True)

    def loss(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Per-sample training loss (B,): the negative ELBO in bits/dim of the uniformly dequantized
        data (of the discrete data when levels > 0)."""
        x0 = x0.float()
        if self.levels:
            x0 = dequantize(x0, self.levels, generator)
        return self.elbo_terms(net, x0, generator, cond).bpd(offset=True, levels=self.levels)
