"""FlowMatching(basis, prior, path, schedule) from a FlowConfig and the data: the basis, prior and soft-conditioning
schedule are the Gaussian family's, built by its builder from the same knobs (PCA bases, fitted priors and
data-variance labels are fitted to the dequantized training data, or restored from a saved state)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from diffspace.families.flow.config import FlowConfig
from diffspace.families.flow.paths import PATHS
from diffspace.families.flow.process import FlowMatching
from diffspace.families.gaussian.build import build_gaussian, fitted_to_data
from diffspace.families.gaussian.config import GaussianConfig
from diffspace.process import DataFacts


def design_space(cfg: FlowConfig) -> GaussianConfig:
    """The Gaussian config with the flow's basis, prior and soft schedule (clipped, so that components freeze
    outside their windows); a scalar flow takes the default scalar schedule, which it does not use."""
    soft = {"schedule": "soft", "softness": cfg.softness, "softness_range": cfg.softness_range, "labels": cfg.labels,
            "clip": True} if cfg.schedule == "soft" else {}
    return GaussianConfig(basis=cfg.basis, prior=cfg.prior, prior_tau=cfg.prior_tau, prior_exponent=cfg.prior_exponent,
                          gamma_min=cfg.gamma_min, gamma_max=cfg.gamma_max, dequantize=cfg.dequantize, **soft)


def build_flow(cfg: FlowConfig, facts: DataFacts, data: Tensor | None,
               fitted: Mapping[str, Tensor] | None = None) -> FlowMatching:
    """FlowMatching for data of shape facts.shape (config resolved: `dequantize` set), fitted to `data` or restored
    from `fitted` (a saved process state, whose keys basis.*, prior.*, schedule.shift are the Gaussian family's)."""
    if cfg.dequantize is None:
        raise ValueError("process.dequantize is unset: resolve the config against the data first (build_process does)")
    space = design_space(cfg)
    gaussian = build_gaussian(space, facts, data, fitted)
    return FlowMatching(
        gaussian.basis, gaussian.prior, PATHS[cfg.path](), gaussian.schedule if cfg.schedule == "soft" else None,
        prediction=cfg.prediction, weighting=cfg.weighting, network_input=cfg.network_input,
        network_output=cfg.network_output, gamma_range=(cfg.gamma_min, cfg.gamma_max),
        softness_range=tuple(cfg.softness_range) or None, fitted_to_data=fitted_to_data(space), levels=gaussian.levels)
