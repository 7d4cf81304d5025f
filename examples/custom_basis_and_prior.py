"""Plug a basis and a prior written in user code into the Gaussian family, and check them against exact answers.

A `diffspace.spaces.Basis` subclass needs three methods: `encode` (c = U x on (B, C, H, W)), `decode`
(x = Uᵀ c) and `labels` (the ordering label of each component, used by GUD's soft conditioning: lower =
generated earlier). Here U is the 2-D Walsh–Hadamard basis in sequency order (products of ±1 square
waves, orthonormal, exact inverse), labelled by the number of sign changes. The prior is a
`diffspace.families.gaussian.priors.Prior` built from user-chosen variances λ = 2/(1 + label).

With Gaussian data the optimal network is known in closed form (`GaussianOracle`), so no training is
needed to check the pair: the samples' covariance matches the data's, and the negative ELBO matches the
exact negative log-likelihood.

    python examples/custom_basis_and_prior.py             # seconds
    python examples/custom_basis_and_prior.py --toy       # fewer samples (what the tests run)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffspace.families.gaussian.oracle import GaussianOracle, covariance_in_basis
from diffspace.families.gaussian.priors import Prior, power_law_prior
from diffspace.families.gaussian.process import GaussianDiffusion
from diffspace.families.gaussian.schedules import SoftConditioning
from diffspace.samplers import heun
from diffspace.spaces import Basis, FourierBasis

from _common import arguments


def hadamard(n: int) -> tuple[Tensor, Tensor]:
    """The orthonormal n×n Walsh–Hadamard matrix (n a power of 2), rows in sequency order, and each row's
    number of sign changes."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"the Walsh–Hadamard basis needs a power-of-two size; got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    changes = (h[:, 1:] != h[:, :-1]).sum(1)
    order = torch.argsort(changes)
    return h[order] / math.sqrt(n), changes[order].to(torch.float64)


class WalshHadamardBasis(Basis):
    """c = H_h x H_wᵀ per channel, with H the sequency-ordered Walsh–Hadamard matrices; label = sequency."""

    name = "walsh-hadamard"

    def _matrices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        rows, _ = hadamard(x.shape[-2])
        cols, _ = hadamard(x.shape[-1])
        return rows.to(x), cols.to(x)

    def encode(self, x: Tensor) -> Tensor:
        rows, cols = self._matrices(x)
        return rows @ x @ cols.T

    def decode(self, c: Tensor) -> Tensor:
        rows, cols = self._matrices(c)
        return rows.T @ c @ cols

    def labels(self, shape: tuple[int, ...]) -> Tensor:
        channels, height, width = shape
        _, ly = hadamard(height)
        _, lx = hadamard(width)
        return (ly[:, None] + lx[None, :]).expand(channels, height, width).clone()


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    num = 256 if args.toy else 4096
    shape = (1, 8, 8)
    dim = math.prod(shape)
    basis = WalshHadamardBasis()

    x = torch.randn(3, *shape, dtype=torch.float64)
    assert torch.allclose(basis.decode(basis.encode(x)), x, atol=1e-12), "decode(encode(x)) == x"
    assert torch.allclose(basis.encode(x).norm(), x.norm()), "orthonormal: ‖U x‖ = ‖x‖"

    labels = basis.labels(shape)
    prior = Prior(variance=2.0 / (1.0 + labels.to(torch.float32)))  # the user's own variances, one per component
    schedule = SoftConditioning(labels, softness=2.0)  # low sequency first, softly
    process = GaussianDiffusion(basis, prior, schedule)

    # Data: 8×8 periodic Gaussian random fields with a known covariance, and their exact ε-predictor.
    truth = power_law_prior(FourierBasis(), shape, tau=2.0, exponent=2.0, amplitude=0.5)
    covariance = covariance_in_basis(FourierBasis(), truth.variance.double())
    oracle = GaussianOracle(process, torch.zeros(shape), covariance)

    result = heun(process, oracle, (num, *shape), steps=40, generator=torch.Generator().manual_seed(0))
    flat = result.samples.double().flatten(1)
    empirical = flat.T @ flat / num
    error = (empirical - covariance).norm() / covariance.norm()
    # Exact samples give E‖Ŝ − S‖²_F = (‖S‖²_F + (tr S)²)/N (Wishart), the error to expect from sampling alone.
    expected = math.sqrt((1 + covariance.trace() ** 2 / covariance.norm() ** 2) / num)
    print(f"{num} samples, NFE {result.nfe}: relative covariance error {error:.3f} "
          f"(exact samples: {expected:.3f} on average)")

    data = oracle.sample(256 if args.toy else 1024, generator=torch.Generator().manual_seed(1)).float()
    bound = process.nll_bound(oracle, data, generator=torch.Generator().manual_seed(2)).double()
    exact = -torch.distributions.MultivariateNormal(torch.zeros(dim, dtype=torch.float64), covariance).log_prob(
        data.double().flatten(1)) / (dim * math.log(2))
    se = (bound - exact).std().item() / math.sqrt(len(data))
    print(f"negative ELBO {bound.mean():.4f} bits/dim, exact NLL {exact.mean():.4f} bits/dim "
          f"(gap {bound.mean() - exact.mean():+.4f} ± {se:.4f}; a bound, so ≥ 0 up to its noise)")


if __name__ == "__main__":
    main()
