"""Blackout diffusion (Santos, Fox, Lubbers, Lin; ICML 2023): images of counts that black out.

Every pixel holds a count n ∈ {0, …, max}; each unit dies independently at rate 1 (the
`DeathProcess` of `jumps`), so

    x_t | x_0 ~ Binomial(x_0, p(t)),   p(t) = e^(−t),

and every image ends (t → ∞) as the empty image, where generation starts. Observation
times t_0 = 0 < t_1 < … < t_T follow the log-SNR-linear survival schedule: logit p_k is
linear in k from +ℓ at k = 1 to −ℓ at k = T, ℓ = log(e^(t_end) − 1), so p_T = e^(−t_end).

The reverse chain is a pure birth process. By the reverse-rate identity, a pixel at
n = x_t gains a unit at rate E[x_0 − x_t | x_t = n] · p/(1 − p), and between observation
times s < t, given x_0, the number of births is Binomial(x_0 − x_t, q) with
q = (p_s − p_t)/(1 − p_t) (the binomial bridge). The network therefore estimates one
non-negative number per pixel, ŷ ≈ E[x_0 − x_t | x_t], trained with the Poisson loss
w_k [ŷ − (x_0 − x_t) log ŷ].

Conventions: the network sees x = 2n/max − 1 (model space) and t = k/T; its raw output r
becomes ŷ = (max/2) · softplus(r), i.e. the network answers in model-space units. Counts
are float tensors holding integers; schedule tables are float64 buffers (not saved in
checkpoints: they follow from the config).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffspace.families.blackout.config import BLACKOUT_WEIGHTINGS, SAMPLER_NAMES, BlackoutConfig
from diffspace.families.blackout.jumps import binomial_pmf
from diffspace.noise import Generator, binomial, strata
from diffspace.process import Capabilities, DataFacts, Marginal

Net = Callable[..., Tensor]
Shape = tuple[int, ...]

#: Counts may differ from integers by this much (float32 rounding of model-space values).
COUNT_TOLERANCE = 1e-3


def survival_schedule(num_steps: int, t_end: float) -> Tensor:
    """p_0 = 1 and logit p_k = ℓ(1 − 2(k − 1)/(T − 1)) for k = 1…T, ℓ = log(e^(t_end) − 1); float64 (T + 1,).

    So p_1 = 1 − e^(−t_end) and p_T = e^(−t_end); for T = 1 the only step is p_1 = e^(−t_end).
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps T must be an integer ≥ 1; got {num_steps!r}")
    if not t_end > math.log(2.0):
        raise ValueError(f"t_end must exceed ln 2 ≈ 0.693 (else the schedule does not decrease); got {t_end}")
    ell = math.log(math.expm1(t_end))
    k = torch.arange(1, num_steps + 1, dtype=torch.float64)
    logit = -ell * torch.ones_like(k) if num_steps == 1 else ell * (1 - 2 * (k - 1) / (num_steps - 1))
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.sigmoid(logit)])


def poisson_loss(rate: Tensor, log_rate: Tensor, target: Tensor) -> Tensor:
    """ŷ − a log ŷ − (a − a log a) ≥ 0 per element: the Poisson loss ŷ − a log ŷ shifted by its minimum (at ŷ = a)."""
    return rate - target - _times(target, log_rate) + torch.xlogy(target, target)


def _times(a: Tensor, log_rate: Tensor) -> Tensor:
    """a·log ŷ with 0·log 0 = 0 (an exact posterior may give ŷ = 0 where a = 0 surely)."""
    return torch.where(a > 0, a * log_rate, torch.zeros_like(log_rate))


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(B,) values shaped (B, 1, …, 1) to broadcast against `like` (B, …)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _log_softplus(raw: Tensor) -> Tensor:
    """log softplus(r), exact for very negative r (where softplus underflows): ≈ r there."""
    return torch.where(raw < -30, raw, torch.log(F.softplus(raw).clamp_min(1e-30)))


