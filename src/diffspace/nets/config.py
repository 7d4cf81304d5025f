"""The typed description of a score network: every architectural knob is one field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from diffspace.validation import ConfigError, check_fields

#: Names a conditioning key may not take: they are the network's positional arguments.
RESERVED_KEYS: tuple[str, ...] = ("x_t", "t")

#: Named U-Net sizes: the fields each one sets (see the table in NetConfig's docstring).
NAMED_SIZES: dict[str, dict[str, object]] = {
    "tiny": {
        "channels": 24,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attn_resolutions": (4,),
    },
    "small": {
        "channels": 64,
        "channel_mult": (1, 2, 2),
        "num_res_blocks": 2,
        "attn_resolutions": (14, 16),
    },
    "base": {
        "channels": 128,
        "channel_mult": (1, 2, 2, 2),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
    },
    "ddpmpp": {
        "channels": 128,
        "channel_mult": (2, 2, 2),
        "num_res_blocks": 4,
        "attn_resolutions": (16,),
    },
}

KINDS: tuple[str, ...] = ("unet", "mlp", "fno")


@dataclass
class NetConfig:
    """Which score network to build, and its knobs.

    kind             — "unet" (images, any H×W) | "mlp" (vectors or any fixed-size input,
                       flattened) | "fno" (Fourier neural operator: functions, any grid).
    size             — a named U-Net size that overrides channels, channel_mult, num_res_blocks
                       and attn_resolutions (dropout and cond_keys are kept); "" = use the
                       fields as given.
    channels         — base width c of the U-Net; level ℓ has c·channel_mult[ℓ] channels.
    channel_mult     — one multiplier per resolution level; the map is halved between levels.
    num_res_blocks   — residual blocks per level on the way down (one more on the way up).
    attn_resolutions — feature-map side lengths (of the build size, after padding to a
                       multiple of 2^(levels−1)) at which self-attention runs; the middle
                       block always has attention.
    dropout          — dropout probability inside residual blocks (U-Net only).
    hidden, depth    — MLP width and number of hidden layers.
    modes, width, layers — FNO: Fourier modes kept per axis (|k_y| < modes, 0 ≤ k_x < modes),
                       channels of the Fourier layers, number of Fourier layers.
    cond_keys        — extra scalar conditionings (e.g. "softness", "resolution") passed as
                       keywords at each call and embedded exactly like time.

    Named sizes (U-Net; parameter counts for in = out channels and no cond keys, checked by
    tests/test_nets.py):

    | size   | channels | channel_mult | blocks | attn     | 1×8×8  | 1×28×28 | 3×32×32 |
    | ------ | -------- | ------------ | ------ | -------- | ------ | ------- | ------- |
    | tiny   | 24       | (1, 2)       | 1      | (4,)     | 0.426M | 0.397M  | 0.398M  |
    | small  | 64       | (1, 2, 2)    | 2      | (14, 16) | 6.62M  | 6.95M   | 6.95M   |
    | base   | 128      | (1, 2, 2, 2) | 2      | (16,)    | 37.0M  | 38.3M   | 38.3M   |
    | ddpmpp | 128      | (2, 2, 2)    | 4      | (16,)    | 55.1M  | 55.1M   | 57.4M   |

    "tiny" is for 8×8 digits (attention at 4×4; about 0.15 s per training step of 128 images
    on one CPU core). "base" is the DDPM CIFAR-10 layout (35.7M there; the scale-shift
    conditioning adds 2.6M). "ddpmpp" has the DDPM++ CIFAR-10 widths, depth and attention,
    57.4M parameters at 32×32 against DDPM++'s ≈ 56M (scale-shift conditioning instead of a
    shift, strided / nearest+conv resampling instead of resampling residual blocks).
    Attention depends on the build size: at 28×28 "base" pads to 32×32 (attention at 16)
    while "small" attends at 14 and "ddpmpp" only in its middle block.

    Lists (e.g. from YAML) given for tuple fields are converted to tuples.
    """

    kind: str = field(default="unet", metadata={"choices": KINDS})
    size: str = field(default="", metadata={"choices": ("", *NAMED_SIZES)})
    channels: int = field(default=64, metadata={"min": 1})
    channel_mult: tuple[int, ...] = field(default=(1, 2, 2), metadata={"min": 1})
    num_res_blocks: int = field(default=2, metadata={"min": 1})
    attn_resolutions: tuple[int, ...] = field(default=(16,), metadata={"min": 1})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "lt": 1.0})
    hidden: int = field(default=256, metadata={"min": 1})
    depth: int = field(default=3, metadata={"min": 1})
    modes: int = field(default=12, metadata={"min": 1})
    width: int = field(default=32, metadata={"min": 1})
    layers: int = field(default=4, metadata={"min": 1})
    cond_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Convert list-valued tuple fields (as YAML loads them) to tuples."""
        self.channel_mult = tuple(self.channel_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        self.cond_keys = tuple(self.cond_keys)

    def resolved(self) -> NetConfig:
        """Return a copy with the named size's fields filled in and size = ""; validate it."""
        self.validate()
        if not self.size:
            return dataclasses.replace(self)
        fields = NAMED_SIZES[self.size]
        return dataclasses.replace(self, size="", **fields)  # type: ignore[arg-type]

    def validate(self) -> None:
        """ConfigError naming the first invalid field and how to fix it: the field rules
        (`diffspace.validation.check_fields`), then the rules between fields."""
        check_fields(self, "model.")
        if self.size and self.kind != "unet":
            raise ConfigError(f"model.size={self.size!r} names a U-Net size but model.kind={self.kind!r}; set "
                              "model.size='' and choose hidden and depth directly")
        if not self.channel_mult:
            raise ConfigError("model.channel_mult must hold one positive multiplier per resolution level, e.g. 1,2,2")
        for key in self.cond_keys:
            if not key.isidentifier() or key in RESERVED_KEYS:
                raise ConfigError(f"model.cond_keys: {key!r} is not a usable keyword name; use Python identifiers "
                                  f"other than {RESERVED_KEYS}, e.g. 'softness', 'resolution'")
        if len(set(self.cond_keys)) != len(self.cond_keys):
            raise ConfigError(f"model.cond_keys has duplicates: {self.cond_keys!r}")
