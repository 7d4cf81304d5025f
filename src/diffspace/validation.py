"""One way to refuse a bad value: `ConfigError`, one "did you mean" helper, one set of field rules.

A dataclass field declares its valid values in `dataclasses.field(metadata=...)` with any of
  "choices": a tuple of allowed values, "min"/"max": inclusive bounds, "gt"/"lt": exclusive bounds;
`check_fields` applies them to every field of a config object (tuples element by element) and a
config class may add cross-field rules in `__post_init__` (raising ValueError). Every config
section, data set name, preset, sampler and metric is refused through `unknown` or `check`, so
every invalid value ends in one ConfigError line (exit status 2 on the command line).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration or usage a run cannot take: unknown key or name, wrong type, invalid value."""


def closest(name: str, options: Iterable[str]) -> str | None:
    """The option most similar to `name` (difflib ratio ≥ 0.5), else one with the same last dotted part, else None."""
    options = list(options)
    matches = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if matches:
        return matches[0]
    tail = name.rsplit(".", 1)[-1]
    same_tail = [o for o in options if o.rsplit(".", 1)[-1] == tail]
    return same_tail[0] if same_tail else None


def unknown(what: str, name: str, options: Iterable[str]) -> ConfigError:
    """A ConfigError for an unknown `name`, suggesting the closest of `options` (all listed when ≤ 12)."""
    options = sorted(options)
    guess = closest(name, options)
    message = f"unknown {what} '{name}'"
    if guess:
        message += f" (did you mean '{guess}'?)"
    if len(options) <= 12:
        message += f"; valid: {', '.join(options)}"
    return ConfigError(message)


_BOUNDS = {"min": ("≥", lambda v, b: v >= b), "max": ("≤", lambda v, b: v <= b),
           "gt": (">", lambda v, b: v > b), "lt": ("<", lambda v, b: v < b)}


def check(value: Any, rules: Mapping[str, Any], key: str) -> None:
    """ConfigError if `value` (or an element of a tuple value) breaks a field's rules (choices, min, max, gt, lt)."""
    if value is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        if "choices" in rules and v not in rules["choices"]:
            choices = [str(c) if c != "" else "'' (empty)" for c in rules["choices"]]
            guess = closest(str(v), choices)
            hint = f" (did you mean '{guess}'?)" if guess else ""
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {v!r}{hint}")
        for name, (sign, ok) in _BOUNDS.items():
            if name in rules and not ok(v, rules[name]):
                raise ConfigError(f"{key} must be {sign} {rules[name]}; got {v!r}")


def _type_ok(value: Any, kind: Any) -> bool:
    """Whether `value` has the annotated type: bool, int (not bool), float (int allowed), str, X | None,
    tuple[T, ...], dict[str, scalar]; other annotations are not checked."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, option) for option in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if origin is tuple:
        args = typing.get_args(kind)
        return isinstance(value, tuple) and all(_type_ok(v, args[0]) for v in value) if args else isinstance(value, tuple)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (bool, int, float, str))
                                               for k, v in value.items())
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True


def check_fields(config: Any, prefix: str = "") -> None:
    """Apply every field's type and metadata rules of a config dataclass (and of nested ones); keys named
    `prefix` + field."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_fields(value, f"{key}.")
            continue
        if not _type_ok(value, hints[f.name]):
            raise ConfigError(f"{key} must be of type {getattr(hints[f.name], '__name__', hints[f.name])}; got {value!r}")
        check(value, f.metadata, key)
