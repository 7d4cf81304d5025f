"""Tests of the score networks: shapes, gradients, conditioning, sizes, config errors."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Iterator

import pytest
import torch
import yaml
from torch import nn

from diffspace.nets import MLP, NAMED_SIZES, NetConfig, UNet, build_net, sinusoidal_features
from diffspace.nets.unet import AttentionBlock

#: A small U-Net that exercises every component (3 levels, attention at 8, dropout) quickly.
SMALL_UNET = NetConfig(
    channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.1
)
SMALL_MLP = NetConfig(kind="mlp", hidden=32, depth=2)

#: The smallest nets that still hold every kind of layer (U-Net: down- and upsampling, attention, skip
#: concatenation; FNO: spectral layers keeping all modes), with their grid, for the torch.compile checks.
COMPILE_CASES: dict[str, tuple[NetConfig, int]] = {
    "unet": (NetConfig(channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)), 8),
    "fno": (NetConfig(kind="fno", modes=4, width=8, layers=2), 12),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run these tiny networks on one thread: on a shared 2-core machine, thread barriers
    of intra-op parallelism cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _head(net: nn.Module) -> nn.Module:
    """The zero-initialised output layer of a net."""
    return net.conv_out if isinstance(net, UNet) else net.out


def _perturb_head(net: nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised output layer random weights so gradients reach every layer."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in _head(net).parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("hw", [(8, 8), (28, 28), (32, 32), (15, 17), (5, 3)])
@pytest.mark.parametrize("channels", [(1, 1), (3, 5)])
def test_unet_output_shape(hw: tuple[int, int], channels: tuple[int, int]) -> None:
    torch.manual_seed(0)
    c_in, c_out = channels
    net = build_net(SMALL_UNET, c_in, c_out, hw)
    out = net(torch.randn(2, c_in, *hw), torch.rand(2))
    assert out.shape == (2, c_out, *hw)
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output convolution


@pytest.mark.parametrize("hw", [(8, 8), (28, 28), (15, 17), (1, 6)])
@pytest.mark.parametrize("channels", [(1, 1), (3, 5)])
def test_mlp_output_shape(hw: tuple[int, int], channels: tuple[int, int]) -> None:
    torch.manual_seed(0)
    c_in, c_out = channels
    net = build_net(SMALL_MLP, c_in, c_out, hw)
    out = net(torch.randn(3, c_in, *hw), torch.rand(3))
    assert out.shape == (3, c_out, *hw)
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output layer


def test_tiny_unet_on_digits_shape() -> None:
    net = build_net(NetConfig(size="tiny"), 1, 1, (8, 8))
    assert net(torch.randn(4, 1, 8, 8), 0.5).shape == (4, 1, 8, 8)


def test_unet_accepts_other_sizes_than_built_for() -> None:
    net = build_net(SMALL_UNET, 1, 1, (16, 16))
    assert net(torch.randn(1, 1, 12, 20), 0.1).shape == (1, 1, 12, 20)


@pytest.mark.parametrize("cfg", [SMALL_UNET, SMALL_MLP], ids=["unet", "mlp"])
def test_gradient_reaches_every_parameter(cfg: NetConfig) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(cfg, cond_keys=("softness",))
    net = build_net(cfg, 2, 3, (8, 8))
    _perturb_head(net)
    x, target = torch.randn(4, 2, 8, 8), torch.randn(4, 3, 8, 8)
    loss = (net(x, torch.rand(4), softness=torch.rand(4)) - target).pow(2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cfg", [SMALL_UNET, SMALL_MLP], ids=["unet", "mlp"])
def test_output_depends_on_time_and_cond(cfg: NetConfig) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(cfg, cond_keys=("softness", "resolution"))
    net = build_net(cfg, 1, 1, (8, 8)).eval()
    _perturb_head(net)
    x = torch.randn(2, 1, 8, 8)
    t = torch.full((2,), 0.3)
    c = {"softness": torch.full((2,), 0.5), "resolution": torch.full((2,), 0.25)}
    with torch.no_grad():
        base = net(x, t, **c)
        later = net(x, t + 1e-3, **c)
        softer = net(x, t, **{**c, "softness": c["softness"] + 1e-3})
        again = net(x, t, **c)
    assert torch.equal(base, again)
    scale = base.abs().mean()
    assert (later - base).abs().mean() > 1e-3 * scale
    assert (softer - base).abs().mean() > 1e-3 * scale


@pytest.mark.parametrize("cfg", [SMALL_UNET, SMALL_MLP], ids=["unet", "mlp"])
def test_time_broadcasts_from_scalar(cfg: NetConfig) -> None:
    torch.manual_seed(0)
    net = build_net(cfg, 1, 1, (8, 8)).eval()
    _perturb_head(net)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        ref = net(x, torch.full((3,), 0.7))
        for t in (0.7, torch.tensor(0.7), torch.tensor([0.7]), torch.full((3, 1), 0.7)):
            assert torch.equal(net(x, t), ref)
    with pytest.raises(ValueError, match="t must be a scalar or hold one value per sample"):
        net(x, torch.rand(2))


@pytest.mark.parametrize("cfg", [SMALL_UNET, SMALL_MLP], ids=["unet", "mlp"])
def test_cond_keys_missing_or_unexpected_raise(cfg: NetConfig) -> None:
    net = build_net(dataclasses.replace(cfg, cond_keys=("softness",)), 1, 1, (8, 8))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    assert net(x, t, softness=torch.rand(2)).shape == x.shape
    with pytest.raises(TypeError, match=r"missing \['softness'\]"):
        net(x, t)
    with pytest.raises(TypeError, match=r"unexpected \['resolution'\]"):
        net(x, t, softness=torch.rand(2), resolution=torch.rand(2))
    plain = build_net(cfg, 1, 1, (8, 8))
    with pytest.raises(TypeError, match=r"unexpected \['softness'\]"):
        plain(x, t, softness=torch.rand(2))


@pytest.mark.parametrize("cfg", [SMALL_UNET, SMALL_MLP], ids=["unet", "mlp"])
def test_samples_are_processed_independently(cfg: NetConfig) -> None:
    torch.manual_seed(0)
    net = build_net(cfg, 2, 2, (8, 8)).eval()
    _perturb_head(net)
    net.double()  # float64, so that only a real mixing of samples exceeds the tolerance
    x, t = torch.randn(4, 2, 8, 8, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    with torch.no_grad():
        whole = net(x, t)
        single = torch.cat([net(x[i : i + 1], t[i : i + 1]) for i in range(4)])
    assert whole.dtype == torch.float64
    torch.testing.assert_close(whole, single, rtol=1e-10, atol=1e-12)


def test_unet_padding_is_zero_padding_then_crop() -> None:
    torch.manual_seed(0)
    net = build_net(SMALL_UNET, 1, 1, (15, 17)).eval()
    _perturb_head(net)
    x, t = torch.randn(2, 1, 15, 17), torch.rand(2)
    padded = torch.zeros(2, 1, 16, 20)
    padded[:, :, :15, :17] = x
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), net(padded, t)[:, :, :15, :17])


def test_attention_block_matches_naive_attention() -> None:
    torch.manual_seed(0)
    block = AttentionBlock(128)  # two heads of 64 channels
    assert block.heads == 2
    x = torch.randn(2, 128, 4, 3)
    b, c, h, w = x.shape
    q, k, v = block.qkv(block.norm(x)).reshape(b, 3, 2, 64, h * w).unbind(1)  # (B, heads, d, N)
    weights = torch.softmax(torch.einsum("bhdn,bhdm->bhnm", q, k) / math.sqrt(64), dim=-1)
    attended = torch.einsum("bhnm,bhdm->bhdn", weights, v).reshape(b, c, h, w)
    expected = (x + block.proj(attended)) / math.sqrt(2.0)
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hw", [(16, 16), (15, 17)])
def test_channels_last_unet_matches_the_contiguous_one(hw: tuple[int, int]) -> None:
    """After net.to(memory_format=torch.channels_last) every convolution runs on channels-last maps (padding,
    attention reshapes and skip concatenations included) and output and gradients equal the contiguous net's."""
    torch.manual_seed(0)
    net = build_net(dataclasses.replace(SMALL_UNET, dropout=0.0), 3, 3, hw)
    _perturb_head(net)
    channels_last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    layouts = []
    for module in channels_last.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(
                lambda m, i, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
    x, t = torch.randn(2, 3, *hw), torch.rand(2)
    out, out_cl = net(x, t), channels_last(x, t)
    convolutions = sum(isinstance(m, nn.Conv2d) for m in channels_last.modules())
    assert out_cl.is_contiguous() and all(layouts) and len(layouts) == convolutions
    torch.testing.assert_close(out_cl, out, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    out_cl.square().sum().backward()
    for (name, p), p_cl in zip(net.named_parameters(), channels_last.parameters()):
        torch.testing.assert_close(p_cl.grad, p.grad, rtol=1e-4, atol=1e-5 * p.grad.abs().max(),
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("kind", [pytest.param("unet", marks=pytest.mark.slow), "fno"])
def test_torch_compile_matches_eager(kind: str) -> None:
    """torch.compile (inductor, C++ on CPU) gives the eager output and parameter gradients to 10⁻⁴ of each
    tensor's scale: about 10³ float32 ulps (ε = 1.2·10⁻⁷), room for the re-associated sums of fused kernels
    and nothing more (with F.interpolate in Upsample, inductor's U-Net gradients are off by O(1)). A cold
    compile takes about 25 s for the FNO and 60–90 s for the U-Net on 2 cores (hence its slow mark)."""
    torch.manual_seed(0)
    cfg, size = COMPILE_CASES[kind]
    net = build_net(cfg, 1, 1, (size, size))
    _perturb_head(net)
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 1, size, size, generator=gen), torch.rand(2, generator=gen)
    probe = torch.randn(2, 1, size, size, generator=gen)

    def run(model: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net.zero_grad()
        out = model(x, t)
        (out * probe).sum().backward()
        return out.detach(), {name: p.grad.clone() for name, p in net.named_parameters()}

    eager, eager_grads = run(net)
    try:
        compiled, compiled_grads = run(torch.compile(net))
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4 * eager.abs().max())
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-4 * grad.abs().max(),
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_unet_runs_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = build_net(SMALL_UNET, 1, 1, (8, 8))
    _perturb_head(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(2, 1, 8, 8), torch.rand(2))
    assert out.shape == (2, 1, 8, 8)
    assert torch.isfinite(out).all()


def test_sinusoidal_features_resolve_small_time_steps() -> None:
    s = torch.tensor([0.0, 0.5, 0.501, 1.0])
    f = sinusoidal_features(s, 64)
    assert f.shape == (4, 64)
    torch.testing.assert_close(f[0], torch.cat([torch.ones(32), torch.zeros(32)]))
    assert (f[1] - f[2]).norm() > 0.5  # Δt = 10⁻³ moves the features by O(1)
    assert sinusoidal_features(s, 7).shape == (4, 7)


def _documented_counts() -> dict[tuple[str, str], float]:
    """Parse the named-size table of NetConfig's docstring: (size, input) → parameters."""
    lines = [ln.strip() for ln in (NetConfig.__doc__ or "").splitlines()]
    header = next(ln for ln in lines if ln.startswith("| size"))
    inputs = [col.strip() for col in header.strip("|").split("|")][5:]
    counts = {}
    for ln in lines:
        cols = [col.strip() for col in ln.strip("|").split("|")]
        if ln.startswith("|") and cols[0] in NAMED_SIZES:
            for inp, figure in zip(inputs, cols[5:]):
                counts[(cols[0], inp)] = float(figure.rstrip("M")) * 1e6
    return counts


def test_named_size_parameter_counts_match_the_documentation() -> None:
    documented = _documented_counts()
    assert {size for size, _ in documented} == set(NAMED_SIZES)
    for (size, inp), figure in documented.items():
        c, h, w = (int(n) for n in re.split("×", inp))
        with torch.device("meta"):
            net = build_net(NetConfig(size=size), c, c, (h, w))
        count = sum(p.numel() for p in net.parameters())
        assert abs(count - figure) <= 0.01 * figure, (size, inp, count, figure)
    # The sizes span ≈ 0.5M to ≈ 60M; ddpmpp is the DDPM++ CIFAR-10 scale (≈ 56M).
    assert documented[("tiny", "1×8×8")] <= 0.5e6
    assert 0.95 * 56e6 <= documented[("ddpmpp", "3×32×32")] <= 60e6


def test_named_size_overrides_the_fields() -> None:
    cfg = NetConfig(size="ddpmpp", channels=8, dropout=0.1, cond_keys=("softness",))
    r = cfg.resolved()
    assert (r.size, r.channels, r.channel_mult, r.num_res_blocks, r.attn_resolutions) == (
        "", 128, (2, 2, 2), 4, (16,)
    )
    assert (r.dropout, r.cond_keys) == (0.1, ("softness",))


def test_config_round_trips_through_yaml() -> None:
    cfg = NetConfig(size="small", channel_mult=(1, 2), attn_resolutions=(), cond_keys=("a",))
    loaded = NetConfig(**yaml.safe_load(yaml.safe_dump(dataclasses.asdict(cfg))))
    assert loaded == cfg
    assert isinstance(loaded.channel_mult, tuple) and isinstance(loaded.cond_keys, tuple)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (NetConfig(kind="vit"), r"model.kind must be one of unet, mlp, fno; got 'vit'"),
        (NetConfig(kind="fno", modes=0), r"model.modes must be ≥ 1; got 0"),
        (NetConfig(size="huge"), r"model.size must be one of '' \(empty\), tiny"),
        (NetConfig(kind="mlp", size="tiny"), r"names a U-Net size but model.kind='mlp'"),
        (NetConfig(channel_mult=()), r"model.channel_mult must hold one positive multiplier"),
        (NetConfig(channel_mult=(1, 0)), r"model.channel_mult must be ≥ 1; got 0"),
        (NetConfig(channels=0), r"model.channels must be ≥ 1; got 0"),
        (NetConfig(num_res_blocks=0), r"model.num_res_blocks must be ≥ 1; got 0"),
        (NetConfig(attn_resolutions=(-4,)), r"model.attn_resolutions must be ≥ 1; got -4"),
        (NetConfig(dropout=1.0), r"model.dropout must be < 1.0; got 1.0"),
        (NetConfig(kind="mlp", hidden=0), r"model.hidden must be ≥ 1; got 0"),
        (NetConfig(kind="mlp", depth=0), r"model.depth must be ≥ 1; got 0"),
        (NetConfig(cond_keys=("t",)), r"model.cond_keys: 't' is not a usable keyword"),
        (NetConfig(cond_keys=("a-b",)), r"model.cond_keys: 'a-b' is not a usable keyword"),
        (NetConfig(cond_keys=("a", "a")), r"model.cond_keys has duplicates"),
    ],
)
def test_build_net_rejects_invalid_configs(cfg: NetConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_net(cfg, 1, 1, (8, 8))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 1, (8, 8)), "in_channels must be a positive int"),
        ((1, 0, (8, 8)), "out_channels must be a positive int"),
        ((1, 1, (8,)), r"size must be \(H, W\)"),
        ((1, 1, (8, 0)), r"size must be \(H, W\)"),
    ],
)
def test_build_net_rejects_invalid_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_net(NetConfig(), *args)


def test_wrong_input_shape_raises() -> None:
    unet = build_net(SMALL_UNET, 3, 3, (8, 8))
    with pytest.raises(ValueError, match=r"UNet expects x_t of shape \(B, 3, H, W\)"):
        unet(torch.randn(2, 1, 8, 8), 0.5)
    mlp = build_net(SMALL_MLP, 1, 1, (1, 6))
    assert isinstance(mlp, MLP)
    with pytest.raises(ValueError, match=r"MLP was built for inputs of shape \(B, 1, 1, 6\)"):
        mlp(torch.randn(2, 1, 1, 7), 0.5)
