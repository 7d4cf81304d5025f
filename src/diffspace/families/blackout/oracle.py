"""The exact posterior of Blackout diffusion for pixels drawn i.i.d. from a known law π on 0…max.

    P(x_0 = m | x_{t_k} = n) ∝ π(m) · C(m, n) p_kⁿ (1 − p_k)^(m − n)   (m ≥ n).

It stands in for a trained network (its call returns the raw output whose softplus is the
exact E[x_0 − x_t | x_t] in model-space units) and feeds the exact-posterior bridge, so
samplers can be checked against a known distribution without training anything.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffspace.families.blackout.process import BlackoutDiffusion
from diffspace.families.blackout.jumps import binomial_pmf


class BlackoutPosterior:
    """Exact posterior and posterior mean of a BlackoutDiffusion whose data pixels are i.i.d. ~ `law`."""

    def __init__(self, process: BlackoutDiffusion, law: Tensor) -> None:
        law = torch.as_tensor(law, dtype=torch.float64)
        if law.shape != (process.max_count + 1,) or (law < 0).any() or abs(float(law.sum()) - 1) > 1e-6:
            raise ValueError(
                f"law must be a probability vector over 0…{process.max_count} (max_count + 1 entries ≥ 0 summing "
                f"to 1); got shape {tuple(law.shape)} summing to {float(law.sum()):.6g}"
            )
        self.process = process
        self.law = (law / law.sum()).to(process.device)

    def posterior(self, n: Tensor, k: Tensor | int) -> Tensor:
        """P(x_0 = m | x_{t_k} = n) for m = 0…max: shape (*n.shape, max + 1), float64; k is an int or (B,)."""
        n = self.process.check_counts(n).long()
        k = torch.as_tensor(k, device=n.device)
        if k.dim() == 0:
            return self._posterior_matrix(int(k))[n]
        out = torch.empty(*n.shape, self.process.max_count + 1, dtype=torch.float64, device=n.device)
        for step in k.unique().tolist():
            rows = k == step
            out[rows] = self._posterior_matrix(step)[n[rows]]
        return out

    def _posterior_matrix(self, k: int) -> Tensor:
        """M[n, m] = P(x_0 = m | x_{t_k} = n) ∝ π(m) Binomial(n; m, p_k) (rows of unreachable n: uniform zeros)."""
        states = torch.arange(self.process.max_count + 1, device=self.law.device)
        joint = self.law[:, None] * binomial_pmf(states, float(self.process.survival[k]), self.process.max_count)
        total = joint.sum(0, keepdim=True)
        return (joint / torch.where(total > 0, total, torch.ones_like(total))).T

    def expected_remaining(self, n: Tensor, k: Tensor | int) -> Tensor:
        """E[x_0 − x_{t_k} | x_{t_k} = n] (float64)."""
        m = torch.arange(self.process.max_count + 1, dtype=torch.float64, device=n.device)
        return self.posterior(n, k) @ m - n.double()

    def marginal(self, k: int) -> Tensor:
        """P(x_{t_k} = n) = Σ_m π(m) Binomial(n; m, p_k) for n = 0…max (float64)."""
        states = torch.arange(self.process.max_count + 1, device=self.law.device)
        return self.law @ binomial_pmf(states, float(self.process.survival[k]), self.process.max_count)

    def __call__(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """The raw network output r = softplus⁻¹(2E/max) = log(expm1(2E/max)), E = E[x_0 − x_t | x_t], for k = round(tT)."""
        n = (x.double() + 1) * (self.process.max_count / 2)
        k = torch.round(torch.as_tensor(t, device=x.device).double() * self.process.num_steps).long()
        mean = self.expected_remaining(n, k).clamp_min(0) * (2.0 / self.process.max_count)
        return torch.log(torch.expm1(mean)).float()


__all__ = ["BlackoutPosterior"]
