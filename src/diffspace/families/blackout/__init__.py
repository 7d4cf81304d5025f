"""Blackout diffusion on counts (Santos, Fox, Lubbers, Lin; ICML 2023): every unit of a pixel's count dies at rate 1,
generation runs the exact reverse birth process from the empty image; the jump-process framework and the exact
posterior for toy data come with it."""

from diffspace.families.blackout.config import BlackoutConfig, migrate_v1, resolve
from diffspace.families.blackout.oracle import BlackoutPosterior
from diffspace.families.blackout.process import BlackoutDiffusion, build_blackout
from diffspace.families.blackout.samplers import SAMPLERS
from diffspace.process import Family, register

FAMILY = register(Family(
    name="blackout", config=BlackoutConfig, build=build_blackout, samplers=SAMPLERS, oracle_only=("exact_bridge",), resolve=resolve,
    migrate=migrate_v1, summary="counts that die one unit at a time; generation from the empty image",
))

__all__ = ["FAMILY", "BlackoutConfig", "BlackoutDiffusion", "BlackoutPosterior", "build_blackout"]
