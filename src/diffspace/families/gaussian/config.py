"""The knobs of Gaussian diffusion in a basis (`process.kind = "gaussian"`): GUD, multilevel, plain DDPM."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from diffspace.process import DataFacts, ProcessConfig
from diffspace.spaces import BASIS_NAMES

PRIORS = ("white", "power_law", "laplacian", "fitted")
LABELS = ("basis", "log_variance", "data_log_variance", "column", "row", "haar_column")
SCALAR_SCHEDULE_NAMES = ("cosine", "vp_linear", "logsnr_linear")
SCHEDULES = (*SCALAR_SCHEDULE_NAMES, "soft")
WEIGHTINGS = ("eps", "elbo", "noise")
NETWORK_INPUTS = ("data", "whitened")
NETWORK_OUTPUTS = ("eps", "noise")
#: Knobs that only the soft-conditioning schedule reads, with their defaults.
SOFT_ONLY = {"softness": 1.0, "softness_range": (), "labels": "basis", "clip": False}


@dataclass
class GaussianConfig(ProcessConfig):
    """Gaussian diffusion in a basis towards a prior N(m, Σ) with a (component-wise) schedule.

    basis     — "pixel" | "dct" | "fourier" | "haar" | "pca": where to diffuse.
    prior     — "white" | "power_law" | "laplacian" | "fitted": per-component variance λ of N(0, Σ).
    prior_tau, prior_exponent — λ_k = (τ² + |k|²)^(−s) for the power-law prior (s > 1), and
                (τ² + μ_k)^(−s) with μ_k the grid Laplacian's symbol for the laplacian prior.
    schedule  — "cosine" | "vp_linear" | "logsnr_linear" | "soft": γ(t) = log(σ²/α²).
    gamma_min, gamma_max — γ at t = 0 and t = 1 (the soft schedule's endpoint targets).
    softness  — GUD softness s; hierarchy strength a = 1/s (soft schedule only).
    softness_range — () = train at `softness` only; (s_min, s_max) = one model for a range of
                softness values: each training example draws a = 1/s uniformly in
                [1/s_max, 1/s_min] and the network is conditioned on s (model.cond_keys must hold
                "softness"); sampling uses `softness` unless a softness is given as conditioning.
    labels    — what orders components for the soft schedule: "basis" (the basis's own
                label: |k|, wavelet level, PCA rank, column) | "log_variance" (−log λ of the
                prior) | "data_log_variance" (−log of the data's variance per component, also
                for unwhitened priors) | "column" | "row" | "haar_column" (Haar basis: columns
                left to right, each finer level trailing the coarser one; spaces.haar_column_labels).
    clip      — freeze each component outside its active window (soft schedule only).
    weighting — training loss weights: "eps" (uniform ε-matching) | "elbo" (½ γ′, bits/dim)
                | "noise" (λ: the data-space L² error of the noise, for function-space models).
    network_input — what the network sees: "data" (the noisy state in data space,
                m + Uᵀ(√λ z_t); right for function-space models) | "whitened" (Uᵀ z_t, unit
                scale in every component; right for data-fitted priors with tiny variances).
    network_output — what the network returns: "eps" (Uᵀ ε) | "noise" (the data-space noise
                Uᵀ(√λ ε) = C^{1/2} ξ, a resolution-independent function for trace-class priors:
                right for FNOs trained across resolutions).
    dequantize — train on uniformly dequantized data x + u·2/(L − 1), u ~ U[−½, ½), as the bits/dim
                bound evaluates them, and fit PCA bases and fitted priors to dequantized data:
                unset (null) = when the data have L discrete levels; false for continuous data (GRF,
                Darcy) or to train on the levels themselves.
    """

    kind: str = "gaussian"
    basis: str = field(default="pixel", metadata={"choices": BASIS_NAMES})
    prior: str = field(default="white", metadata={"choices": PRIORS})
    prior_tau: float = field(default=1.0, metadata={"min": 0.0})
    prior_exponent: float = 2.0
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    gamma_min: float = -10.0
    gamma_max: float = 10.0
    softness: float = field(default=1.0, metadata={"gt": 0.0})
    softness_range: tuple[float, ...] = field(default=(), metadata={"gt": 0.0})
    labels: str = field(default="basis", metadata={"choices": LABELS})
    clip: bool = False
    weighting: str = field(default="eps", metadata={"choices": WEIGHTINGS})
    network_input: str = field(default="data", metadata={"choices": NETWORK_INPUTS})
    network_output: str = field(default="eps", metadata={"choices": NETWORK_OUTPUTS})
    dequantize: bool | None = None

    def __post_init__(self) -> None:
        """Cross-field rules: γ range ordered; soft-schedule knobs only with the soft schedule."""
        self.softness_range = tuple(self.softness_range)
        if not self.gamma_min < self.gamma_max:
            raise ValueError(f"need process.gamma_min < process.gamma_max; got {self.gamma_min} ≥ {self.gamma_max}")
        if self.schedule != "soft":
            changed = [k for k, default in SOFT_ONLY.items() if getattr(self, k) != default]
            if changed:
                raise ValueError(f"process.{changed[0]} is read by the soft-conditioning schedule only; set "
                                 f"process.schedule=soft (got schedule={self.schedule!r})")
        if self.softness_range and (len(self.softness_range) != 2 or self.softness_range[0] > self.softness_range[1]):
            raise ValueError(f"process.softness_range must be s_min,s_max with s_min ≤ s_max; got {self.softness_range}")


def resolve(cfg: GaussianConfig, facts: DataFacts) -> GaussianConfig:
    """`dequantize` from the data (on when they have levels) unless set; continuous data cannot be dequantized."""
    if cfg.dequantize is None:
        return dataclasses.replace(cfg, dequantize=facts.levels is not None)
    if cfg.dequantize and facts.levels is None:
        raise ValueError("process.dequantize=true but the data are continuous (no intensity levels); set "
                         "process.dequantize=false or leave it unset")
    return cfg


def migrate_v1(top: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """A version-1 `process:` mapping → this family's: version 1 kept the Gaussian knobs at the top level and
    trained without dequantization."""
    return {**top, "dequantize": False}
