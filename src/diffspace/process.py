"""The process contract, the family registry and `build_process`: the one module that lists the families.

A **process family** (Gaussian, multivariate, Blackout, …) is one package under
`diffspace.families`; it registers one `Family` record (its config dataclass, builder,
samplers) when imported. Generic code asks the record or the process, never a family's name:

    Process            what every family offers: shapes, network channels, state coordinates,
                       the prior sample, the forward marginal (state and training target), the
                       per-sample loss and the negative ELBO in bits/dim, and its `capabilities`.
    ContinuousProcess  adds what SDE/ODE samplers and likelihoods need: one network evaluation read
                       as a `Prediction` (score and denoised state), the reverse-SDE drift and
                       diffusion, the probability-flow velocity, the prior log-density.

Time is t ∈ [0, 1] for every process (t = 0 data, t = 1 prior), states are batches (B, …).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from diffspace.validation import ConfigError, check_fields, unknown

if TYPE_CHECKING:
    from diffspace.noise import Generator

#: The family packages under diffspace.families, imported on first use of the registry.
FAMILY_MODULES: tuple[str, ...] = ("gaussian", "multivariate", "blackout", "flow")
#: The family of a config that names none.
DEFAULT_FAMILY = "gaussian"

Net = Callable[..., Tensor]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class DataFacts:
    """What a builder may know of the data without seeing it: per-image shape (C, H, W) and intensity levels
    (256 for 8-bit images, 2 for binary ones; None for continuous fields)."""

    shape: tuple[int, int, int]
    levels: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a process can do, declared by the process itself.

    discrete        — the state is integer counts and `nll_bound` bounds the discrete data as it is
                      (no dequantization, no offset).
    ode_likelihood  — a ContinuousProcess whose probability-flow ODE gives the exact likelihood of the
                      data (`likelihood_state` and `prior_log_density` are defined).
    resolution_free — nothing is fitted to data at one resolution: the config builds the process at
                      any (C, N, N) (multilevel training, sampling at unseen resolutions).
    samplers        — the names of the samplers that fit (the family's, first = default).
    grids           — the named time grids beyond "uniform" that the process builds itself (`time_grid`), from
                      `diffspace.sampling.GRIDS`: they follow its own noise levels.
    """

    discrete: bool
    ode_likelihood: bool
    resolution_free: bool
    samplers: tuple[str, ...]
    grids: tuple[str, ...] = ()


@dataclass
class Marginal:
    """A draw of the forward marginal x_t | x_0 in state coordinates, and what the network learns to predict."""

    state: Tensor
    target: Tensor


@dataclass
class Prediction:
    """One network evaluation at (x_t, t) read in state coordinates: ∇ log p_t and E[x_0 | x_t] (`denoised`);
    `context` holds the process's quantities at t (noise levels, kernels) for the drift to reuse."""

    score: Tensor
    denoised: Tensor
    context: Any = None


