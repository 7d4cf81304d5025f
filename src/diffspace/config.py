"""The typed run configuration: schema, presets, dotted overrides, validation, YAML round trip.

A run is one `RunConfig`: five sections (`data`, `model`, `process`, `train`, `sample`), the
`multilevel` section (training across resolutions; off by default), a `description` and the
config `version`. Every section is a dataclass; its field types drive the parsing of YAML values
and of command-line overrides such as `train.steps=200 model.channels=32`, and its field
metadata the validation (`diffspace.validation`). The `process:` section is a tagged union: its
`kind` names a process family and that family's config dataclass parses the rest, so a knob of
another family is refused with the family it belongs to. Anything wrong raises `ConfigError`,
whose message names the key and, for unknown keys and names, the closest valid one.

Versions: 1 (no `version` key) held every family's knobs in one flat `process:` section (the
Gaussian ones at its top, the others in sections named after their family); it is migrated on
read by each family's `migrate`. 2 is the tagged union.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from diffspace.checkpoint import atomic_write
from diffspace.data import DataConfig
from diffspace.multilevel import MultilevelConfig
from diffspace.nets import NetConfig
from diffspace.process import ProcessConfig, default_config, families, family
from diffspace.sampling import GRID_NAMES
from diffspace.validation import ConfigError, check, closest, unknown

#: The layout `RunConfig.save` writes (see the module docstring).
CONFIG_VERSION = 2


@dataclass
class TrainConfig:
    """How to train.

    steps        — optimizer steps (each of `batch_size` images, all ranks together).
    batch_size   — global batch per step; split evenly over ranks and `grad_accum` micro-batches.
    lr           — AdamW learning rate after warm-up; lr(step) = lr · min(1, (step + 1) / warmup_steps).
    weight_decay — AdamW decoupled weight decay.
    grad_clip    — clip the global gradient norm to this value (0 disables clipping).
    ema_decay    — the EMA decay ceiling; ema_power / ema_inv_gamma — k-diffusion warm-up:
                   decay(n) = min(ema_decay, 1 − (1 + n / inv_gamma)^(−power)) after n updates.
    grad_accum   — micro-batches per optimizer step.
    bf16         — "auto" (on for CUDA), "on", "off": bf16 autocast of the network call only.
    compile      — torch.compile the network.
    device       — "auto" (CUDA when available), "cpu" or "cuda".
    seed         — seeds the data order, the loss randomness and the initial weights.
    log_every / sample_every / checkpoint_every — intervals in steps (0 disables samples).
    keep_last    — checkpoints kept on disk.
    max_nonfinite — consecutive steps with a NaN/Inf gradient skipped before training stops.
    tensorboard  — also log scalars to TensorBoard (needs the `tensorboard` package).
    """

    steps: int = field(default=1000, metadata={"min": 1})
    batch_size: int = field(default=128, metadata={"min": 1})
    lr: float = field(default=2e-4, metadata={"gt": 0.0})
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})
    warmup_steps: int = field(default=100, metadata={"min": 0})
    grad_clip: float = field(default=1.0, metadata={"min": 0.0})
    ema_decay: float = field(default=0.999, metadata={"min": 0.0, "lt": 1.0})
    ema_power: float = field(default=2.0 / 3.0, metadata={"gt": 0.0})
    ema_inv_gamma: float = field(default=1.0, metadata={"gt": 0.0})
    grad_accum: int = field(default=1, metadata={"min": 1})
    bf16: str = field(default="auto", metadata={"choices": ("auto", "on", "off")})
    compile: bool = False
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})
    seed: int = field(default=0, metadata={"min": 0})
    log_every: int = field(default=50, metadata={"min": 1})
    sample_every: int = field(default=0, metadata={"min": 0})
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    keep_last: int = field(default=3, metadata={"min": 1})
    max_nonfinite: int = field(default=10, metadata={"min": 1})
    tensorboard: bool = False


#: Scalar values a sampler option may take.
OptionValue = Union[bool, int, float, str]
#: The sampler knobs that are fields of SampleConfig itself, not entries of `options`.
GRID_KNOBS = ("grid", "rho", "t_end")


@dataclass
class SampleConfig:
    """How to sample: the sampler (a name in `diffspace.process.samplers()`) and its knobs, how many images a grid
    shows (0: no grids), the seed of the grid's noise (the same noise at every interval, so grids are
    comparable), and the batch size of one sampler call.

    steps    — number of steps; unset (null) = the sampler's own default (`diffspace.sampling.Defaults`).
    grid     — the time grid by name (`diffspace.sampling.GRIDS`: uniform, edm, logsnr, windows); unset = the
               sampler's own. rho — its ρ (unset: the sampler's ρ for its own grid, else the grid's default);
               t_end — where it ends (unset: 0, or the process's t_min).
    options  — the sampler's other knobs by name, e.g. {eta: 0.5} (ddim), {churn: 10} (edm_heun), {snr: 0.1}
               (pc), {rounding: nearest} (binomial_bridge), {order: 3} (exp_ode); checked against the sampler's
               signature (`check_sampler_options`).
    grid, rho, t_end and options belong to `sampler`: another sampler asked for on the command line starts from
    its own defaults. `steps` applies to whichever sampler runs.
    compile  — torch.compile the network for sampling (inductor; the first batch pays the compile, later
               batches of the same shape reuse it).
    """

    sampler: str = "euler_maruyama"
    steps: int | None = field(default=None, metadata={"min": 1})
    grid: str | None = field(default=None, metadata={"choices": GRID_NAMES})
    rho: float | None = field(default=None, metadata={"gt": 0.0})
    t_end: float | None = field(default=None, metadata={"min": 0.0, "lt": 1.0})
    options: dict[str, OptionValue] = field(default_factory=dict)
    num: int = field(default=64, metadata={"min": 0})
    seed: int = field(default=0, metadata={"min": 0})
    batch_size: int = field(default=256, metadata={"min": 1})
    compile: bool = False

    def __post_init__(self) -> None:
        """grid, rho and t_end are fields, not options."""
        self.options = dict(self.options)
        for key in self.options:
            if key in GRID_KNOBS or key in ("steps", "sampler"):
                raise ValueError(f"sample.options.{key}: set sample.{key} instead")

    def sampler_options(self) -> dict[str, OptionValue]:
        """The knobs to pass to the sampler: grid, rho and t_end where set, and `options`."""
        knobs = {key: getattr(self, key) for key in GRID_KNOBS if getattr(self, key) is not None}
        return {**knobs, **self.options}

    def knobs_for(self, sampler: str, overrides: typing.Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The knobs of a run with `sampler`: this config's (`sampler_options`) when it is this config's sampler,
        then `overrides` (the command line's) on top."""
        base = self.sampler_options() if sampler == self.sampler else {}
        return {**base, **(overrides or {})}


@dataclass
class RunConfig:
    """Everything that defines a run; `save`/`load` round-trip it through YAML exactly."""

    version: int = field(default=CONFIG_VERSION, metadata={"min": CONFIG_VERSION, "max": CONFIG_VERSION})
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: NetConfig = field(default_factory=NetConfig)
    process: ProcessConfig = field(default_factory=default_config)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    multilevel: MultilevelConfig = field(default_factory=MultilevelConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-ready values (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | Path) -> None:
        """Write the config as YAML to `path` (atomically: a reader never sees half a file)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        atomic_write(path, lambda handle: handle.write(text.encode()))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a config written by `save` (or any partial YAML: missing keys take defaults)."""
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot be read as YAML: {err}") from None
        try:
            return cls.from_dict(raw or {})
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, raw: Any) -> RunConfig:
        """Parse and validate nested plain values of any config version (older layouts are migrated)."""
        return from_dict(cls, migrate(raw))

    def with_overrides(self, overrides: typing.Sequence[str]) -> RunConfig:
        """A copy with dotted `key=value` overrides applied, e.g. "train.steps=200". A changed `process.kind`
        applies first and starts the process section afresh from that family's defaults."""
        pairs = []
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.steps=200)")
            pairs.append((key.strip(), value.strip()))
        raw = self.to_dict()
        kinds = [value for key, value in pairs if key == "process.kind"]
        if kinds and kinds[-1] != raw["process"]["kind"]:
            family(kinds[-1])
            raw["process"] = {"kind": kinds[-1]}
        for key, value in pairs:
            _set_dotted(raw, key, value)
        return RunConfig.from_dict(raw)


