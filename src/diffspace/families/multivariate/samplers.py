"""The samplers that fit multivariate diffusions (first = default): the shared SDE/ODE samplers of `diffspace.samplers`
(the Langevin corrector of "pc" is not offered: its step-size rule assumes a per-component score)."""

from __future__ import annotations

from diffspace.samplers import SDE_SAMPLERS
from diffspace.sampling import Sampler

SAMPLERS: dict[str, Sampler] = {name: SDE_SAMPLERS[name] for name in ("euler_maruyama", "heun")}
