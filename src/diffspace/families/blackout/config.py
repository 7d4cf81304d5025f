"""The knobs of Blackout diffusion (`process.kind = "blackout"`), one YAML-serialisable field each."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from diffspace.process import DataFacts, ProcessConfig

BLACKOUT_WEIGHTINGS = ("reference", "likelihood")
#: The samplers that fit Blackout diffusion, in the order of `samplers.SAMPLERS` (first = default).
SAMPLER_NAMES = ("binomial_bridge", "tau_leaping", "stochastic_rounding", "exact_bridge")


@dataclass
class BlackoutConfig(ProcessConfig):
    """Blackout diffusion: pixel values are counts whose units die at rate 1.

    t_end     — horizon of the death process: at the last observation time the survival
                probability is p_T = e^(−t_end) (15 for 8-bit images, 10 for binary ones).
                Must exceed ln 2 so that the log-SNR-linear schedule decreases.
    num_steps — T, the number of observation times 0 = t_0 < t_1 < … < t_T; the network
                sees t = k/T, and samplers take any number of steps N ≤ T.
    max_count — the largest count: data with L intensity levels are the counts 0…L−1, so
                max_count = L − 1 (255 for 8-bit images, 1 for binarized ones); unset (null): the
                data's L − 1 (a set value that is not is refused).
    weighting — loss weight w_k of the Poisson loss at step k: "reference" (p_{k−1} − p_k,
                the paper's code) | "likelihood" ((p_{k−1} − p_k)/(1 − p_k) ≈ p/(1 − p)·dt,
                which makes the loss the NLL bound in bits/dim).
    """

    kind: str = "blackout"
    t_end: float = field(default=15.0, metadata={"gt": 0.6931471805599453})
    num_steps: int = field(default=1000, metadata={"min": 1})
    max_count: int | None = field(default=None, metadata={"min": 1})
    weighting: str = field(default="reference", metadata={"choices": BLACKOUT_WEIGHTINGS})


def resolve(cfg: BlackoutConfig, facts: DataFacts) -> BlackoutConfig:
    """`max_count` = L − 1 of data with L levels unless set; a set value must be that (data without levels, e.g.
    given by shape alone, need it set)."""
    if facts.levels is None:
        if cfg.max_count is None:
            raise ValueError("Blackout diffusion works on counts 0…max_count: the data have no intensity levels, so "
                             "set process.max_count (or use a data set of discrete images)")
        return cfg
    if cfg.max_count is None:
        return dataclasses.replace(cfg, max_count=facts.levels - 1)
    if cfg.max_count != facts.levels - 1:
        raise ValueError(f"process.max_count={cfg.max_count} but the data have {facts.levels} levels (counts "
                         f"0…{facts.levels - 1}); leave process.max_count unset (null) to take the data's")
    return cfg


def migrate_v1(top: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """A version-1 `process:` mapping → this family's: its own section."""
    return dict(section)