def _plain(value: Any) -> Any:
    """Nested dicts/lists of YAML scalars: tuples become lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def keys(cls: type | None = None, kind: str | None = None) -> list[str]:
    """Every valid dotted key of a config dataclass (RunConfig by default); the process keys are those of
    family `kind` (default: the default family)."""
    return _dotted_keys(RunConfig if cls is None else cls, kind, lambda hint: True)


def mapping_keys(cls: type | None = None, kind: str | None = None) -> list[str]:
    """The dotted keys of the mapping fields (such as sample.options), under which any sub-key may be set."""
    return _dotted_keys(RunConfig if cls is None else cls, kind, lambda hint: typing.get_origin(hint) is dict)


def _dotted_keys(cls: type, kind: str | None, keep: Callable[[Any], bool]) -> list[str]:
    """The dotted keys of the leaf fields of `cls` (nested dataclasses walked, the process union as family `kind`'s
    config) whose type hint `keep` accepts."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind_cls = _variant(hints[f.name], kind)
        if dataclasses.is_dataclass(kind_cls):
            out += [f"{f.name}.{k}" for k in _dotted_keys(kind_cls, kind, keep)]
        elif keep(kind_cls):
            out.append(f.name)
    return out


def _variant(hint: Any, kind: str | None) -> Any:
    """The dataclass that parses a field of type `hint`: the family's config for the process union."""
    if hint is ProcessConfig:
        return family(kind).config if kind is not None else default_config().__class__
    return hint


