"""Flow matching in a chosen basis towards a prior N(m, Σ), with per-component path times.

State: the whitened coefficients of the Gaussian family, z = U(x − m)/√λ (basis U, prior mean m, variances λ),
so the prior is N(0, I). Probability path, per component i, with path time τ_i = τ_i(t) (`paths`):

    z_t = a(τ_i) z₀ + s(τ_i) z₁,   z₁ ~ N(0, I),   dz_t/dt = τ_i′(t) w,   w = a′(τ_i) z₀ + s′(τ_i) z₁.

The network predicts w (or z₀, or z₁; from any one and z_t the others follow, since det = a s′ − s a′ ≠ 0):

    z₀ = (s′ z_t − s w)/det,   z₁ = (a w − a′ z_t)/det,   w = a′ z₀ + s′ z₁,

and is trained by the squared error of its target on the components that move at t (τ_i′ > 0): for
"velocity" this is the conditional flow-matching loss, whose minimiser is E[w | z_t]; the "x0" and "eps" losses
reweight it in time and have the same minimiser. Sampling integrates dz/dt = τ′ ⊙ ŵ from t = 1 (z ~ N(0, I)) to 0.

Score and stochastic sampling: z_t | z₀ is N(a z₀, s²) per component, so ∇log p_t = −E[z₁ | z_t]/s (Tweedie).
The SDE dz = [v − ½g²∇log p] dt + g dW̄, run backwards, has the flow's marginals for any g; here g² = 2τ′s, which
makes the reverse drift f̄ = τ′(ŵ + ẑ₁) bounded at both ends (it matches the OT path's equivalent diffusion as
τ → 0) and keeps frozen components frozen.

Likelihood: the ODE's exact log-density (`diffspace.likelihood.ode_nll`): the path ends at N(0, I) exactly and
starts at the data. `nll_bound` is the ELBO of the diffusion with the same per-component Gaussian marginals
(log-SNR γ_i = log(s²/a²)) and the flow's noise prediction ε̂ = ẑ₁ (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from diffspace.families.flow.config import NETWORK_INPUTS, NETWORK_OUTPUTS, PREDICTIONS, WEIGHTINGS
from diffspace.families.flow.paths import ComponentTimes, Path, PathPoint, component_times
from diffspace.families.flow.samplers import SAMPLERS
from diffspace.families.gaussian.priors import Prior
from diffspace.families.gaussian.process import GaussianDiffusion, NoiseLevel
from diffspace.families.gaussian.schedules import SoftConditioning, alpha_sigma
from diffspace.likelihood import dequantize
from diffspace.noise import Generator, gaussian_noise, stratified_times
from diffspace.process import Capabilities, Marginal, Prediction
from diffspace.spaces import Basis

Net = Callable[..., Tensor]
#: Smallest a or s a conversion divides by (the x0 and eps parametrisations are singular at the path's ends).
MIN_SCALE = 1e-5


@dataclass
class FlowPrediction:
    """One network evaluation read in state coordinates: ŵ = dz/dτ, ẑ₀, ẑ₁, and the path times where it was made."""

    times: ComponentTimes
    velocity: Tensor
    x0: Tensor
    noise: Tensor


def _safe(scale: Tensor) -> Tensor:
    """A path coefficient a or s kept ≥ MIN_SCALE in magnitude for division."""
    return scale.clamp_min(MIN_SCALE)


def from_velocity(point: PathPoint, z: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """(z₀, z₁) = ((s′ z − s w)/det, (a w − a′ z)/det)."""
    det = point.det
    return (point.d_sigma * z - point.sigma * w) / det, (point.alpha * w - point.d_alpha * z) / det


def from_x0(point: PathPoint, z: Tensor, z0: Tensor) -> tuple[Tensor, Tensor]:
    """(w, z₁) with z₁ = (z − a z₀)/s and w = a′ z₀ + s′ z₁."""
    z1 = (z - point.alpha * z0) / _safe(point.sigma)
    return point.d_alpha * z0 + point.d_sigma * z1, z1


def from_noise(point: PathPoint, z: Tensor, z1: Tensor) -> tuple[Tensor, Tensor]:
    """(w, z₀) with z₀ = (z − s z₁)/a and w = a′ z₀ + s′ z₁."""
    z0 = (z - point.sigma * z1) / _safe(point.alpha)
    return point.d_alpha * z0 + point.d_sigma * z1, z0


class FlowMatching(nn.Module):
    """FlowMatching(basis, prior, path, schedule): the path, losses, ODE/SDE quantities and the ELBO."""

    def __init__(
        self,
        basis: Basis,
        prior: Prior,
        path: Path,
        schedule: SoftConditioning | None = None,
        prediction: str = "velocity",
        weighting: str = "uniform",
        network_input: str = "data",
        network_output: str = "whitened",
        gamma_range: tuple[float, float] = (-10.0, 10.0),
        softness_range: tuple[float, float] | None = None,
        fitted_to_data: bool = False,
        levels: int = 0,
    ) -> None:
        super().__init__()
        for name, value, options in (("prediction", prediction, PREDICTIONS), ("weighting", weighting, WEIGHTINGS),
                                     ("network_input", network_input, NETWORK_INPUTS),
                                     ("network_output", network_output, NETWORK_OUTPUTS)):
            if value not in options:
                raise ValueError(f"unknown {name} {value!r}; choose one of {options}")
        if schedule is not None and not (isinstance(schedule, SoftConditioning) and schedule.clip):
            raise ValueError("per-component flow times need a clipped soft-conditioning schedule (clip=True)")
        if softness_range is not None:
            if schedule is None:
                raise ValueError("a softness range needs the soft-conditioning schedule (process.schedule = soft)")
            if len(softness_range) != 2 or not 0 < softness_range[0] <= softness_range[1]:
                raise ValueError(f"softness_range must be (s_min, s_max) with 0 < s_min ≤ s_max; got {softness_range}")
        if not gamma_range[0] < gamma_range[1]:
            raise ValueError(f"need gamma_min < gamma_max; got {gamma_range}")
        if levels == 1 or levels < 0:
            raise ValueError(f"levels must be 0 (no dequantization) or at least 2; got {levels}")
        self.basis, self.prior, self.path, self.schedule = basis, prior, path, schedule
        self.prediction, self.weighting = prediction, weighting
        self.network_input, self.network_output = network_input, network_output
        self.gamma_range = (float(gamma_range[0]), float(gamma_range[1]))
        self.softness_range = None if softness_range is None else (float(softness_range[0]), float(softness_range[1]))
        self.levels = levels
        self.capabilities = Capabilities(discrete=False, ode_likelihood=True, resolution_free=not fitted_to_data,
                                         samplers=tuple(SAMPLERS))

    # ----- coordinates and softness: those of the Gaussian family ---------------------------------------
    device = GaussianDiffusion.device
    _check = GaussianDiffusion._check
    to_state = GaussianDiffusion.to_state
    from_state = GaussianDiffusion.from_state
    state_shape = GaussianDiffusion.state_shape
    network_channels = GaussianDiffusion.network_channels
    network_input_from_state = GaussianDiffusion.network_input_from_state
    state_from_network_input = GaussianDiffusion.state_from_network_input
    conditioning = GaussianDiffusion.conditioning
    draw_softness = GaussianDiffusion.draw_softness
    prior_sample = GaussianDiffusion.prior_sample
    prior_log_density = GaussianDiffusion.prior_log_density
    likelihood_state = GaussianDiffusion.likelihood_state

    def quantity_from_network_output(self, y: Tensor) -> Tensor:
        """The predicted state quantity q from the network's output: U y ("whitened"); U y/√λ, or U(y − m)/√λ for
        x0 ("data")."""
        if self.network_output == "whitened":
            return self.basis.encode(y)
        if self.prediction == "x0":
            return self.to_state(y)
        return self.basis.encode(y) / self.prior.variance.to(y.dtype).sqrt()

    def network_output_from_quantity(self, q: Tensor) -> Tensor:
        """Inverse of `quantity_from_network_output`."""
        if self.network_output == "whitened":
            return self.basis.decode(q)
        if self.prediction == "x0":
            return self.from_state(q)
        return self.basis.decode(q * self.prior.variance.to(q.dtype).sqrt())

    # ----- the path ------------------------------------------------------------------------------------
    def times(self, t: Tensor, softness: Tensor | None = None) -> ComponentTimes:
        """Path times τ(t), τ′(t) and the path point there, for times t (B,) (per-sample softness (B,) when soft)."""
        return component_times(self.path, t, self.schedule, softness)

    def target(self, point: PathPoint, z0: Tensor, z1: Tensor) -> Tensor:
        """What the network learns: w = a′z₀ + s′z₁ ("velocity"), z₀ ("x0") or z₁ ("eps")."""
        if self.prediction == "velocity":
            return point.d_alpha * z0 + point.d_sigma * z1
        return z0 if self.prediction == "x0" else z1

    def marginal(self, x0: Tensor, t: Tensor, generator: Generator = None, **cond: Any) -> Marginal:
        """z_t = a(τ) z₀ + s(τ) z₁ with z₀ = to_state(x0), z₁ ~ N(0, I); the target is the network's quantity."""
        z0 = self.to_state(x0)
        _, softness = self.conditioning(cond, z0.shape[0], z0.device)
        z1 = gaussian_noise(tuple(z0.shape), generator, z0.device, z0.dtype)
        point = self.times(t.to(z0.dtype), softness).point
        return Marginal(point.alpha * z0 + point.sigma * z1, self.target(point, z0, z1))

    # ----- predictions ---------------------------------------------------------------------------------
    def predict_quantity(self, net: Net, z: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Tensor:
        """The network's quantity q̂ in state coordinates: net(network input, t, **cond), read in float32."""
        cond, _ = self.conditioning(cond, z.shape[0], z.device)
        return self.quantity_from_network_output(net(self.network_input_from_state(z), t, **cond).to(z.dtype))

    def read(self, times: ComponentTimes, z: Tensor, q: Tensor) -> FlowPrediction:
        """(ŵ, ẑ₀, ẑ₁) from the state z and the network's quantity q at path times `times`."""
        point = times.point
        if self.prediction == "velocity":
            z0, z1 = from_velocity(point, z, q)
            return FlowPrediction(times, q, z0, z1)
        if self.prediction == "x0":
            w, z1 = from_x0(point, z, q)
            return FlowPrediction(times, w, q, z1)
        w, z0 = from_noise(point, z, q)
        return FlowPrediction(times, w, z0, q)

    def predict(self, net: Net, z: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Prediction:
        """One network evaluation: score −ẑ₁/s (s clamped at MIN_SCALE: the data at τ = 0 have no score), denoised
        ẑ₀; the context is the FlowPrediction."""
        cond, softness = self.conditioning(cond, z.shape[0], z.device)
        times = self.times(t.to(z.dtype), softness)
        flow = self.read(times, z, self.predict_quantity(net, z, t, cond))
        return Prediction(score=-flow.noise / _safe(times.point.sigma), denoised=flow.x0, context=flow)

    def pf_ode_velocity(self, z: Tensor, t: Tensor, prediction: Prediction) -> Tensor:
        """dz/dt = τ′ ⊙ ŵ: the learned velocity (the flow itself)."""
        flow = prediction.context
        return flow.times.d_tau * flow.velocity

    def reverse_sde(self, z: Tensor, t: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
        """(f̄, g) of the reverse SDE with the flow's marginals: f̄ = v − ½g²∇log p = τ′(ŵ + ẑ₁), g = √(2τ′s)."""
        flow = prediction.context
        d_tau = flow.times.d_tau
        return d_tau * (flow.velocity + flow.noise), (2 * d_tau * flow.times.point.sigma).sqrt()

    def diffusion_noise(self, g: Tensor, noise: Tensor) -> Tensor:
        """g ξ: the per-component diffusion scale applied to white noise."""
        return g * noise

    # ----- objectives ----------------------------------------------------------------------------------
    def loss(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Per-sample loss (B,): (1/D) Σ_i [τ_i′ > 0] (q̂_i − q_i)² ("uniform"), or with weights λ_i ("data"), q the
        target at stratified times t (frozen components are not trained), of x0 dequantized on `levels` levels when
        levels > 0; with a softness range and no softness in `cond`, each example draws its own."""
        if self.levels:
            x0 = dequantize(x0.float(), self.levels, generator)
        if self.softness_range is not None and "softness" not in cond:
            cond = {**cond, "softness": self.draw_softness(x0.shape[0], generator, x0.device)}
        z0 = self.to_state(x0.float())
        cond, softness = self.conditioning(cond, z0.shape[0], z0.device)
        t = stratified_times(z0.shape[0], generator, z0.device)
        z1 = gaussian_noise(tuple(z0.shape), generator, z0.device)
        times = self.times(t, softness)
        z = times.point.alpha * z0 + times.point.sigma * z1
        error = (self.predict_quantity(net, z, t, cond) - self.target(times.point, z0, z1)).pow(2)
        if self.weighting == "data":
            error = error * self.prior.variance
        return (error * times.active).flatten(1).mean(1)

    def nll_bound(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Negative ELBO of the data density in bits/dim, per sample (one stratified draw each).

        Per component the path has the Gaussian marginal z_t | z₀ = N(a z₀, s²) of log-SNR γ_i = log(s²/a²), the
        marginal of a linear diffusion; its ELBO (Kingma et al. 2021, as GaussianDiffusion.nll_bound), with the
        flow's noise prediction ε̂ = ẑ₁ and γ restricted to [γ_min, γ_max] (τ clamped to [τ(γ_min), τ(γ_max)]):

            −log p(x) ≤ Σ_i [ ½ ∫ γ_i′ E(ε_i − ε̂_i)² dt + KL(N(α z₀, σ²) ‖ N(0, 1)) at γ_max
                            + ½(log 2π + γ_min + 1) + ½ log λ_i ],    α² = sigmoid(−γ), σ² = sigmoid(γ),

        over D ln 2, the control variate ε̂_b = σ z_t/√(a² + s²) of the Gaussian family included. It bounds the
        negative log-likelihood of that diffusion model (reverse SDE with the flow's score, Gaussian decoder at
        γ_min), not of the flow's ODE, whose exact likelihood is `diffspace.likelihood.ode_nll`; with the exact
        velocity both equal the data's. A scalar path draws γ uniformly in [γ_min, γ_max] (weight ½(γ_max − γ_min)),
        soft times draw t uniformly (weights ½γ_i′(t)); the network sees the state at the clamped path times.
        Continuous data: dequantize discrete data before calling it.
        """
        z0 = self.to_state(x0.float())
        batch, dim = z0.shape[0], z0[0].numel()
        cond, softness = self.conditioning(cond, batch, z0.device)
        u = stratified_times(batch, generator, z0.device).to(z0.dtype)
        low, high = (torch.tensor(g, dtype=z0.dtype, device=z0.device) for g in self.gamma_range)
        if self.schedule is None:
            gamma = (low + u * (high - low)).view(-1, 1, 1, 1)
            tau = self.path.tau_of_gamma(gamma)
            t, weight = tau.view(-1), 0.5 * (high - low)
        else:
            t = u
            times = self.times(t, softness)
            tau = times.tau.clamp(self.path.tau_of_gamma(low), self.path.tau_of_gamma(high))
            moving = (times.tau > self.path.tau_of_gamma(low)) & (times.tau < self.path.tau_of_gamma(high))
            gamma = self.path.gamma(tau)
            weight = 0.5 * self.path.d_gamma(tau) * times.d_tau * moving
        point = self.path(tau)
        eps = gaussian_noise(tuple(z0.shape), generator, z0.device, z0.dtype)
        z = point.alpha * z0 + point.sigma * eps
        noise = self.predict(net, z, t, cond).context.noise
        start, end = (NoiseLevel(g, torch.zeros_like(g), *alpha_sigma(g)) for g in (low.view(1), high.view(1)))
        vp_sigma = alpha_sigma(gamma)[1]
        baseline = eps - vp_sigma * z / (point.alpha**2 + point.sigma**2).sqrt()
        error = (eps - noise).pow(2) - baseline.pow(2)
        diffusion = (weight * error + GaussianDiffusion._baseline_integral(z0, start, end)).flatten(1).sum(1)
        prior_kl = 0.5 * (end.alpha**2 * z0**2 + end.sigma**2 - 1 - 2 * torch.log(end.sigma))
        decoder = 0.5 * (math.log(2 * math.pi) + low + 1)
        constant = prior_kl.flatten(1).sum(1) + dim * decoder + 0.5 * torch.log(self.prior.variance).sum()
        return (diffusion + constant) / (dim * math.log(2.0))
