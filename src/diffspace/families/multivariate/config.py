"""The knobs of a multivariate diffusion with auxiliary variables (`process.kind = "multivariate"`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from diffspace.process import DataFacts, ProcessConfig
from diffspace.spaces import BASIS_NAMES

DIFFUSIONS: tuple[str, ...] = ("vp", "cld", "alda", "malda", "learned2", "learned3")
IMPORTANCE: tuple[str, ...] = ("trace", "uniform")
TRANSFORMS: tuple[str, ...] = ("logit", "none")


@dataclass
class MultivariateConfig(ProcessConfig):
    """A linear diffusion on u = (x, v¹ … v^{K−1}) per pixel with stationary law N(0, Σ_∞):

        du = −β(t)(Q + D)Σ_∞⁻¹ u dt + √(2β(t) D) dW,   Q skew, D positive semidefinite.

    basis        — "pixel" | "dct" | "fourier" | "haar" | "pca": the orthonormal basis the transformed data
                   y are diffused in ("pca" is fitted to the transformed training data).
    diffusion    — "vp" (K = 1) | "cld" (critically damped Langevin, K = 2) | "alda" | "malda"
                   (K = 3) | "learned2" | "learned3" (Q = G − Gᵀ, D = BBᵀ + εI learned with the
                   network on the ELBO).
    beta_min, beta_max — β(t) = β_min + t(β_max − β_min); the kernel depends on ∫₀ᵗ β only.
    t_min        — the diffusion is truncated at t_min: the ELBO integrates over [t_min, 1] and
                   adds a decoder term at t_min; samplers read earlier times as t_min.
    importance   — how the ELBO draws t: "trace" (density ∝ tr(ggᵀ Σ_t⁻¹), tabulated per call)
                   | "uniform"; both with the unbiased weight 1/p(t).
    x_var        — stationary variance of x, Σ_∞[0, 0].
    aux_var      — stationary variance M of every auxiliary variable (CLD and MALDA damping
                   Γ = 2√M, ALDA L = 1/M).
    aux_init_var — variance of the auxiliaries at t = 0: v₀ ~ N(0, aux_init_var · I).
    d_epsilon    — ε of the learned D = BBᵀ + εI (> 0: D is positive definite).
    learned_init — scale s of the learned initialisation G ~ N(0, s²), B = I + N(0, s²).
    transform    — "logit": diffuse y = logit(λ + (1 − 2λ)p), p ∈ [0, 1) the dequantized
                   intensity | "none": diffuse the model-space x itself.
    logit_alpha  — λ of the logit transform.
    levels       — intensity levels L of the data (uniform dequantization in the training loss
                   and bits/dim of the discrete data); 0: the data are continuous; unset (null): the
                   data set's own (a set L > 0 that is not the data's is refused).
    """

    kind: str = "multivariate"
    basis: str = field(default="pixel", metadata={"choices": BASIS_NAMES})

    diffusion: str = field(default="cld", metadata={"choices": DIFFUSIONS})
    beta_min: float = field(default=0.1, metadata={"gt": 0.0})
    beta_max: float = field(default=10.0, metadata={"gt": 0.0})
    t_min: float = field(default=1e-3, metadata={"gt": 0.0, "lt": 1.0})
    importance: str = field(default="trace", metadata={"choices": IMPORTANCE})
    x_var: float = field(default=1.0, metadata={"gt": 0.0})
    aux_var: float = field(default=1.0, metadata={"gt": 0.0})
    aux_init_var: float = field(default=0.01, metadata={"gt": 0.0})
    d_epsilon: float = field(default=1e-3, metadata={"gt": 0.0})
    learned_init: float = field(default=0.5, metadata={"min": 0.0})
    transform: str = field(default="logit", metadata={"choices": TRANSFORMS})
    logit_alpha: float = field(default=0.05, metadata={"gt": 0.0, "lt": 0.5})
    levels: int | None = field(default=None, metadata={"min": 0})

    def __post_init__(self) -> None:
        """Cross-field rules."""
        if self.beta_min > self.beta_max:
            raise ValueError(f"need process.beta_min ≤ process.beta_max; got {self.beta_min} > {self.beta_max}")
        if self.levels == 1:
            raise ValueError("process.levels must be 0 (continuous data) or at least 2; got 1")


def resolve(cfg: MultivariateConfig, facts: DataFacts) -> MultivariateConfig:
    """`levels` from the data (0 for continuous data) unless set; a set L > 0 must be the data's (0 is always
    allowed: the data are then treated as continuous, without dequantization)."""
    data_levels = facts.levels or 0
    if cfg.levels is None:
        return dataclasses.replace(cfg, levels=data_levels)
    if cfg.levels and cfg.levels != data_levels:
        raise ValueError(f"process.levels={cfg.levels} but the data have {data_levels or 'continuous'} levels; "
                         "leave process.levels unset (null) to take the data's")
    return cfg


def migrate_v1(top: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """A version-1 `process:` mapping → this family's: its own section plus the shared top-level basis."""
    return {**section, **({"basis": top["basis"]} if "basis" in top else {})}
