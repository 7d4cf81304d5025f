"""MultivariateDiffusion from a MultivariateConfig: fixed or learned (Q, D), β schedule, data transform and basis."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from diffspace.families.multivariate.config import MultivariateConfig
from diffspace.families.multivariate.kernels import LinearBeta
from diffspace.families.multivariate.matrices import NUM_VARS, FixedMatrices, LearnedMatrices, fixed_matrices
from diffspace.families.multivariate.process import MultivariateDiffusion
from diffspace.process import DataFacts
from diffspace.spaces import BASES, PCABasis


def build_multivariate(cfg: MultivariateConfig, facts: DataFacts, data: Tensor | None,
                       fitted: Mapping[str, Tensor] | None = None) -> MultivariateDiffusion:
    """The process of `cfg` (levels resolved) in its basis (a PCA basis is fitted to the transformed data, or
    taken from a saved state `fitted`); the learned diffusions draw their initial G, B from the global torch RNG."""
    if cfg.levels is None:
        raise ValueError("process.levels is unset: resolve the config against the data first (build_process does)")
    if cfg.diffusion.startswith("learned"):
        matrices: nn.Module = LearnedMatrices(NUM_VARS[cfg.diffusion], cfg.d_epsilon, cfg.learned_init)
    else:
        matrices = FixedMatrices(*fixed_matrices(cfg.diffusion, cfg.x_var, cfg.aux_var))
    process = MultivariateDiffusion(
        matrices, facts.shape, LinearBeta(cfg.beta_min, cfg.beta_max), x_var=cfg.x_var, aux_var=cfg.aux_var,
        aux_init_var=cfg.aux_init_var, t_min=cfg.t_min, importance=cfg.importance, transform=cfg.transform,
        logit_alpha=cfg.logit_alpha, levels=cfg.levels, resolution_free=cfg.basis != "pca")
    if cfg.basis == "pca" and fitted is not None:
        process.basis = PCABasis(facts.shape)  # its buffers come with the saved state
    elif cfg.basis == "pca":
        if data is None:
            raise ValueError("the pca basis is fitted to data: pass training images to build_process")
        process.basis = PCABasis.fit(process.encode_data(data.float())[0])
    else:
        process.basis = BASES[cfg.basis]()
    return process
