"""Gaussian diffusion in a chosen basis (GUD; multilevel / infinite-dimensional diffusion; DDPM as a special case):
a basis, a prior N(m, Σ) diagonal in it, a scalar or component-wise (soft-conditioning) schedule."""

from diffspace.families.gaussian.build import build_gaussian, fitted_to_data
from diffspace.families.gaussian.config import GaussianConfig, migrate_v1, resolve
from diffspace.families.gaussian.extension import extend_right
from diffspace.families.gaussian.process import GaussianDiffusion, NoiseLevel
from diffspace.families.gaussian.samplers import SAMPLERS
from diffspace.process import Family, register

FAMILY = register(Family(
    name="gaussian", config=GaussianConfig, build=build_gaussian, samplers=SAMPLERS, resolve=resolve, migrate=migrate_v1,
    extend_right=extend_right, fits_data=fitted_to_data,
    summary="diagonal Gaussian diffusion in a basis towards a prior N(m, Σ), scalar or component-wise schedule",
))

__all__ = ["FAMILY", "GaussianConfig", "GaussianDiffusion", "NoiseLevel", "build_gaussian"]