@runtime_checkable
class Process(Protocol):
    """What every process family offers (see the module docstring)."""

    capabilities: Capabilities

    @property
    def device(self) -> torch.device:
        """Where the process's buffers live."""

    def state_shape(self, data_shape: Shape) -> Shape:
        """The state's shape for a data batch shape (B, C, H, W)."""

    def network_channels(self, data_channels: int) -> tuple[int, int]:
        """(in, out) channels of the network for data with `data_channels` channels."""

    def to_state(self, x: Tensor) -> Tensor:
        """State coordinates of model-space data x (B, C, H, W)."""

    def from_state(self, state: Tensor) -> Tensor:
        """Model-space data of a state."""

    def prior_sample(self, shape: Shape, generator: Generator = None, device: torch.device | None = None) -> Tensor:
        """A draw of the terminal law (t = 1) for a state shape."""

    def marginal(self, x0: Tensor, t: Tensor, generator: Generator = None, **cond: Any) -> Marginal:
        """x_t | x_0 at times t (B,) in state coordinates, with the network's training target."""

    def loss(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Per-sample training loss (B,) of model-space data x0."""

    def nll_bound(self, net: Net, x0: Tensor, generator: Generator = None, **cond: Any) -> Tensor:
        """Per-sample negative ELBO in bits/dim: of x0's continuous density, or of the counts when discrete."""


@runtime_checkable
class ContinuousProcess(Process, Protocol):
    """A process with a continuous state: SDE/ODE samplers and likelihoods work through these methods."""

    def predict(self, net: Net, x: Tensor, t: Tensor, cond: dict[str, Any] | None = None) -> Prediction:
        """One network evaluation at state x, times t (B,)."""

    def reverse_sde(self, x: Tensor, t: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
        """(drift f̄, diffusion g) of the reverse SDE dx = f̄ dt + g dW̄ at (x, t), from a prediction there."""

    def diffusion_noise(self, g: Tensor, noise: Tensor) -> Tensor:
        """g ξ: the reverse SDE's diffusion applied to white noise ξ of the state's shape."""

    def pf_ode_velocity(self, x: Tensor, t: Tensor, prediction: Prediction) -> Tensor:
        """dx/dt of the probability-flow ODE at (x, t), from a prediction there."""

    def prior_log_density(self, x: Tensor) -> Tensor:
        """log p₁(x) of states x under the terminal law, per sample (nats)."""

    def likelihood_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(state, log |det ∂state/∂x| per sample) of model-space data; only for capabilities.ode_likelihood."""

    # Optional, for the names in capabilities.grids:
    #   time_grid(name, steps, rho, t_end, cond) -> Tensor   the times 1 = t_0 > … > t_N = t_end of grid `name`


@dataclass
class ProcessConfig:
    """The base of every family's config: `kind` names the family, the family's dataclass holds its knobs."""

    kind: str = field(default=DEFAULT_FAMILY)


Builder = Callable[[Any, DataFacts, Tensor | None, Mapping[str, Tensor] | None], Process]


@dataclass(frozen=True)
class Family:
    """A process family's registry record.

    config   — its config dataclass (a ProcessConfig whose `kind` default is `name`).
    build    — (config, data facts, training images or None, fitted state or None) → process; ValueError for
               what cannot be built. The fitted state is the state dict of a saved process: a builder takes
               the parts it would fit to data (a PCA basis, a fitted prior) from it instead.
    samplers — the samplers that fit it, by name (first = default).
    oracle_only — those of them that need an exact oracle in place of a trained network (toy problems).
    fits_data — whether a config's process has parts fitted to the training images (a streamed data set is
               decoded for the fit only then).
    resolve  — the config with its data-derived fields (None = "from the data") filled in from the facts;
               ValueError when a set value contradicts the data.
    extend_right — (process, net, images, columns, steps, generator, cond=…) → images with `columns` more
               columns generated to the right, for models that generate columns left to right (None: no
               image extension); an `Extension` with the images and NFE.
    migrate  — (top-level keys, the family's own section) of a version-1 `process:` mapping, which held every
               family's knobs (the Gaussian ones at the top, the others in a section named after the family)
               → this family's mapping.
    """

    name: str
    config: type[ProcessConfig]
    build: Builder
    samplers: Mapping[str, Callable[..., Any]]
    oracle_only: tuple[str, ...] = ()
    fits_data: Callable[[Any], bool] = lambda cfg: False
    resolve: Callable[[Any, DataFacts], Any] = lambda cfg, facts: cfg
    migrate: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] = lambda top, section: dict(section)
    extend_right: Callable[..., Any] | None = None
    summary: str = ""


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family's record (each family package calls this once, on import)."""
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise ValueError(f"a process family named {family.name!r} is already registered")
    default = next(f.default for f in fields(family.config) if f.name == "kind")
    if default != family.name:
        raise ValueError(f"{family.config.__name__}.kind must default to {family.name!r}; got {default!r}")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    """Every registered family by name (importing the packages of FAMILY_MODULES on first use)."""
    for module in FAMILY_MODULES:
        importlib.import_module(f"diffspace.families.{module}")
    return _FAMILIES


def family(kind: str) -> Family:
    """The record of family `kind`; ConfigError naming the closest one."""
    known = families()
    if kind not in known:
        raise unknown("process.kind", kind, known)
    return known[kind]


def default_config() -> ProcessConfig:
    """The config of the default family with its defaults."""
    return family(DEFAULT_FAMILY).config()


def samplers() -> dict[str, Callable[..., Any]]:
    """Every registered sampler by name (a sampler several families share appears once)."""
    return {name: fn for record in families().values() for name, fn in record.samplers.items()}


def get_sampler(name: str) -> Callable[..., Any]:
    """The sampler called `name`; ConfigError naming the closest one."""
    known = samplers()
    if name not in known:
        raise unknown("sampler", name, known)
    return known[name]


def check_sampler(kind: str, name: str) -> None:
    """ConfigError unless sampler `name` fits family `kind`, naming those that do."""
    fitting = tuple(family(kind).samplers)
    if name not in fitting:
        get_sampler(name)
        raise ConfigError(f"sampler '{name}' does not fit process.kind={kind}; choose one of {', '.join(fitting)}")


def resolve_config(cfg: ProcessConfig, facts: DataFacts) -> ProcessConfig:
    """`cfg` with its data-derived fields filled in from `facts` (ConfigError when they contradict the data)."""
    try:
        return family(cfg.kind).resolve(cfg, facts)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_process(cfg: ProcessConfig, data: Tensor | None = None, facts: DataFacts | Shape | None = None) -> Process:
    """The process `cfg` describes, for training images `data` (N, C, H, W) (which fit data-driven parts such as a
    PCA basis) or for `facts` (a DataFacts, or just the (C, H, W) shape of continuous data)."""
    record = family(cfg.kind)
    if not isinstance(cfg, record.config):
        raise ConfigError(f"process.kind={cfg.kind} needs a {record.config.__name__}; got {type(cfg).__name__}")
    check_fields(cfg, "process.")
    if facts is None:
        if data is None:
            raise ValueError("build_process needs training data or the data facts (shape, levels)")
        facts = DataFacts(tuple(data.shape[1:]))
    elif not isinstance(facts, DataFacts):
        facts = DataFacts(tuple(facts))
    if data is not None and tuple(data.shape[1:]) != facts.shape:
        raise ValueError(f"training images of shape {tuple(data.shape[1:])} do not match the data facts {facts.shape}")
    return record.build(record.resolve(cfg, facts), facts, data, None)


def restore_process(cfg: ProcessConfig, facts: DataFacts, state: Mapping[str, Tensor]) -> Process:
    """The process of a saved model without its training data: built from the config and data facts with its
    data-fitted parts and learned parameters taken from `state` (its state dict, which must match exactly:
    ValueError naming the first missing or unexpected entry, or a shape that differs)."""
    record = family(cfg.kind)
    check_fields(cfg, "process.")
    process = record.build(record.resolve(cfg, facts), facts, None, state)
    expected = process.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ValueError(f"the saved process state does not fit a {record.name} process of this config ({what})")
    for key, value in expected.items():
        if tuple(value.shape) != tuple(state[key].shape):
            raise ValueError(f"the saved process state has {key} of shape {tuple(state[key].shape)}; this config "
                             f"builds {tuple(value.shape)}")
    process.load_state_dict(dict(state))
    return process


__all__ = [
    "Capabilities", "ContinuousProcess", "DataFacts", "Family", "Marginal", "Prediction", "Process", "ProcessConfig",
    "build_process", "check_sampler", "restore_process", "default_config", "families", "family", "get_sampler", "register",
    "resolve_config", "samplers",
]
