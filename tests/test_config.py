"""The run configuration: presets, overrides with type coercion, validation messages, YAML round trip."""

from __future__ import annotations

import dataclasses
import math

import pytest

from diffspace.build import build
from diffspace.config import (
    ConfigError, RunConfig, TrainConfig, coerce, differences, keys, list_presets, load_preset, preset_names,
    validate_names,
)


def test_every_preset_loads_validates_and_has_a_description() -> None:
    names = preset_names()
    assert {"quickstart", "mnist"} <= set(names)
    for name, line in list_presets():
        cfg = load_preset(name)
        validate_names(cfg)
        assert line and "\n" not in line, name
        assert cfg.description.startswith(line)


def test_quickstart_is_gaussian_diffusion_on_digits_in_the_pixel_basis() -> None:
    cfg = load_preset("quickstart")
    assert (cfg.data.name, cfg.model.kind, cfg.process.kind, cfg.process.basis, cfg.process.schedule) == (
        "digits", "unet", "gaussian", "pixel", "cosine")


def test_save_load_round_trips_exactly(tmp_path) -> None:
    cfg = load_preset("quickstart").with_overrides([
        "train.lr=1e-4", "train.grad_clip=0", "train.compile=true", "model.channel_mult=1,2,2",
        "model.attn_resolutions=", "description=a run: with 'quotes' and ü", "train.ema_power=0.6666666666666666",
    ])
    path = tmp_path / "config.yaml"
    cfg.save(path)
    again = RunConfig.load(path)
    assert again == cfg
    assert again.model.channel_mult == (1, 2, 2) and again.model.attn_resolutions == ()
    assert isinstance(again.train.grad_clip, float)