def _foreign_knob(key: str, kind: str) -> ConfigError | None:
    """The error for a process key that is a knob of another family than `kind`, or None."""
    leaf = key.split(".", 1)[1] if key.startswith("process.") else key
    owners = [name for name, record in families().items()
              if name != kind and leaf in {f.name for f in dataclasses.fields(record.config)}]
    if not owners:
        return None
    families_ = f"{' and '.join(owners)} famil{'ies' if len(owners) > 1 else 'y'}"
    return ConfigError(f"process.{leaf} is a knob of the {families_}, but process.kind is {kind!r}; set "
                       f"process.kind={owners[0]} or leave the key out")


def _set_dotted(raw: dict[str, Any], key: str, value: str) -> None:
    """Set raw[a][b] = value for key "a.b", rejecting keys the schema (with raw's process kind) does not have."""
    kind = raw.get("process", {}).get("kind")
    valid = keys(kind=kind)
    parent = key.rsplit(".", 1)[0]
    if key not in valid and not (parent != key and parent in mapping_keys(kind=kind)):
        foreign = _foreign_knob(key, kind) if key.startswith("process.") else None
        raise foreign or unknown("config key", key, valid)
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if node is None or not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a mapping")
    node[leaf] = value


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from nested plain values, coercing and validating every field."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {raw!r}")
    if cls is ProcessConfig:
        kind = raw.get("kind", default_config().kind)
        coerce(kind, str, f"{prefix}kind")
        cls = family(kind).config
        for name in raw:
            foreign = None if name in keys(cls) else _foreign_knob(name, kind)
            if foreign is not None:
                raise foreign
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            raise unknown("config key", f"{prefix}{name}", [f"{prefix}{k}" for k in keys(cls, raw.get("kind"))])
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = from_dict(kind, value if value is not None else {}, f"{key}.")
        else:
            values[name] = coerce(value, kind, key)
            check(values[name], fields[name].metadata, key)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(value: Any, kind: Any, key: str) -> Any:
    """`value` (a YAML scalar/list or a command-line string) converted to the type `kind`.

    Handles bool, int, float, str, `X | None` ("none"/"null" → None), `tuple[T, ...]` (a list or a
    comma-separated string "1,2,2") and `dict[str, scalar]` (a mapping, or "key=value,key=value"; a string value
    is read as a YAML scalar, so "0.5" is a number and "nearest" a string).
    """
    origin = typing.get_origin(kind)
    if origin is dict:
        return _coerce_mapping(value, key)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return coerce(value, options[0], key)
    if origin is tuple:
        args = typing.get_args(kind)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list such as 1,2,2; got {value!r}")
        item = args[0] if args else str
        return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer; got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string; got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {kind!r}")


