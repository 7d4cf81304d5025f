"""Noise schedules: γ(t) = log(σ²/α²) for t ∈ [0, 1], scalar or per component.

A variance-preserving Gaussian diffusion has α² = sigmoid(−γ) and σ² = sigmoid(γ).
`schedule(t)` takes t of shape (B,) and returns (γ, dγ/dt) as float tensors that
broadcast against (B, C, H, W): shape (B, 1, 1, 1) for a scalar schedule, (B, C, H, W)
for a component-wise one. Every schedule is increasing from γ(0) (almost clean) to
γ(1) (almost pure noise), with finite endpoints.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """α = √sigmoid(−γ), σ = √sigmoid(γ), so that α² + σ² = 1."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def _as_time(t: Tensor) -> Tensor:
    if t.dim() != 1:
        raise ValueError(f"schedules take times shaped (B,); got shape {tuple(t.shape)}")
    return t.view(-1, 1, 1, 1)


class Schedule(nn.Module, metaclass=ABCMeta):
    """γ(t) and its time derivative; subclasses implement `gamma_and_derivative`."""

    component_wise = False

    @abstractmethod
    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(γ(t), γ′(t)) broadcastable against (B, C, H, W)."""

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.gamma_and_derivative(t)

    def gamma(self, t: Tensor) -> Tensor:
        """γ(t) alone."""
        return self.gamma_and_derivative(t)[0]

    def gamma_range(self) -> tuple[float, float]:
        """(γ_min, γ_max): the clean end γ(0) and the noisy end γ(1), the extremes over the components."""
        ends = self.gamma(torch.tensor([0.0, 1.0], dtype=torch.float64)).view(2, -1)
        return float(ends[0].min()), float(ends[1].max())

    def time_of_gamma(self, gamma: Tensor, iterations: int = 60) -> Tensor:
        """t = γ⁻¹(g) for a scalar schedule, g of shape (B,), by bisection on [0, 1] (float64)."""
        if self.component_wise:
            raise ValueError("a component-wise schedule has no single inverse γ ↦ t")
        target = gamma.to(torch.float64)
        low, high = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(iterations):
            mid = (low + high) / 2
            below = self.gamma(mid).view(-1) < target
            low, high = torch.where(below, mid, low), torch.where(below, high, mid)
        return ((low + high) / 2).to(gamma.dtype)


class LogSNRLinear(Schedule):
    """γ(t) = γ_min + t (γ_max − γ_min)."""

    def __init__(self, gamma_min: float = -10.0, gamma_max: float = 10.0) -> None:
        super().__init__()
        _check_range(gamma_min, gamma_max)
        self.gamma_min, self.gamma_max = gamma_min, gamma_max

    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = _as_time(t)
        slope = self.gamma_max - self.gamma_min
        return self.gamma_min + slope * t, torch.full_like(t, slope)


class Cosine(Schedule):
    """γ(t) = 2 log tan θ(t), θ linear between atan(e^{γ_min/2}) and atan(e^{γ_max/2}).

    The cosine schedule ᾱ = cos²θ truncated to finite log-SNR; γ′ = 4 θ′ / sin 2θ.
    """

    def __init__(self, gamma_min: float = -10.0, gamma_max: float = 10.0) -> None:
        super().__init__()
        _check_range(gamma_min, gamma_max)
        self.theta_min = math.atan(math.exp(gamma_min / 2))
        self.theta_max = math.atan(math.exp(gamma_max / 2))

    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = _as_time(t)
        dtheta = self.theta_max - self.theta_min
        theta = self.theta_min + dtheta * t
        return 2 * torch.log(torch.tan(theta)), 4 * dtheta / torch.sin(2 * theta)


class VPLinear(Schedule):
    """Linear-β VP: α² = e^{−B(t)}, B(t) = B₀ + β_min t + ½(β_max − β_min) t², γ = log(e^B − 1).

    B₀ = softplus(γ_min) and β_max is set so that γ(1) = γ_max (β_max ≈ 20 for γ_max = 10,
    the usual VP-SDE); γ′ = β(t) / (1 − e^{−B}).
    """

    def __init__(self, gamma_min: float = -10.0, gamma_max: float = 10.0, beta_min: float = 0.1) -> None:
        super().__init__()
        _check_range(gamma_min, gamma_max)
        self.b0 = float(F.softplus(torch.tensor(gamma_min, dtype=torch.float64)))
        b1 = float(F.softplus(torch.tensor(gamma_max, dtype=torch.float64)))
        self.beta_min = beta_min
        self.beta_max = 2 * (b1 - self.b0) - beta_min
        if self.beta_max < beta_min:
            raise ValueError(f"beta_min = {beta_min} is too large for γ ∈ [{gamma_min}, {gamma_max}]")

    def gamma_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = _as_time(t)
        beta = self.beta_min + (self.beta_max - self.beta_min) * t
        big_b = self.b0 + self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        return torch.log(torch.expm1(big_b)), beta / (-torch.expm1(-big_b))


class SoftConditioning(Schedule):
    """GUD's component-wise schedule: γ_i(t) = γ_b(t) + a l_i, hierarchy strength a = 1/softness.

    l_i is the ordering label of component i (lower label = generated earlier). The base
    γ_b is log-SNR-linear from γ_min − a·max l to γ_max − a·min l, so every component
    starts at or below the clean target γ_min and ends at or above the noise target γ_max.
    - softness → ∞ (a → 0): all components share γ (equal true SNR after whitening);
    - a = 1, l = −log λ: standard diffusion in the unwhitened basis, exactly;
    - softness → 0 (a → ∞): components i, j are active (γ_min < γ < γ_max) in disjoint time
      windows iff a |l_i − l_j| ≥ γ_max − γ_min: autoregressive generation.
    With `clip`, γ_i is clamped to [γ_min, γ_max], so γ_i′ = 0 (the component is frozen)
    outside its active window.
    `gamma_and_derivative(t, softness)` takes an optional per-sample softness s_b (shape (B,)):
    sample b then follows the schedule this class builds with softness s_b (one model trained
    over a range of softness values); without it, every sample uses `softness`.
    """

    component_wise = True

    def __init__(
        self,
        labels: Tensor,
        softness: float = 1.0,
        gamma_min: float = -10.0,
        gamma_max: float = 10.0,
        clip: bool = False,
    ) -> None:
        super().__init__()
        _check_range(gamma_min, gamma_max)
        if softness <= 0:
            raise ValueError(f"softness must be > 0 (hierarchy strength a = 1/softness); got {softness}")
        if labels.dim() != 3:
            raise ValueError(f"component labels are shaped (C, H, W); got {tuple(labels.shape)}")
        self.softness, self.gamma_min, self.gamma_max, self.clip = float(softness), gamma_min, gamma_max, clip
        self.register_buffer("shift", labels.to(torch.float32) / self.softness)
        self._set_range()
        self.register_load_state_dict_post_hook(lambda module, keys: module._set_range())

    def _set_range(self) -> None:
        """Base schedule start γ_min − max l/s and slope from the shift l/s (again after loading a saved shift)."""
        self.start = self.gamma_min - float(self.shift.max())
        self.slope = (self.gamma_max - float(self.shift.min())) - self.start

    def gamma_range(self) -> tuple[float, float]:
        """(γ_min, γ_max): the clean and noisy targets, whose interval holds every component's active window."""
        return self.gamma_min, self.gamma_max

    @property
    def hierarchy(self) -> float:
        """a = 1/softness."""
        return 1.0 / self.softness

    def gamma_and_derivative(self, t: Tensor, softness: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(γ(t), γ′(t)); with a per-sample softness s (B,), shift l/s, start and slope are those of softness s_b."""
        t = _as_time(t)
        if softness is None:
            shift, start, slope = self.shift, self.start, self.slope
        else:
            shift, start, slope = self._per_sample(softness.to(t.dtype), t.shape[0])
        gamma = start + slope * t + shift
        dgamma = torch.full_like(gamma, slope) if softness is None else slope.expand_as(gamma)
        if self.clip:
            inside = (gamma > self.gamma_min) & (gamma < self.gamma_max)
            gamma = gamma.clamp(self.gamma_min, self.gamma_max)
            dgamma = dgamma * inside
        return gamma, dgamma

    def _per_sample(self, softness: Tensor, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        """l/s_b, γ_min − max(l)/s_b and the slope for softness s_b, each broadcastable to (B, C, H, W)."""
        if softness.dim() != 1 or softness.shape[0] != batch:
            raise ValueError(f"a per-sample softness is shaped (B,) = ({batch},); got {tuple(softness.shape)}")
        if not bool((softness > 0).all()):
            raise ValueError("softness must be > 0 (hierarchy strength a = 1/softness)")
        ratio = (self.softness / softness).view(-1, 1, 1, 1)
        start = self.gamma_min - float(self.shift.max()) * ratio
        slope = (self.gamma_max - float(self.shift.min()) * ratio) - start
        return self.shift * ratio, start, slope

    def active_window(self) -> tuple[Tensor, Tensor]:
        """Per component, the times (t_start, t_end) where γ_min < γ_i(t) < γ_max."""
        start = (self.gamma_min - self.start - self.shift) / self.slope
        end = (self.gamma_max - self.start - self.shift) / self.slope
        return start, end


def _check_range(gamma_min: float, gamma_max: float) -> None:
    if not gamma_min < gamma_max:
        raise ValueError(f"need gamma_min < gamma_max; got {gamma_min} ≥ {gamma_max}")


SCALAR_SCHEDULES: dict[str, type[Schedule]] = {
    "logsnr_linear": LogSNRLinear,
    "cosine": Cosine,
    "vp_linear": VPLinear,
}
