"""GaussianDiffusion(basis, prior, schedule) from a GaussianConfig and the data (which fits PCA bases, fitted
priors and data-variance labels), or from a saved process's state in place of the data."""

from __future__ import annotations

import torch
from collections.abc import Mapping

from torch import Tensor

from diffspace.families.gaussian.config import GaussianConfig
from diffspace.families.gaussian.priors import Prior, fitted_prior, laplacian_prior, power_law_prior, white_prior
from diffspace.families.gaussian.process import GaussianDiffusion
from diffspace.families.gaussian.schedules import SCALAR_SCHEDULES, Schedule, SoftConditioning
from diffspace.likelihood import dequantize
from diffspace.process import DataFacts
from diffspace.spaces import BASES, Basis, HaarBasis, PCABasis, Shape, column_labels, haar_column_labels, row_labels


def _needs(data: Tensor | None, what: str) -> Tensor:
    if data is None:
        raise ValueError(f"{what} is estimated from data: pass training images to build_process")
    return data


Fitted = Mapping[str, Tensor] | None


def _basis(cfg: GaussianConfig, shape: Shape, data: Tensor | None, fitted: Fitted) -> Basis:
    if cfg.basis == "pca":
        return PCABasis(shape) if fitted is not None else PCABasis.fit(_needs(data, "the pca basis"))
    return BASES[cfg.basis]()


def _prior(cfg: GaussianConfig, basis: Basis, shape: Shape, data: Tensor | None, fitted: Fitted) -> Prior:
    if cfg.prior == "white":
        return white_prior(shape)
    if cfg.prior == "power_law":
        return power_law_prior(basis, shape, tau=cfg.prior_tau, exponent=cfg.prior_exponent)
    if cfg.prior == "laplacian":
        return laplacian_prior(basis, shape, tau=cfg.prior_tau, exponent=cfg.prior_exponent)
    if fitted is not None:
        return Prior(fitted["prior.variance"], fitted["prior.mean"])
    return fitted_prior(basis, _needs(data, "the fitted prior"))


def _labels(cfg: GaussianConfig, basis: Basis, prior: Prior, shape: Shape, data: Tensor | None,
            fitted: Fitted) -> Tensor:
    """The ordering labels of the soft schedule (see GaussianConfig.labels)."""
    if cfg.labels == "basis":
        return basis.labels(shape)
    if cfg.labels == "log_variance":
        return prior.log_variance_labels()
    if cfg.labels == "data_log_variance":
        if fitted is not None:  # the saved shift l/s holds the labels
            return fitted["schedule.shift"].double() * cfg.softness
        return fitted_prior(basis, _needs(data, "labels data_log_variance")).log_variance_labels()
    if cfg.labels == "column":
        return column_labels(shape)
    if cfg.labels == "row":
        return row_labels(shape)
    if not isinstance(basis, HaarBasis):
        raise ValueError(f"labels haar_column order Haar coefficients: set process.basis=haar (got {basis.name!r})")
    return haar_column_labels(shape, basis.levels)


def _schedule(cfg: GaussianConfig, basis: Basis, prior: Prior, shape: Shape, data: Tensor | None,
              fitted: Fitted) -> Schedule:
    if cfg.schedule != "soft":
        return SCALAR_SCHEDULES[cfg.schedule](gamma_min=cfg.gamma_min, gamma_max=cfg.gamma_max)
    labels = _labels(cfg, basis, prior, shape, data, fitted)
    return SoftConditioning(labels, cfg.softness, cfg.gamma_min, cfg.gamma_max, clip=cfg.clip)


def fitted_to_data(cfg: GaussianConfig) -> bool:
    """Whether a part of the process is estimated from the training data (PCA basis, fitted prior, data labels)."""
    data_labels = cfg.schedule == "soft" and cfg.labels == "data_log_variance"
    return cfg.basis == "pca" or cfg.prior == "fitted" or data_labels


def build_gaussian(cfg: GaussianConfig, facts: DataFacts, data: Tensor | None, fitted: Fitted = None) -> GaussianDiffusion:
    """GaussianDiffusion(basis, prior, schedule) for data of shape facts.shape; with `dequantize`, the data-fitted
    parts see the training images dequantized once (seeded), as training sees them."""
    if cfg.dequantize is None:
        raise ValueError("process.dequantize is unset: resolve the config against the data first (build_process does)")
    shape, levels = facts.shape, facts.levels if cfg.dequantize else 0
    if data is not None and levels:
        data = dequantize(data.float(), levels, torch.Generator(data.device).manual_seed(0))
    basis = _basis(cfg, shape, data, fitted)
    prior = _prior(cfg, basis, shape, data, fitted)
    schedule = _schedule(cfg, basis, prior, shape, data, fitted)
    return GaussianDiffusion(basis, prior, schedule, weighting=cfg.weighting, network_input=cfg.network_input,
                             network_output=cfg.network_output, softness_range=tuple(cfg.softness_range) or None,
                             fitted_to_data=fitted_to_data(cfg), levels=levels or 0)
