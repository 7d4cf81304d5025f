"""Flow matching in a basis (rectified flow and the cosine path): affine Gaussian probability paths from the data to
the Gaussian family's prior N(m, Σ), one path time for every component or per-component times from GUD soft
conditioning (autoregressive flows at small softness)."""

from diffspace.families.flow.build import build_flow
from diffspace.families.flow.config import FlowConfig, migrate_v1, resolve
from diffspace.families.flow.paths import PATHS, ComponentTimes, CosinePath, OTPath, PathPoint
from diffspace.families.flow.process import FlowMatching, FlowPrediction
from diffspace.families.flow.samplers import SAMPLERS
from diffspace.process import Family, register

FAMILY = register(Family(
    name="flow", config=FlowConfig, build=build_flow, samplers=SAMPLERS, resolve=resolve, migrate=migrate_v1,
    summary="flow matching along affine Gaussian paths to a prior N(m, Σ) in a basis, scalar or per-component times",
))

__all__ = ["FAMILY", "PATHS", "ComponentTimes", "CosinePath", "FlowConfig", "FlowMatching", "FlowPrediction",
           "OTPath", "PathPoint", "build_flow"]
