"""Gaussian diffusion in a chosen basis, with a diagonal prior and a (component-wise) schedule.

State: whitened coefficients z = U(x − m)/√λ (basis U, prior mean m and variances λ),
so the prior N(m, Uᵀ diag(λ) U) becomes N(0, I). Forward marginal, per component:

    z_t = α_t z_0 + σ_t ε,   α² = sigmoid(−γ),  σ² = sigmoid(γ),  γ = γ(t) per component.

It solves dz = −½γ′σ² z dt + √(γ′σ²) dW. The network predicts ε; the score is −ε/σ and
the denoised estimate ẑ_0 = (z_t − σ ε̂)/α.

In data space x_t = m + Uᵀ(√λ z_t) this is x_t − m = α (x_0 − m) + σ C^{1/2} ξ with C = Uᵀ diag(λ) U:
for a VP schedule (α² = e^{−∫β}) the SDE dX = −½β X dt + √β C^{1/2} dW of infinite-dimensional
(multilevel) diffusion. The network may return ε in data layout (network_output = "eps",
y = Uᵀ ε) or the data-space noise n = C^{1/2} ξ = Uᵀ(√λ ε) ("noise"), which for a trace-class
C is a resolution-independent function; weighting "noise" scores it in the data-space L²
norm, mean (n̂ − n)² = mean_k λ_k (ε̂_k − ε_k)² (the loss of Hagemann et al.).

Softness as conditioning (GUD): with the soft schedule, a `cond["softness"]` (a number or one
value s_b per sample) selects the schedule of softness s_b for sample b and is passed to the
network like any conditioning. With `softness_range = (s_min, s_max)` one model serves a range:
training draws the hierarchy a = 1/s uniformly in [1/s_max, 1/s_min] per example, and a call
without a softness uses the schedule's own `softness` (and tells the network so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffspace.families.gaussian.config import NETWORK_INPUTS, NETWORK_OUTPUTS, WEIGHTINGS
from diffspace.families.gaussian.grids import GAUSSIAN_GRIDS, time_grid
from diffspace.families.gaussian.priors import Prior
from diffspace.families.gaussian.samplers import SAMPLERS
from diffspace.families.gaussian.schedules import Schedule, SoftConditioning, alpha_sigma
from diffspace.likelihood import dequantize
from diffspace.noise import Generator, gaussian_noise, stratified_times, uniform_noise
from diffspace.process import Capabilities, Marginal, Prediction
from diffspace.spaces import Basis

Net = Callable[..., Tensor]


@dataclass
class NoiseLevel:
    """γ, γ′, α, σ at some times, each broadcastable against (B, C, H, W)."""

    gamma: Tensor
    dgamma: Tensor
    alpha: Tensor
    sigma: Tensor


class GaussianDiffusion(nn.Module):
    """GaussianDiffusion(basis, prior, schedule): forward maths, losses and reverse-time quantities."""

    def __init__(
        self,
        basis: Basis,
        prior: Prior,
        schedule: Schedule,
        weighting: str = "eps",
        network_input: str = "data",
        network_output: str = "eps",
        softness_range: tuple[float, float] | None = None,
        fitted_to_data: bool = False,
        levels: int = 0,
    ) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
        if network_input not in NETWORK_INPUTS:
            raise ValueError(f"unknown network_input {network_input!r}; choose one of {NETWORK_INPUTS}")
        if network_output not in NETWORK_OUTPUTS:
            raise ValueError(f"unknown network_output {network_output!r}; choose one of {NETWORK_OUTPUTS}")
        self.basis, self.prior, self.schedule = basis, prior, schedule
        self.weighting, self.network_input, self.network_output = weighting, network_input, network_output
        if softness_range is not None:
            if not isinstance(schedule, SoftConditioning):
                raise ValueError("a softness range needs the soft-conditioning schedule (process.schedule = soft)")
            if len(softness_range) != 2 or not 0 < softness_range[0] <= softness_range[1]:
                raise ValueError(f"softness_range must be (s_min, s_max) with 0 < s_min ≤ s_max; got {softness_range}")
        self.softness_range = None if softness_range is None else (float(softness_range[0]), float(softness_range[1]))
        if levels == 1 or levels < 0:
            raise ValueError(f"levels must be 0 (no dequantization) or at least 2; got {levels}")
        self.levels = levels
        self.capabilities = Capabilities(discrete=False, ode_likelihood=True, resolution_free=not fitted_to_data,
                                         samplers=tuple(SAMPLERS), grids=GAUSSIAN_GRIDS)

    # ----- coordinates -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the prior lives."""
        return self.prior.variance.device

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.prior.shape:
            raise ValueError(
                f"this process is built for (B, {', '.join(map(str, self.prior.shape))}) tensors; "
                f"got shape {tuple(x.shape)}"
            )

    def to_state(self, x: Tensor) -> Tensor:
        """z = U(x − m)/√λ."""
        self._check(x)
        return self.basis.encode(x - self.prior.mean.to(x.dtype)) / self.prior.variance.to(x.dtype).sqrt()

    def from_state(self, z: Tensor) -> Tensor:
        """x = m + Uᵀ(√λ z)."""
        self._check(z)
        return self.basis.decode(z * self.prior.variance.to(z.dtype).sqrt()) + self.prior.mean.to(z.dtype)

    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The state has the data's shape."""
        return tuple(data_shape)

    def network_channels(self, data_channels: int) -> tuple[int, int]:
        """(in, out) channels of the network: the data's."""
        return data_channels, data_channels

    def network_input_from_state(self, z: Tensor) -> Tensor:
        """What the network sees: m + Uᵀ(√λ z) ("data") or Uᵀ z ("whitened")."""
        return self.from_state(z) if self.network_input == "data" else self.basis.decode(z)

    def state_from_network_input(self, x: Tensor) -> Tensor:
        """Inverse of `network_input_from_state`."""
        return self.to_state(x) if self.network_input == "data" else self.basis.encode(x)

    def eps_from_network_output(self, y: Tensor) -> Tensor:
        """ε from the network's output: ε = U y ("eps") or ε = U y / √λ ("noise")."""
        eps = self.basis.encode(y)
        return eps if self.network_output == "eps" else eps / self.prior.variance.to(y.dtype).sqrt()

    def network_output_from_eps(self, eps: Tensor) -> Tensor:
        """Inverse of `eps_from_network_output`: y = Uᵀ ε ("eps") or y = Uᵀ(√λ ε) ("noise")."""
        if self.network_output == "noise":
            eps = eps * self.prior.variance.to(eps.dtype).sqrt()
        return self.basis.decode(eps)

    # ----- softness ----------------------------------------------------------------------
    def conditioning(
        self, cond: dict[str, Any] | None, batch: int, device: torch.device
    ) -> tuple[dict[str, Any], Tensor | None]:
        """(the network's conditioning, per-sample softness s (B,) or None): s = cond["softness"],
        else the schedule's softness when the model is softness-conditioned (softness_range set)."""
        cond = dict(cond or {})
        if "softness" in cond:
            if not isinstance(self.schedule, SoftConditioning):
                raise ValueError("conditioning on a softness needs the soft schedule (process.schedule = soft)")
            value = torch.as_tensor(cond["softness"], dtype=torch.float32, device=device)
            cond["softness"] = value.expand(batch) if value.dim() == 0 else value
        elif self.softness_range is not None:
            cond["softness"] = torch.full((batch,), self.schedule.softness, device=device)
        return cond, cond.get("softness")

    def draw_softness(self, batch: int, generator: Generator, device: torch.device) -> Tensor:
        """s = 1/a with a ~ U[1/s_max, 1/s_min] per sample (the training distribution of a softness range)."""
        if self.softness_range is None:
            raise ValueError("this process has no softness range to draw from")
        low, high = 1.0 / self.softness_range[1], 1.0 / self.softness_range[0]
        return 1.0 / (low + (high - low) * uniform_noise((batch,), generator, device))

    # ----- forward process ---------------------------------------------------------------
    def noise_level(self, t: Tensor, softness: Tensor | None = None) -> NoiseLevel:
        """γ(t), γ′(t), α(t), σ(t) for times t of shape (B,) (per-sample softness s (B,) with the soft schedule)."""
        gamma, dgamma = self.schedule(t) if softness is None else self.schedule.gamma_and_derivative(t, softness)
        alpha, sigma = alpha_sigma(gamma)
        return NoiseLevel(gamma, dgamma, alpha, sigma)

    def _noisy(self, z0: Tensor, t: Tensor, eps: Tensor, softness: Tensor | None) -> Tensor:
        """z_t = α_t z_0 + σ_t ε."""
        level = self.noise_level(t, softness)
        return level.alpha * z0 + level.sigma * eps

    def marginal(self, x0: Tensor, t: Tensor, generator: Generator = None, **cond: Any) -> Marginal:
        """z_t = α_t z_0 + σ_t ε with z_0 = to_state(x0), ε ~ N(0, I); the target is ε."""
        z0 = self.to_state(x0)
        _, softness = self.conditioning(cond, z0.shape[0], z0.device)
        eps = gaussian_noise(tuple(z0.shape), generator, z0.device, z0.dtype)
        return Marginal(self._noisy(z0, t, eps, softness), eps)

    def prior_sample(
        self, shape: tuple[int, ...], generator: Generator = None, device: torch.device | None = None
    ) -> Tensor:
        """z_1 ~ N(0, I), the terminal law in state coordinates."""
        return gaussian_noise(tuple(shape), generator, device or self.device)

    def time_grid(self, name: str, steps: int, rho: float | None, t_end: float,
                  cond: dict[str, Any] | None = None) -> Tensor:
        """The named grid "edm", "logsnr" or "windows" from t = 1 to t_end, in this process's noise levels
        (`diffspace.families.gaussian.grids`)."""
        return time_grid(self, name, steps, rho, t_end, cond)

    # ----- predictions -------------------------------------------------------------------
    def predict_eps(self, net: Net, z: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Tensor:
        """ε̂(z_t, t) = U net(network input, t, **cond), computed in float32."""
        cond, _ = self.conditioning(cond, z.shape[0], z.device)
        out = net(self.network_input_from_state(z), t, **cond)
        return self.eps_from_network_output(out.to(z.dtype))

    def predict(self, net: Net, z: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Prediction:
        """One network evaluation: score −ε̂/σ and Tweedie's ẑ_0 = (z_t − σ ε̂)/α; context (noise level, ε̂)."""
        cond, softness = self.conditioning(cond, z.shape[0], z.device)
        level = self.noise_level(t, softness)
        eps = self.predict_eps(net, z, t, cond)
        return Prediction(score=-eps / level.sigma, denoised=(z - level.sigma * eps) / level.alpha,
                          context=(level, eps))

    def x0_from_eps(self, z: Tensor, eps: Tensor, t: Tensor, softness: Tensor | None = None) -> Tensor:
        """z₀ = (z_t − σ ε)/α."""
        level = self.noise_level(t, softness)
        return (z - level.sigma * eps) / level.alpha

    def eps_from_x0(self, z: Tensor, z0: Tensor, t: Tensor, softness: Tensor | None = None) -> Tensor:
        """ε = (z_t − α z₀)/σ."""
        level = self.noise_level(t, softness)
        return (z - level.alpha * z0) / level.sigma

    def score_from_eps(self, eps: Tensor, t: Tensor, softness: Tensor | None = None) -> Tensor:
        """∇ log p_t = −ε/σ."""
        return -eps / self.noise_level(t, softness).sigma

    def eps_from_score(self, score: Tensor, t: Tensor, softness: Tensor | None = None) -> Tensor:
        """ε = −σ ∇ log p_t."""
        return -self.noise_level(t, softness).sigma * score

    def reverse_sde(self, z: Tensor, t: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
        """(drift, g) of the reverse SDE dz = [−½γ′σ² z + γ′σ ε̂] dt + √(γ′σ²) dW̄."""
        level, eps = prediction.context
        drift = -0.5 * level.dgamma * level.sigma**2 * z + level.dgamma * level.sigma * eps
        return drift, (level.dgamma * level.sigma**2).sqrt()

    def diffusion_noise(self, g: Tensor, noise: Tensor) -> Tensor:
        """g ξ: the reverse SDE's per-component diffusion scale applied to white noise."""
        return g * noise

    def pf_ode_velocity(self, z: Tensor, t: Tensor, prediction: Prediction) -> Tensor:
        """Probability-flow ODE: dz/dt = −½γ′σ² z + ½γ′σ ε̂."""
        level, eps = prediction.context
        return 0.5 * level.dgamma * level.sigma * (eps - level.sigma * z)

    def prior_log_density(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) per sample."""
        return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * z[0].numel() * math.log(2 * math.pi)

    def likelihood_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z, log |det ∂z/∂x|) = (U(x − m)/√λ, −½ Σ log λ)."""
        z = self.to_state(x)
        log_det = -0.5 * torch.log(self.prior.variance.to(z.dtype)).sum()
        return z, log_det.expand(z.shape[0])

    # ----- objectives --------------------------------------------------------------------
    def loss(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Per-sample training loss (B,): mean (ε̂ − ε)² ("eps"), mean λ (ε̂ − ε)² = mean (n̂ − n)² in
        data space ("noise"), or the ELBO in bits/dim ("elbo"), of x0 dequantized on `levels` levels
        when levels > 0. With a softness range and no softness in `cond`, each example draws its own
        (`draw_softness`)."""
        if self.levels:
            x0 = dequantize(x0.float(), self.levels, generator)
        if self.softness_range is not None and "softness" not in cond:
            cond = {**cond, "softness": self.draw_softness(x0.shape[0], generator, x0.device)}
        if self.weighting == "elbo":
            return self.nll_bound(net, x0, generator, **cond)
        z0 = self.to_state(x0.float())
        cond, softness = self.conditioning(cond, z0.shape[0], z0.device)
        t = stratified_times(z0.shape[0], generator, z0.device)
        eps = gaussian_noise(tuple(z0.shape), generator, z0.device)
        error = self.predict_eps(net, self._noisy(z0, t, eps, softness), t, cond) - eps
        if self.weighting == "noise":
            return (error.pow(2) * self.prior.variance).flatten(1).mean(1)
        return error.pow(2).flatten(1).mean(1)

    def nll_bound(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Negative ELBO of the data density in bits/dim, per sample (one stratified draw each).

        −log p(x) ≤ Σ_i [ ½ ∫₀¹ γ_i′(t) E(ε_i − ε̂_i)² dt          (diffusion)
                        + KL(N(α₁z₀, σ₁²) ‖ N(0, 1))            (prior)
                        + ½(log 2π + γ_i(0) + 1)                (Gaussian decoder at t = 0)
                        + ½ log λ_i ]                            (whitening Jacobian)
        divided by D ln 2. The time integral is sampled by importance: for a scalar schedule
        γ is drawn uniformly on [γ(0), γ(1)] and t = γ⁻¹(γ), so the weight is the constant
        ½(γ(1) − γ(0)); a component-wise schedule draws t uniformly with weights ½ γ_i′(t).
        Control variate: the error of the baseline ε̂_b = σ z_t (exact for z₀ ~ N(0, I)) is subtracted
        inside the integral and its exact integral added back,
            ½ ∫ γ′ E_ε(ε − σ z_t)² dt = ½[A(γ) + z₀² B(γ)]_{γ(0)}^{γ(1)},  A = −softplus(−γ) − sigmoid(γ),
        B = sigmoid(γ), so the estimate stays unbiased while the large ½γ′ weights of small softness no
        longer multiply the χ² noise of (ε − ε̂)². Continuous data: dequantize discrete data before calling it.
        """
        z0 = self.to_state(x0.float())
        batch, dim = z0.shape[0], z0[0].numel()
        cond, softness = self.conditioning(cond, batch, z0.device)
        u = stratified_times(batch, generator, z0.device)
        if self.schedule.component_wise:
            t = u
            weight = 0.5 * self.noise_level(t, softness).dgamma
        else:
            ends = self.schedule.gamma(torch.tensor([0.0, 1.0], device=z0.device)).view(-1)
            t = self.schedule.time_of_gamma(ends[0] + u * (ends[1] - ends[0]))
            weight = 0.5 * (ends[1] - ends[0])
        eps = gaussian_noise(tuple(z0.shape), generator, z0.device)
        z_t = self._noisy(z0, t, eps, softness)
        error = self.predict_eps(net, z_t, t, cond) - eps
        baseline = eps - self.noise_level(t, softness).sigma * z_t
        start = self.noise_level(torch.zeros(batch, device=z0.device), softness)
        end = self.noise_level(torch.ones(batch, device=z0.device), softness)
        diffusion = (weight * (error.pow(2) - baseline.pow(2)) + self._baseline_integral(z0, start, end)).flatten(1)
        return (diffusion.sum(1) + self._constant_terms(z0, start, end)) / (dim * math.log(2.0))

    @staticmethod
    def _baseline_integral(z0: Tensor, start: NoiseLevel, end: NoiseLevel) -> Tensor:
        """½ ∫₀¹ γ′ E_ε(ε − σ z_t)² dt = ½[A(γ) + z₀² B(γ)] from γ(0) to γ(1), per component (`nll_bound`)."""
        def antiderivative(gamma: Tensor) -> Tensor:
            return -F.softplus(-gamma) - torch.sigmoid(gamma) + z0.pow(2) * torch.sigmoid(gamma)

        return 0.5 * (antiderivative(end.gamma) - antiderivative(start.gamma))

    def _constant_terms(self, z0: Tensor, start: NoiseLevel, end: NoiseLevel) -> Tensor:
        """Prior KL + decoder + whitening Jacobian of `nll_bound`, in nats per sample."""
        prior_kl = 0.5 * (end.alpha**2 * z0**2 + end.sigma**2 - 1 - 2 * torch.log(end.sigma))
        decoder = 0.5 * (math.log(2 * math.pi) + start.gamma + 1).expand_as(z0)
        jacobian = 0.5 * torch.log(self.prior.variance).sum()
        return (prior_kl + decoder).flatten(1).sum(1) + jacobian
