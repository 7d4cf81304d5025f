"""A DDPM / DDPM++-style U-Net for images of any size: net(x_t, t, **cond) → (B, C_out, H, W)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import NetConfig
from .embeddings import ConditionEmbedding

#: Residual sums are scaled by 1/√2 so activations keep unit scale through deep stacks.
SKIP_SCALE: float = 1.0 / math.sqrt(2.0)

#: Channels per attention head (DDPM++ convention); at least one head.
HEAD_CHANNELS: int = 64


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """torch.channels_last when x (B, C, H, W) is stored channels last (and C > 1, so that the layouts
    differ), else torch.contiguous_format."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def group_norm(channels: int, max_groups: int = 32, min_group_size: int = 4) -> nn.GroupNorm:
    """GroupNorm whose group count is the largest divisor of `channels` that is at most
    min(max_groups, channels // min_group_size), so every group spans several channels.
    """
    limit = max(1, min(max_groups, channels // min_group_size))
    groups = max(g for g in range(1, limit + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Residual block with scale-shift conditioning: h = conv(SiLU(GN(x))),
    (a, b) = W·SiLU(e), y = (skip(x) + conv(drop(SiLU(GN(h)·(1 + a) + b)))) / √2.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the block to x (B, in_ch, H, W) with embedding emb (B, emb_dim)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return (self.skip(x) + h) * SKIP_SCALE


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions: y = (x + P·softmax(QKᵀ/√d)V) / √2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // HEAD_CHANNELS)
        if channels % self.heads:
            self.heads = 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply attention to x of shape (B, C, H, W)."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, H·W, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(out)) * SKIP_SCALE


class Stage(nn.Module):
    """A residual block followed, when `attention` is set, by a self-attention block."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = AttentionBlock(out_ch) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the residual block, then attention if present."""
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class Downsample(nn.Module):
    """Halve H and W with a 3×3 convolution of stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, H/2, W/2) for even H, W."""
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling u[…, 2i + a, 2j + b] = x[…, i, j] (a, b ∈ {0, 1}),
    then a 3×3 convolution.

    The copy is an expand and a reshape rather than F.interpolate: with torch 2.13, torch.compile's CPU
    backend (inductor, which lays convolutions out channels last) schedules the index-put backward of
    upsample_nearest2d after the kernels that read it, and every gradient upstream comes out wrong
    (tests/test_nets.py compares compiled and eager gradients). The values are the same.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, 2H, 2W), in x's memory format."""
        b, c, h, w = x.shape
        up = x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)
        return self.conv(up.contiguous(memory_format=memory_format(x)))


class UNet(nn.Module):
    """DDPM-style U-Net: εθ(x_t, t, cond) with residual blocks, attention and skip connections.

    Level ℓ (ℓ = 0 … L−1, L = len(channel_mult)) works at 1/2^ℓ of the input size with
    channels·channel_mult[ℓ] channels: num_res_blocks residual blocks on the way down,
    num_res_blocks + 1 on the way up (each reading one skip connection), self-attention
    after every block of a level where either side of the feature map (at the build size)
    is in attn_resolutions, and a middle block res → attention → res at the coarsest level.
    The time embedding (and each cond key's, summed) enters every residual block as a
    per-channel scale and shift after its second GroupNorm. The output convolution is
    zero-initialised, so a new net outputs 0.

    Any H×W is accepted: when H or W is not a multiple of 2^(L−1) the input is zero-padded
    at the bottom/right to the next multiple and the output is cropped back to H×W.

    Memory format: after `net.to(memory_format=torch.channels_last)` the input is converted to
    channels last on the way in, every feature map stays channels last, and the output is returned
    contiguous; the values are those of the contiguous net.
    """

    def __init__(
        self, cfg: NetConfig, in_channels: int, out_channels: int, size: tuple[int, int]
    ) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.multiple = 2 ** (len(cfg.channel_mult) - 1)
        ch = cfg.channels
        emb_dim = 4 * ch
        self.embed = ConditionEmbedding(ch, emb_dim, cfg.cond_keys)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        padded = [-(-s // self.multiple) * self.multiple for s in size]
        attn_levels = [
            any(s >> level in cfg.attn_resolutions for s in padded)
            for level in range(len(cfg.channel_mult))
        ]

        self.down = nn.ModuleList()
        skip_channels = [ch]
        cur = ch
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(Stage(cur, ch * mult, emb_dim, cfg.dropout, attn_levels[level]))
                cur = ch * mult
                skip_channels.append(cur)
            if level != last:
                self.down.append(Downsample(cur))
                skip_channels.append(cur)

        self.mid = nn.ModuleList(
            [
                Stage(cur, cur, emb_dim, cfg.dropout, attention=True),
                Stage(cur, cur, emb_dim, cfg.dropout, attention=False),
            ]
        )

        self.up = nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mult))):
            out = ch * cfg.channel_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                in_ch = cur + skip_channels.pop()
                self.up.append(Stage(in_ch, out, emb_dim, cfg.dropout, attn_levels[level]))
                cur = out
            if level != 0:
                self.up.append(Upsample(cur))

        self.norm_out = group_norm(cur)
        self.conv_out = nn.Conv2d(cur, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor | float, **cond: torch.Tensor | float
    ) -> torch.Tensor:
        """Return the network output (B, out_channels, H, W) for x_t (B, in_channels, H, W)."""
        if x_t.ndim != 4 or x_t.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects x_t of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x_t.shape)}"
            )
        b, _, height, width = x_t.shape
        emb = self.embed(t, b, x_t.device, cond)
        pad_h = -height % self.multiple
        pad_w = -width % self.multiple
        h = F.pad(x_t, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x_t

        h = self.conv_in(h.contiguous(memory_format=memory_format(self.conv_out.weight)))
        skips = [h]
        for module in self.down:
            h = module(h, emb) if isinstance(module, Stage) else module(h)
            skips.append(h)
        for module in self.mid:
            h = module(h, emb)
        for module in self.up:
            if isinstance(module, Stage):
                h = module(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = module(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return h[:, :, :height, :width].contiguous()