class BlackoutDiffusion(nn.Module):
    """BlackoutDiffusion(shape, max_count, num_steps, t_end, weighting): forward maths, loss, bound."""

    def __init__(
        self,
        shape: Shape,
        max_count: int = 255,
        num_steps: int = 1000,
        t_end: float = 15.0,
        weighting: str = "reference",
    ) -> None:
        super().__init__()
        if not isinstance(max_count, int) or isinstance(max_count, bool) or max_count < 1:
            raise ValueError(f"max_count must be an integer ≥ 1; got {max_count!r}")
        if weighting not in BLACKOUT_WEIGHTINGS:
            raise ValueError(f"unknown blackout weighting {weighting!r}; choose one of {BLACKOUT_WEIGHTINGS}")
        self.shape, self.max_count, self.num_steps = tuple(shape), max_count, num_steps
        self.t_end, self.weighting = t_end, weighting
        self.register_buffer("survival", survival_schedule(num_steps, t_end), persistent=False)
        self._kl_table: Tensor | None = None
        self.capabilities = Capabilities(discrete=True, ode_likelihood=False, resolution_free=True,
                                         samplers=SAMPLER_NAMES)

    # ----- schedule ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the schedule lives."""
        return self.survival.device

    def times(self) -> Tensor:
        """Observation times t_k = −log p_k, k = 0…T (float64)."""
        return -torch.log(self.survival)

    def weights(self) -> Tensor:
        """Loss weights for k = 1…T, times T (k is drawn uniformly): T(p_{k−1} − p_k) ("reference") or
        T(p_{k−1} − p_k)/(1 − p_k) ("likelihood")."""
        p = self.survival
        drop = p[:-1] - p[1:]
        return self.num_steps * (drop if self.weighting == "reference" else drop / (1 - p[1:]))

    def birth_probability(self, k: Tensor | int, j: Tensor | int) -> Tensor:
        """q = (p_j − p_k)/(1 − p_k) for j < k: the chance that a unit dead at t_k is alive at t_j (float64)."""
        p = self.survival
        if not isinstance(k, int) or not isinstance(j, int):  # integers index without a read back from the device
            k, j = torch.as_tensor(k, device=p.device), torch.as_tensor(j, device=p.device)
        return (p[j] - p[k]) / (1 - p[k])

    # ----- coordinates -------------------------------------------------------------------
    def _check_shape(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"this process is built for (B, {', '.join(map(str, self.shape))}) tensors; got shape {tuple(x.shape)}"
            )

    def check_counts(self, n: Tensor) -> Tensor:
        """The counts n as exact integers in a float32 tensor; ValueError unless n ∈ {0, …, max}."""
        n = n.float()
        rounded = torch.round(n)
        if not torch.isfinite(n).all() or (n - rounded).abs().max() > COUNT_TOLERANCE:
            raise ValueError(
                f"Blackout states must be integer counts 0…{self.max_count}; got non-integer values "
                f"(model-space data x map to counts (x + 1)·max_count/2: is process.blackout.max_count = "
                f"levels − 1 of the data set?)"
            )
        if rounded.min() < 0 or rounded.max() > self.max_count:
            raise ValueError(
                f"Blackout states must lie in 0…{self.max_count}; got counts from {int(rounded.min())} "
                f"to {int(rounded.max())}"
            )
        return rounded

    def to_state(self, x: Tensor) -> Tensor:
        """Counts n = (x + 1)·max/2 of model-space images x ∈ [−1, 1]; ValueError if they are not integers."""
        self._check_shape(x)
        return self.check_counts((x.float() + 1) * (self.max_count / 2))

    def from_state(self, n: Tensor) -> Tensor:
        """Model space x = 2n/max − 1."""
        self._check_shape(n)
        return n.float() * (2.0 / self.max_count) - 1.0

    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The state has the data's shape."""
        return tuple(data_shape)

    def network_channels(self, data_channels: int) -> tuple[int, int]:
        """(in, out) channels of the network: the data's (one rate per pixel out)."""
        return data_channels, data_channels

    def prior_sample(
        self, shape: tuple[int, ...], generator: Generator = None, device: torch.device | None = None
    ) -> Tensor:
        """The empty image x_T = 0 (all counts zero), where generation starts."""
        return torch.zeros(tuple(shape), device=device or self.device)

    # ----- forward process ---------------------------------------------------------------
    def thin(self, n: Tensor, keep: Tensor | float, generator: Generator = None) -> Tensor:
        """Binomial thinning Binomial(n, keep) per pixel as n − Binomial(n, 1 − keep), in float64 (so that a death
        probability 1 − keep of 1e-7 keeps its digits); returned as float32 counts."""
        death = 1 - torch.as_tensor(keep, dtype=torch.float64, device=n.device).expand(n.shape)
        counts = n.to(torch.float64)
        return (counts - binomial(counts, death, generator)).float()

    def _at_step(self, n0: Tensor, k: Tensor, generator: Generator) -> Tensor:
        """x_{t_k} ~ Binomial(x_0, p_k) for counts n0 (B, …) and step indices k (B,)."""
        return self.thin(n0, _per_sample(self.survival[k], n0), generator)

    def step_of(self, t: Tensor) -> Tensor:
        """The observation step k = round(t·T) of times t ∈ [0, 1]."""
        return torch.round(t.to(torch.float64) * self.num_steps).long().clamp(0, self.num_steps)

    def marginal(self, x0: Tensor, t: Tensor, generator: Generator = None, **cond: Any) -> Marginal:
        """x_t ~ Binomial(x_0, p_k), k = round(tT), as counts; the target is the number still to be born, x_0 − x_t."""
        n0 = self.to_state(x0)
        nk = self._at_step(n0, self.step_of(t.to(n0.device)), generator)
        return Marginal(nk, n0 - nk)

    def sample_steps(self, batch: int, generator: Generator, device: torch.device | str) -> Tensor:
        """Stratified step indices k_b = 1 + ⌊T·((u + b/B) mod 1)⌋ with one u ~ U[0, 1): a low-variance cover of 1…T."""
        cover = strata(batch, generator, device, torch.float64)
        return (1 + torch.floor(cover * self.num_steps).long()).clamp(max=self.num_steps)

    # ----- network -----------------------------------------------------------------------
    def _raw(self, net: Net, n: Tensor, k: Tensor | int, cond: dict[str, Any] | None) -> Tensor:
        """The network's raw output r = net(2n/max − 1, k/T, **cond) in float32."""
        if isinstance(k, int):  # a sampler's step: filled on the device (no copy, no read back), k/T in float32
            t = torch.full((n.shape[0],), float(np.float32(k) / np.float32(self.num_steps)), device=n.device)
        else:
            t = (torch.as_tensor(k, device=n.device).to(torch.float32) / self.num_steps).expand(n.shape[0]).contiguous()
        return net(self.from_state(n), t, **(cond or {})).float()

    def _rate(self, net: Net, n: Tensor, k: Tensor | int, cond: dict[str, Any] | None) -> tuple[Tensor, Tensor]:
        """(ŷ, log ŷ) with ŷ = (max/2)·softplus(r), in float32."""
        raw = self._raw(net, n, k, cond)
        scale = self.max_count / 2
        return scale * F.softplus(raw), math.log(scale) + _log_softplus(raw)

    def remaining(self, net: Net, n: Tensor, k: Tensor | int, cond: dict[str, Any] | None = None) -> Tensor:
        """ŷ(n, t_k) = (max/2)·softplus(net(…)) ≈ E[x_0 − x_t | x_t = n], the expected number of units still to be
        born, ≥ 0 (without log ŷ, which only the losses need)."""
        return (self.max_count / 2) * F.softplus(self._raw(net, n, k, cond))

    # ----- objectives --------------------------------------------------------------------
    def loss(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Per-sample loss (B,): mean over pixels of w_k [ŷ − a log ŷ − (a − a log a)], a = x_0 − x_{t_k}.

        k is stratified over 1…T and x_{t_k} ~ Binomial(x_0, p_k); "likelihood" weighting returns
        `nll_bound` instead (bits/dim). The shift a log a − a does not depend on the network: it
        makes every term ≥ 0 and leaves the minimiser ŷ = E[x_0 − x_t | x_t] unchanged.
        """
        if self.weighting == "likelihood":
            return self.nll_bound(net, x0, generator, **cond)
        n0 = self.to_state(x0)
        k = self.sample_steps(n0.shape[0], generator, n0.device)
        nk = self._at_step(n0, k, generator)
        rate, log_rate = self._rate(net, nk, k, cond)
        weight = _per_sample(self.weights()[k - 1].float(), n0)
        return (weight * poisson_loss(rate, log_rate, n0 - nk)).flatten(1).mean(1)

    def nll_bound(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Upper bound on −log₂ p(x_0)/D (bits/dim) of the τ-leaping model, per sample (one step k each).

        The model starts at x_T = 0 and steps x_{k−1} = x_k + Poisson(q_k ŷ), q_k = (p_{k−1} − p_k)/(1 − p_k).
        Using the forward chain conditioned on x_T = 0 as the variational posterior (given x_0 and
        x_k, x_{k−1} − x_k ~ Binomial(a, q_k), a = x_0 − x_k, whatever x_T),

            −log p(x_0) ≤ Σ_k E KL(Binomial(a, q_k) ‖ Poisson(q_k ŷ)),  x_k ~ Binomial(x_0, (p_k − p_T)/(1 − p_T)),

        and KL = q_k [ŷ − a log ŷ] + a(1 − q_k) log(1 − q_k) + E_j log(a!/(a − j)!), j ~ Binomial(a, q_k).
        The sum over k is estimated by T times one stratified term; divided by D ln 2.
        """
        n0 = self.to_state(x0)
        batch, dim = n0.shape[0], n0[0].numel()
        k = self.sample_steps(batch, generator, n0.device)
        p = self.survival
        nk = self.thin(n0, _per_sample((p[k] - p[-1]) / (1 - p[-1]), n0), generator)
        remaining = n0 - nk
        rate, log_rate = self._rate(net, nk, k, cond)
        q = _per_sample(self.birth_probability(k, k - 1), n0)
        a = remaining.double()
        constant = self.kl_constant()[_per_sample(k, n0), remaining.long()]
        kl = q * (rate.double() - _times(a, log_rate.double())) + constant
        return (self.num_steps * kl.flatten(1).sum(1) / (dim * math.log(2.0))).float()

    def kl_constant(self) -> Tensor:
        """C[k, a] = a(1 − q_k) log(1 − q_k) + E_j log(a!/(a − j)!), j ~ Binomial(a, q_k): (T + 1, max + 1) float64 (row 0 unused).

        Exact sums over j, computed once per device and cached.
        """
        if self._kl_table is None or self._kl_table.device != self.device:
            p = self.survival.cpu()
            q = (p[:-1] - p[1:]) / (1 - p[1:])
            a = torch.arange(self.max_count + 1, dtype=torch.float64)
            log_fact = torch.lgamma(a + 1)
            rows = [torch.zeros(1, self.max_count + 1, dtype=torch.float64)]
            block = max(1, 2**21 // (self.max_count + 1) ** 2)
            for start in range(0, self.num_steps, block):
                qb = q[start : start + block, None]
                survivors = binomial_pmf(a.expand(qb.shape[0], -1), (1 - qb).expand(-1, a.numel()), self.max_count)
                expected = log_fact - survivors @ log_fact
                rows.append(torch.xlogy(a * (1 - qb), 1 - qb) + expected)
            self._kl_table = torch.cat(rows).to(self.device)
        return self._kl_table


def build_blackout(cfg: BlackoutConfig, facts: DataFacts, data: Tensor | None,
                   fitted: Mapping[str, Tensor] | None = None) -> BlackoutDiffusion:
    """BlackoutDiffusion of a resolved BlackoutConfig (nothing is fitted to data); training images, if given, must
    be counts 0…max_count."""
    if cfg.max_count is None:
        raise ValueError("process.max_count is unset: resolve the config against the data first (build_process does)")
    process = BlackoutDiffusion(facts.shape, cfg.max_count, cfg.num_steps, cfg.t_end, cfg.weighting)
    if data is not None:
        process.to_state(data)
    return process


__all__ = ["BlackoutDiffusion", "build_blackout", "poisson_loss", "survival_schedule"]
