"""Multivariate diffusions with auxiliary variables (Singhal, Goldstein, Ranganath; ICLR 2023): any linear
diffusion du = −β(Q + D)Σ_∞⁻¹u dt + √(2βD) dW on data and auxiliaries, fixed (VP, CLD, ALDA, MALDA) or learned,
trained on its ELBO."""

from diffspace.families.multivariate.build import build_multivariate
from diffspace.families.multivariate.config import MultivariateConfig, migrate_v1, resolve
from diffspace.families.multivariate.process import ElboTerms, Kernel, MultivariateDiffusion
from diffspace.families.multivariate.samplers import SAMPLERS
from diffspace.process import Family, register

FAMILY = register(Family(
    name="multivariate", config=MultivariateConfig, build=build_multivariate, samplers=SAMPLERS, resolve=resolve,
    migrate=migrate_v1, fits_data=lambda cfg: cfg.basis == "pca", summary="linear diffusion on the data and auxiliary variables (VP, CLD, ALDA, MALDA, learned)",
))

__all__ = ["FAMILY", "ElboTerms", "Kernel", "MultivariateConfig", "MultivariateDiffusion", "build_multivariate"]
