"""Seeded noise that honours an explicit generator on any device, one generator per batch or per sample.

Every draw takes `generator`: a `torch.Generator` (one stream for the whole batch), a
`PerSampleGenerator` (row i of every draw comes from generator i, so sample i does not depend on
the batch it was drawn in) or None (torch's global stream). Draws are made on the generator's
device and moved to the requested one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor


def mix_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every integer in `parts` (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class PerSampleGenerator:
    """One `torch.Generator` per sample of a batch: draws shaped (B, …) take row i from generator i.

    For a slice of a larger batch (one rank's or micro-batch's share of a global batch) it also knows the rows'
    `positions` in the whole batch of `total` samples and a `shared` seed, so that stratified draws cover the
    whole batch, not the slice (`strata`): the randomness of sample i is then the same however the batch is split.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu",
                 positions: Sequence[int] | None = None, total: int | None = None, shared: int | None = None) -> None:
        if len(seeds) == 0:
            raise ValueError("a per-sample generator needs at least one seed")
        if (positions is None) != (total is None) or (positions is not None and len(positions) != len(seeds)):
            raise ValueError("give the rows' positions and the whole batch's size together, one position per seed")
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]
        self.positions, self.total, self.shared = positions, total, shared

    @classmethod
    def for_indices(cls, seed: int, indices: Sequence[int], device: torch.device | str = "cpu") -> PerSampleGenerator:
        """Generators for samples `indices` of a run seeded `seed`: sample i's stream is seeded mix_seed(seed, i)."""
        return cls([mix_seed(seed, i) for i in indices], device)

    @classmethod
    def for_batch_rows(cls, seed: int, step: int, rows: range, total: int,
                       device: torch.device | str = "cpu") -> PerSampleGenerator:
        """Generators for rows `rows` of step `step`'s global batch of `total` samples: row i's stream is seeded
        mix_seed(seed, step, i) and the strata of the whole batch share the seed mix_seed(seed, step)."""
        return cls([mix_seed(seed, step, i) for i in rows], device, positions=list(rows), total=total,
                   shared=mix_seed(seed, step))

    def __len__(self) -> int:
        """The batch size it serves."""
        return len(self.generators)


Generator = torch.Generator | PerSampleGenerator | None


def _rows(generator: PerSampleGenerator, batch: int) -> list[torch.Generator]:
    if batch != len(generator):
        raise ValueError(f"a per-sample generator of {len(generator)} samples cannot draw a batch of {batch}")
    return generator.generators


def _draw(sampler: Callable[..., Tensor], shape: tuple[int, ...], generator: Generator,
          device: torch.device | str, dtype: torch.dtype) -> Tensor:
    if isinstance(generator, PerSampleGenerator):
        rows = [sampler((1, *shape[1:]), generator=g, device=generator.device, dtype=dtype)
                for g in _rows(generator, shape[0])]
        return torch.cat(rows).to(device)
    source = generator.device if generator is not None else device
    return sampler(shape, generator=generator, device=source, dtype=dtype).to(device)


def gaussian_noise(shape: tuple[int, ...], generator: Generator, device: torch.device | str,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """ξ ~ N(0, I) of `shape` on `device`."""
    return _draw(torch.randn, shape, generator, device, dtype)


def uniform_noise(shape: tuple[int, ...], generator: Generator, device: torch.device | str,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """u ~ U[0, 1) of `shape` on `device`."""
    return _draw(torch.rand, shape, generator, device, dtype)


def _elementwise(draw: Callable[..., Tensor], generator: Generator, *args: Tensor) -> Tensor:
    """draw(*args, generator=…) per element, computed where the generator lives, returned on the args' device."""
    device = args[0].device
    if isinstance(generator, PerSampleGenerator):
        rows = [draw(*(a[i:i + 1].to(generator.device) for a in args), generator=g)
                for i, g in enumerate(_rows(generator, args[0].shape[0]))]
        return torch.cat(rows).to(device)
    source = generator.device if generator is not None else device
    return draw(*(a.to(source) for a in args), generator=generator).to(device)


def binomial(count: Tensor, probability: Tensor, generator: Generator) -> Tensor:
    """Binomial(n, p) per element (n float counts, p of n's shape and dtype)."""
    return _elementwise(torch.binomial, generator, count, probability.to(count.dtype).expand_as(count).contiguous())


def poisson(rate: Tensor, generator: Generator) -> Tensor:
    """Poisson(λ) per element."""
    return _elementwise(torch.poisson, generator, rate)


def strata(batch: int, generator: Generator, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Tensor:
    """s_b = (u + b/B) mod 1 with one u ~ U[0, 1): a stratified, low-variance cover of [0, 1). For a per-sample
    generator of a batch slice, b and B are the rows' positions in the whole batch and u is drawn from its shared
    seed (the same s_b whatever the split); for one without positions each s_b is its own uniform draw."""
    if isinstance(generator, PerSampleGenerator):
        if generator.positions is None:
            return uniform_noise((batch,), generator, device, dtype)
        _rows(generator, batch)
        u = uniform_noise((1,), torch.Generator(generator.device).manual_seed(generator.shared), device, dtype)
        positions = torch.tensor(generator.positions, device=device, dtype=dtype)
        return torch.remainder(u + positions / generator.total, 1.0)
    u = uniform_noise((1,), generator, device, dtype)
    return torch.remainder(u + torch.arange(batch, device=device, dtype=dtype) / batch, 1.0)


def stratified_times(batch: int, generator: Generator, device: torch.device | str) -> Tensor:
    """Training and ELBO times t_b = `strata` in float32."""
    return strata(batch, generator, device)
