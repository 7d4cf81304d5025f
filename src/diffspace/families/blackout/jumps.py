"""Continuous-time Markov jump processes on the counts 0…max of one pixel.

A time-homogeneous chain is fixed by its rates W(n→m) ≥ 0 (m ≠ n). In matrix form the
generator Q has Q[n, m] = W(n→m) off the diagonal and Q[n, n] = −Σ_{m≠n} W(n→m); a law is a
row vector P over the S = max + 1 states and evolves by the forward Kolmogorov equation
dP_t/dt = P_t Q, so P_t = P_0 exp(tQ). Run backwards in time, the chain is again a jump
process, with the reverse rates

    W̄_t(n→m) = W(m→n) · P_t(m) / P_t(n),

so that −dP_t/dt = P_t Q̄_t. A new discrete process is its generator matrix handed to
`JumpProcess` (or a subclass that builds it from a few rates, like `BirthDeathProcess`); a
closed-form transition replaces the matrix exponential when one exists (`DeathProcess`). All of this is float64 maths for small state spaces: it
serves tests, oracles and the design of new processes, not the per-pixel sampling of images.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from diffspace.noise import uniform_noise


def binomial_pmf(n: Tensor, p: Tensor | float, max_count: int) -> Tensor:
    """P(m | n) = C(n, m) pᵐ (1 − p)ⁿ⁻ᵐ for m = 0…max (0 for m > n); shape (*n.shape, max + 1), float64."""
    n = n.to(torch.float64).unsqueeze(-1)
    p = torch.as_tensor(p, dtype=torch.float64, device=n.device)
    p = p.unsqueeze(-1) if p.dim() else p
    m = torch.arange(max_count + 1, dtype=torch.float64, device=n.device)
    valid = m <= n
    k = torch.where(valid, m, torch.zeros_like(m))
    log_choose = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(torch.clamp(n - k, min=0) + 1)
    log_pmf = log_choose + torch.xlogy(k, p) + torch.xlogy(n - k, 1 - p)
    return torch.where(valid, log_pmf.exp(), torch.zeros_like(log_pmf))


def reverse_rates(rates: Tensor, marginal: Tensor) -> Tensor:
    """Reverse-time generator Q̄_t[n, m] = W(m→n) P_t(m)/P_t(n) (m ≠ n), Q̄[n, n] = −Σ_m Q̄[n, m].

    `rates` is the forward generator Q (S, S) and `marginal` the law P_t (S,); states with
    P_t(n) = 0 are never visited and get no reverse rates.
    """
    if rates.dim() != 2 or rates.shape[0] != rates.shape[1] or marginal.shape != rates.shape[:1]:
        raise ValueError(f"need an (S, S) generator and an (S,) law; got {tuple(rates.shape)} and {tuple(marginal.shape)}")
    p = marginal.to(torch.float64)
    off = rates.to(torch.float64).clone()
    off.fill_diagonal_(0.0)
    ratio = torch.where(p > 0, 1 / p, torch.zeros_like(p))
    reverse = off.T * p[None, :] * ratio[:, None]
    reverse.fill_diagonal_(0.0)
    return reverse - torch.diag(reverse.sum(1))


def _check_max(max_count: int) -> None:
    if not isinstance(max_count, int) or isinstance(max_count, bool) or max_count < 1:
        raise ValueError(f"max_count must be an integer ≥ 1; got {max_count!r}")


class JumpProcess:
    """A time-homogeneous jump process on 0…max, given by its generator matrix Q (S, S)."""

    def __init__(self, rates: Tensor) -> None:
        q = torch.as_tensor(rates, dtype=torch.float64)
        if q.dim() != 2 or q.shape[0] != q.shape[1] or q.shape[0] < 2:
            raise ValueError(f"a generator is an (S, S) matrix with S ≥ 2; got shape {tuple(q.shape)}")
        off = q - torch.diag(torch.diagonal(q))
        if (off < 0).any():
            raise ValueError("a generator's off-diagonal rates W(n→m) must be ≥ 0")
        if not torch.allclose(q.sum(1), torch.zeros(q.shape[0], dtype=torch.float64), atol=1e-9 * (1 + off.abs().max())):
            raise ValueError("a generator's rows must sum to 0 (Q[n, n] = −Σ_m W(n→m))")
        self._rates = q
        self.max_count = q.shape[0] - 1

    @property
    def num_states(self) -> int:
        """S = max + 1."""
        return self.max_count + 1

    def rates(self) -> Tensor:
        """The generator Q (S, S), float64: Q[n, m] = W(n→m), rows summing to 0."""
        return self._rates

    def transition(self, t: float) -> Tensor:
        """The transition matrix exp(tQ): row n is the law at time t started from n."""
        if t < 0:
            raise ValueError(f"time must be ≥ 0; got {t}")
        return torch.linalg.matrix_exp(t * self.rates())

    def marginal(self, initial: Tensor, t: float) -> Tensor:
        """P_t = P_0 exp(tQ) for a law P_0 of shape (S,) or a batch (B, S)."""
        return initial.to(torch.float64) @ self.transition(t)

    def reverse_rates(self, initial: Tensor, t: float) -> Tensor:
        """The reverse-time generator Q̄_t of the chain started from the law P_0 = `initial`."""
        return reverse_rates(self.rates(), self.marginal(initial, t))

    def simulate(self, start: Tensor, times: Sequence[float], generator: torch.Generator | None = None) -> Tensor:
        """Gillespie paths from the integer states `start` (N,), observed at increasing `times`: (len(times), N).

        Each state n waits Exp(−Q[n, n]) and then jumps to m with probability Q[n, m]/(−Q[n, n]).
        """
        times = [float(t) for t in times]
        if any(b < a for a, b in zip(times, times[1:])) or (times and times[0] < 0):
            raise ValueError(f"observation times must be ≥ 0 and increasing; got {times}")
        q = self.rates()
        x = start.to(torch.long).clone()
        if x.min() < 0 or x.max() > self.max_count:
            raise ValueError(f"start states must lie in 0…{self.max_count}")
        out = torch.empty(len(times), x.numel(), dtype=torch.long)
        now = torch.zeros(x.numel(), dtype=torch.float64)
        jump_rows = q.clamp_min(0.0).cumsum(1)
        pending = torch.ones(x.numel(), dtype=torch.bool)
        while pending.any():
            out_rate = -q[x, x]
            exponential = -torch.log1p(-uniform_noise((x.numel(),), generator, "cpu", torch.float64))
            wait = torch.where(out_rate > 0, exponential / out_rate.clamp_min(1e-300), torch.inf)
            after = now + wait
            for i, t in enumerate(times):
                seen = (now <= t) & (after > t)
                out[i, seen] = x[seen]
            pending = after <= (times[-1] if times else 0.0)
            u = uniform_noise((x.numel(),), generator, "cpu", torch.float64) * out_rate
            target = torch.searchsorted(jump_rows[x], u.unsqueeze(1), right=True).squeeze(1)
            x = torch.where(pending, target.clamp(max=self.max_count), x)
            now = after
        return out


class DeathProcess(JumpProcess):
    """Pure death: every unit dies at rate μ, W(n→n−1) = μn; P(m | n, t) = Binomial(m; n, e^(−μt))."""

    def __init__(self, max_count: int, rate: float = 1.0) -> None:
        _check_max(max_count)
        if rate <= 0:
            raise ValueError(f"death rate must be > 0; got {rate}")
        self.rate = rate
        n = torch.arange(max_count + 1, dtype=torch.float64)
        super().__init__(torch.diag(rate * n[1:], -1) - torch.diag(rate * n))

    def survival(self, t: float) -> float:
        """p(t) = e^(−μt), the chance that one unit is still alive at t."""
        return math.exp(-self.rate * t)

    def transition(self, t: float) -> Tensor:
        """Closed form: row n is Binomial(n, e^(−μt))."""
        if t < 0:
            raise ValueError(f"time must be ≥ 0; got {t}")
        return binomial_pmf(torch.arange(self.num_states), self.survival(t), self.max_count)


class BirthDeathProcess(JumpProcess):
    """Immigration–death on 0…max: W(n→n+1) = λ (n < max), W(n→n−1) = μn.

    Its stationary law is the Poisson(λ/μ) law truncated to 0…max (detailed balance
    λ π(n) = μ(n+1) π(n+1)); marginals come from the matrix exponential.
    """

    def __init__(self, max_count: int, birth: float, death: float) -> None:
        _check_max(max_count)
        if birth <= 0 or death <= 0:
            raise ValueError(f"birth and death rates must be > 0; got {birth}, {death}")
        self.birth, self.death = birth, death
        n = torch.arange(max_count + 1, dtype=torch.float64)
        q = torch.diag(torch.full((max_count,), birth, dtype=torch.float64), 1) + torch.diag(death * n[1:], -1)
        super().__init__(q - torch.diag(q.sum(1)))

    def stationary(self) -> Tensor:
        """π(n) ∝ (λ/μ)ⁿ / n! on 0…max."""
        n = torch.arange(self.num_states, dtype=torch.float64)
        log_pi = n * math.log(self.birth / self.death) - torch.lgamma(n + 1)
        return torch.softmax(log_pi, 0)


__all__ = ["BirthDeathProcess", "DeathProcess", "JumpProcess", "binomial_pmf", "reverse_rates"]