def test_partial_yaml_takes_defaults(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 7\n")
    cfg = RunConfig.load(path)
    assert cfg.train.steps == 7
    assert cfg.train.batch_size == TrainConfig().batch_size
    assert cfg.model == RunConfig().model


@pytest.mark.parametrize(("override", "key", "value"), [
    ("train.steps=200", "steps", 200),
    ("train.lr=3e-4", "lr", 3e-4),
    ("train.compile=on", "compile", True),
    ("train.tensorboard=False", "tensorboard", False),
    ("train.bf16=off", "bf16", "off"),
])
def test_overrides_coerce_to_the_field_type(override: str, key: str, value: object) -> None:
    got = getattr(RunConfig().with_overrides([override]).train, key)
    assert got == value and type(got) is type(value)


def test_tuple_and_optional_coercion() -> None:
    assert RunConfig().with_overrides(["model.channel_mult=1, 2,2"]).model.channel_mult == (1, 2, 2)
    assert coerce("none", int | None, "k") is None
    assert coerce("3", int | None, "k") == 3
    assert coerce([1, 2], tuple[float, ...], "k") == (1.0, 2.0)


@pytest.mark.parametrize(("override", "expected"), [
    ("train.step=3", "did you mean 'train.steps'"),
    ("model.chanels=3", "did you mean 'model.channels'"),
    ("trian.steps=3", "did you mean 'train.steps'"),
    ("train.steps=abc", "train.steps must be an integer"),
    ("train.steps=2.5", "train.steps must be an integer"),
    ("train.lr=fast", "train.lr must be a number"),
    ("train.compile=maybe", "train.compile must be true or false"),
    ("train.lr=-1", "train.lr must be > 0.0"),
    ("train.steps=0", "train.steps must be ≥ 1"),
    ("train.ema_decay=1", "train.ema_decay must be < 1.0"),
    ("train.bf16=of", "did you mean 'off'"),
    ("train.steps", "not of the form key=value"),
])
def test_bad_overrides_name_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        RunConfig().with_overrides([override])


@pytest.mark.parametrize(("override", "expected"), [
    ("model.channel_mult=1,x", r"model.channel_mult\[1\] must be an integer"),
    ("model.channels=0", r"model.channels must be ≥ 1; got 0"),
    ("process.basis=dtc", "did you mean 'dct'"),
])
def test_values_the_building_sections_reject_are_config_errors(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        build(RunConfig().with_overrides(["data.max_items=16", override]))


def test_unknown_yaml_key_and_preset(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  stpes: 7\n")
    with pytest.raises(ConfigError, match="train.stpes.*did you mean 'train.steps'"):
        RunConfig.load(path)
    path.write_text("train: 5\n")
    with pytest.raises(ConfigError, match="train must be a mapping"):
        RunConfig.load(path)
    with pytest.raises(ConfigError, match="did you mean 'quickstart'"):
        load_preset("quikstart")


def test_registry_names_are_checked_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean 'heun'"):
        validate_names(RunConfig().with_overrides(["sample.sampler=huen"]))
    with pytest.raises(ConfigError, match="did you mean 'mnist'"):
        validate_names(RunConfig().with_overrides(["data.name=mnsit"]))


def test_keys_and_differences() -> None:
    all_keys = keys()
    assert "train.steps" in all_keys and "description" in all_keys and "model.channels" in all_keys
    assert len(all_keys) == len(set(all_keys))
    a = RunConfig()
    b = dataclasses.replace(a, train=dataclasses.replace(a.train, steps=5), description="x")
    assert differences(a, b) == ["description", "train.steps"]


def test_sampler_knobs_round_trip_through_yaml_and_the_command_line(tmp_path) -> None:
    """sample.grid, sample.rho, sample.t_end and sample.options.<knob> parse from overrides (values typed as YAML
    scalars), validate against the sampler's signature, and reload to an equal config."""
    cfg = RunConfig().with_overrides(["sample.sampler=edm_heun", "sample.steps=30", "sample.grid=edm", "sample.rho=5",
                                      "sample.t_end=0.001", "sample.options.churn=10", "sample.options.s_noise=1.003"])
    assert cfg.sample.options == {"churn": 10, "s_noise": 1.003} and cfg.sample.rho == 5.0
    assert cfg.sample.sampler_options() == {"grid": "edm", "rho": 5.0, "t_end": 0.001, "churn": 10, "s_noise": 1.003}
    validate_names(cfg)
    cfg.save(tmp_path / "config.yaml")
    assert "churn: 10" in (tmp_path / "config.yaml").read_text()
    assert RunConfig.load(tmp_path / "config.yaml") == cfg
    assert RunConfig().sample.steps is None and RunConfig().sample.options == {}  # the sampler's own defaults
    from diffspace.config import check_sampler_options

    assert check_sampler_options("edm_heun", {"churn": "10", "s_tmax": "inf"}) == {"churn": 10.0, "s_tmax": math.inf}
    # another sampler on the command line starts from its own defaults: the run's knobs belong to its sampler
    assert cfg.sample.knobs_for("ddim", {"eta": "0.5"}) == {"eta": "0.5"}
    assert cfg.sample.knobs_for("edm_heun", {"rho": 3.0})["rho"] == 3.0


@pytest.mark.parametrize(("overrides", "message"), [
    (["sample.grid=edn"], "sample.grid must be one of uniform, edm, logsnr, windows; got 'edn' (did you mean 'edm'?)"),
    (["sample.rho=-1"], "sample.rho must be > 0.0; got -1.0"),
    (["sample.t_end=1"], "sample.t_end must be < 1.0; got 1.0"),
    (["sample.options.rho=3"], "sample.options.rho: set sample.rho instead"),
    (["sample.options=eta"], "sample.options must be a mapping such as eta=0.5,churn=10"),
    (["sample.sampler=ddim", "sample.options.churn=3"],
     "sampler 'ddim' has no option 'churn'; its options: grid, rho, t_end, denoise, eta"),
    (["sample.sampler=ddim", "sample.options.etaa=1"], "sampler 'ddim' has no option 'etaa' (did you mean 'eta'?)"),
    (["sample.sampler=ddim", "sample.options.eta=fast"], "sample.options.eta must be a number; got 'fast'"),
    (["sample.sampler=tau_leaping", "process.kind=blackout", "sample.rho=3"],
     "sampler 'tau_leaping' has no option 'rho'; its options: grid"),
])
def test_bad_sampler_knobs_are_one_clear_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_names(RunConfig().with_overrides(overrides))
    assert message in str(info.value) and "\n" not in str(info.value)