def _scalar(text: str) -> Any:
    """A command-line string read as a YAML scalar ("0.5" → 0.5, "true" → True), or kept as it is."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, str)) else text


def _coerce_mapping(value: Any, key: str) -> dict[str, Any]:
    """A mapping of names to scalars (bool, int, float, str) from YAML or from "a=1,b=x"."""
    if value is None:
        return {}
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"{key} must be a mapping such as eta=0.5,churn=10; got {value!r}")
        value = {name.strip(): text.strip() for name, _, text in pairs}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping of names to values; got {value!r}")
    out = {}
    for name, item in value.items():
        item = _scalar(item) if isinstance(item, str) else item
        if not isinstance(name, str) or not isinstance(item, (bool, int, float, str)):
            raise ConfigError(f"{key}.{name} must be a number, a string or true/false; got {item!r}")
        out[name] = item
    return out


def check_sampler_options(sampler: str, options: typing.Mapping[str, Any], where: str = "sample") -> dict[str, Any]:
    """The options of sampler `sampler` converted to the types of its signature; ConfigError in one line for an
    option it does not have (naming the closest and those it has) or a value of the wrong type."""
    from diffspace.process import get_sampler
    from diffspace.sampling import GRIDS, sampler_options

    fn = get_sampler(sampler)
    known = sampler_options(fn)
    hints = typing.get_type_hints(fn)
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name not in known:
            guess = closest(name, known)
            hint = f" (did you mean '{guess}'?)" if guess else ""
            listed = ", ".join(known) if known else "none"
            raise ConfigError(f"sampler '{sampler}' has no option '{name}'{hint}; its options: {listed}")
        if name == "grid":
            if not isinstance(value, str) or value not in GRIDS:
                raise ConfigError(f"{where}.grid must be one of {', '.join(GRIDS)}; got {value!r}")
            out[name] = value
            continue
        key = f"{where}.{name}" if name in GRID_KNOBS else f"{where}.options.{name}"  # where the config keeps it
        out[name] = coerce(value, _option_type(hints.get(name, str)), key)
    return out


def _option_type(hint: Any) -> Any:
    """The scalar type a sampler option's annotation takes (the first of bool, int, float, str in a union)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        scalars = [a for a in typing.get_args(hint) if a in (bool, int, float, str)]
        return scalars[0] if scalars else str
    return hint if hint in (bool, int, float, str) else str


def _preset_files() -> dict[str, Any]:
    """Preset name → its packaged YAML resource."""
    folder = resources.files("diffspace") / "presets"
    return {p.name[: -len(".yaml")]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def preset_names() -> list[str]:
    """The names of the packaged presets, sorted."""
    return sorted(_preset_files())


def load_preset(name: str) -> RunConfig:
    """The packaged preset `name` (keys it leaves out take their defaults)."""
    files = _preset_files()
    if name not in files:
        raise unknown("preset", name, files)
    raw = yaml.safe_load(files[name].read_text()) or {}
    try:
        return RunConfig.from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"preset {name}: {err}") from None


def list_presets() -> list[tuple[str, str]]:
    """(name, first line of description) for every packaged preset."""
    out = []
    for name in preset_names():
        text = load_preset(name).description.strip()
        out.append((name, text.splitlines()[0] if text else ""))
    return out


def validate_names(cfg: RunConfig) -> None:
    """Check the names that live in registries: the data set, and a sampler that fits the process family."""
    from diffspace.data import DATASETS
    from diffspace.process import check_sampler, samplers

    if cfg.data.name not in DATASETS:
        raise unknown("data set (data.name)", cfg.data.name, DATASETS)
    if cfg.sample.sampler not in samplers():
        raise unknown("sampler (sample.sampler)", cfg.sample.sampler, samplers())
    check_sampler(cfg.process.kind, cfg.sample.sampler)
    check_sampler_options(cfg.sample.sampler, cfg.sample.sampler_options())


def migrate(raw: Any) -> Any:
    """Nested plain values of any config version in the current layout (ConfigError for a newer version)."""
    if not isinstance(raw, dict):
        return raw
    version = raw.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"version must be a positive integer; got {version!r}")
    if version > CONFIG_VERSION:
        raise ConfigError(f"this config has version {version}, written by a newer diffspace (this one reads up to "
                          f"{CONFIG_VERSION}); upgrade diffspace to use it")
    if version == CONFIG_VERSION:
        return raw
    out = {**raw, "version": CONFIG_VERSION}
    process = raw.get("process")
    if isinstance(process, dict):
        kind = process.get("kind", default_config().kind)
        top = {k: v for k, v in process.items() if not isinstance(v, dict)}
        section = process.get(kind) if isinstance(process.get(kind), dict) else {}
        out["process"] = {"kind": kind, **family(str(kind)).migrate({k: v for k, v in top.items() if k != "kind"},
                                                                       section)}
    return out


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A config dataclass as {dotted key: value}."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def differences(a: RunConfig, b: RunConfig) -> list[str]:
    """The dotted keys whose values differ between two configs."""
    fa, fb = flatten(a), flatten(b)
    return [k for k in fa if fa[k] != fb[k]]
