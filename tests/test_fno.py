"""The Fourier neural operator: one function at every resolution, spectral convolution maths, conditioning."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from diffspace.nets import FNO, NetConfig, SpectralConv2d, build_net
from diffspace.nets.fno import kept_modes, linear_per_pixel
from diffspace.resolution import spectral_resize

SMALL_FNO = NetConfig(kind="fno", modes=6, width=12, layers=3)

#: Written by the FNO of commit dcacd4d (1×1 convolutions, modes gathered by index): its state dict
#: (modes 4, width 8, 2 layers, cond key "resolution", 2 → 3 channels, random output layer) and its
#: outputs on fixed inputs at 12×10 and 5×6 (below 2·modes − 1 = 7, so modes are dropped there).
FNO_V1 = Path(__file__).parent / "fixtures" / "fno-v1.pt"


def _fno(cfg: NetConfig = SMALL_FNO, channels: int = 1, seed: int = 0) -> FNO:
    """A float64 FNO with a random (not zero) output layer, in eval mode."""
    torch.manual_seed(seed)
    net = build_net(cfg, channels, channels, (16, 16)).double().eval()
    with torch.no_grad():
        net.out.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(seed))
    return net


def _band_limited(batch: int, size: int, band: int, seed: int) -> torch.Tensor:
    """Random point values on a size×size grid of functions with frequencies |k_y|, |k_x| < band/2."""
    x = torch.randn(batch, 1, band, band, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    coarse = spectral_resize(x, (band - 1, band - 1))  # odd grid: no Nyquist mode
    return spectral_resize(coarse, (size, size))


def test_output_is_the_same_function_at_n_and_2n() -> None:
    """For a band-limited input, FNO(x at 2N) sampled on the N grid equals FNO(x at N) up to the aliasing of the
    nonlinearities, which shrinks as the grid is refined; a 3×3 convolution (a pixel-scale operator) does not
    have this property, so the check has power."""
    net = _fno()
    t = torch.tensor([0.2, 0.9], dtype=torch.float64)
    x = {n: _band_limited(2, n, 8, seed=1) for n in (16, 32, 64)}
    with torch.no_grad():
        y = {n: net(x[n], t) for n in x}
    scale = y[16].abs().max()
    coarse_gap = (y[32][..., ::2, ::2] - y[16]).abs().max()
    fine_gap = (y[64][..., ::2, ::2] - y[32]).abs().max()
    assert coarse_gap < 1e-3 * scale  # interpolation (aliasing) error of the hidden features
    assert fine_gap < coarse_gap / 10  # spectral convergence as N doubles
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular").double()
    with torch.no_grad():
        conv_gap = (conv(x[32])[..., ::2, ::2] - conv(x[16])).abs().max()
    assert conv_gap > 100 * coarse_gap


def test_spectral_conv_multiplies_each_kept_mode_by_its_weight() -> None:
    """K cos(φ_k) = Re(R_k e^{iφ_k}) for kept modes (k_x > 0; at k_x = 0 the ±k_y weights average), 0 for dropped."""
    torch.manual_seed(0)
    conv = SpectralConv2d(1, 1, modes=3).double()
    n = 12
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64) / n, torch.arange(n, dtype=torch.float64) / n,
                          indexing="ij")
    weights = torch.view_as_complex(conv.weight.detach())[:, :, 0, 0]
    row = {0: 0, 1: 1, 2: 2, -2: 3, -1: 4}  # weight rows hold k_y = 0, 1, 2, −2, −1
    with torch.no_grad():
        for ky, kx in [(1, 2), (-2, 1), (2, 0)]:
            phase = torch.exp(2j * torch.pi * (ky * y + kx * x))
            out = conv(phase.real[None, None])[0, 0]
            if kx > 0:
                expected = (weights[row[ky], kx] * phase).real
            else:
                expected = (weights[row[ky], 0] * phase + weights[row[-ky], 0] * phase.conj()).real / 2
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
        dropped = torch.cos(2 * torch.pi * 3 * y)[None, None]  # |k_y| = 3 ≥ modes
        assert conv(dropped).abs().max() < 1e-12


def test_linear_per_pixel_is_the_linear_layer_on_every_pixel() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 5).double()
    v = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    expected = layer(v.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(linear_per_pixel(layer, v), expected, rtol=1e-12, atol=1e-12)


def test_kept_modes_drop_what_the_grid_cannot_resolve() -> None:
    """Rows kept: [0, m′) and [size − m′ + 1, size), i.e. 0, ±1, …, ±(m′ − 1)."""
    assert kept_modes(16, 6) == 6  # rows 0…5 and 11…15
    assert kept_modes(8, 6) == 4  # rows 0…3 and 5…7: ±4 is the Nyquist alias, dropped
    assert kept_modes(7, 6) == 4  # rows 0…3 and 4…6
    assert kept_modes(1, 6) == 1  # the mean only


@pytest.mark.parametrize(("hw", "modes"), [((12, 10), 4), ((6, 5), 4), ((9, 8), 3), ((1, 3), 2)])
def test_spectral_conv_gradients_are_exact(hw: tuple[int, int], modes: int) -> None:
    """The hand-written backward (adjoint FFTs, ∂L/∂R with the Hermitian factor 2 at k_x > 0) against finite
    differences in float64, on grids that keep every mode and on grids too coarse for some."""
    torch.manual_seed(0)
    conv = SpectralConv2d(2, 3, modes).double()
    v = torch.randn(2, 2, *hw, dtype=torch.float64, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, w: torch.func.functional_call(conv, {"weight": w}, (v,)), (v, weight))
    assert torch.autograd.gradcheck(lambda w: torch.func.functional_call(conv, {"weight": w}, (v.detach(),)),
                                    (weight,))


def test_spectral_conv_transforms_in_float32_under_bf16_autocast() -> None:
    """Under autocast the FFTs and the mode mixing run in float32 on the bf16 input; only the result is bf16."""
    torch.manual_seed(0)
    conv = SpectralConv2d(4, 4, modes=3)
    v = torch.randn(2, 4, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(v)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, conv(v.float()).bfloat16())


def test_runs_below_twice_the_modes_as_the_restricted_operator() -> None:
    """On a grid too coarse for every mode the FNO still runs; for inputs the grid resolves it agrees with
    the fine-grid output up to the same aliasing error."""
    net = _fno(dataclasses.replace(SMALL_FNO, modes=8))
    t = torch.tensor([0.5], dtype=torch.float64)
    x12, x24 = _band_limited(1, 12, 6, seed=2), _band_limited(1, 24, 6, seed=2)
    with torch.no_grad():
        y12, y24 = net(x12, t), net(x24, t)
    assert y12.shape == (1, 1, 12, 12)
    assert (y24[..., ::2, ::2] - y12).abs().max() < 1e-2 * y12.abs().max()


def test_new_net_outputs_zero_and_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL_FNO, cond_keys=("resolution",))
    net = build_net(cfg, 2, 3, (16, 16))
    x = torch.randn(4, 2, 16, 16)
    assert torch.equal(net(x, torch.rand(4), resolution=torch.rand(4)), torch.zeros(4, 3, 16, 16))
    with torch.no_grad():
        net.out.weight.normal_(0.0, 0.1)
    loss = (net(x, torch.rand(4), resolution=torch.rand(4)) - torch.randn(4, 3, 16, 16)).pow(2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_output_depends_on_time_and_cond_and_samples_are_independent() -> None:
    net = _fno(dataclasses.replace(SMALL_FNO, cond_keys=("resolution",)), channels=2)
    x = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    t, res = torch.full((3,), 0.3, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    with torch.no_grad():
        base = net(x, t, resolution=res)
        assert (net(x, t + 1e-3, resolution=res) - base).abs().mean() > 1e-4 * base.abs().mean()
        assert (net(x, t, resolution=res + 1e-3) - base).abs().mean() > 1e-4 * base.abs().mean()
        single = torch.cat([net(x[i : i + 1], t[i : i + 1], resolution=res[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(base, single, rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match=r"missing \['resolution'\]"):
        net(x, t)


def test_runs_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = build_net(SMALL_FNO, 1, 1, (16, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(2, 1, 16, 16), torch.rand(2))
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out.float()).all()


def test_config_fields_round_trip_and_are_validated() -> None:
    cfg = NetConfig(kind="fno", modes=14, width=32, layers=4, cond_keys=("a",))
    assert NetConfig(**yaml.safe_load(yaml.safe_dump(dataclasses.asdict(cfg)))) == cfg
    for field in ("modes", "width", "layers"):
        with pytest.raises(ValueError, match=f"model.{field} must be ≥ 1"):
            build_net(dataclasses.replace(cfg, **{field: 0}), 1, 1, (16, 16))
    with pytest.raises(ValueError, match=r"FNO expects x_t of shape \(B, 1, H, W\)"):
        build_net(cfg, 1, 1, (16, 16))(torch.randn(2, 3, 16, 16), 0.5)


def test_parameter_count_of_the_paper_size() -> None:
    """modes 14, width 32, 4 layers: 4 · 27·14·32·32·2 spectral weights dominate (3.10M)."""
    net = build_net(NetConfig(kind="fno", modes=14, width=32, layers=4), 1, 1, (32, 32))
    spectral = sum(p.numel() for name, p in net.named_parameters() if "spectral" in name)
    assert spectral == 4 * 27 * 14 * 32 * 32 * 2


def test_loads_checkpoints_of_the_convolution_fno() -> None:
    """A state dict of the FNO with 1×1 convolutions ((out, in, 1, 1) weights) loads into the nn.Linear FNO,
    directly and under a parent module's prefix (as a run's checkpoint holds it), and reproduces its outputs."""
    record = torch.load(FNO_V1, weights_only=True)
    assert record["state_dict"]["lift.weight"].shape == (8, 6, 1, 1)
    cfg = NetConfig(kind="fno", **record["config"])
    net = build_net(cfg, *record["channels"], (12, 10)).eval()
    net.load_state_dict(record["state_dict"])
    parent = torch.nn.ModuleDict({"net": build_net(cfg, *record["channels"], (12, 10))}).eval()
    parent.load_state_dict({f"net.{k}": v for k, v in record["state_dict"].items()})
    ema = copy.deepcopy(build_net(cfg, *record["channels"], (12, 10))).eval()  # the EMA copy keeps the hook
    ema.load_state_dict(record["state_dict"])
    with torch.no_grad():
        for case in record["cases"]:
            for model in (net, parent["net"], ema):
                out = model(case["x"], case["t"], resolution=case["resolution"])
                torch.testing.assert_close(out, case["y"], rtol=1e-5, atol=1e-5)
    assert torch.equal(net.lift.weight, record["state_dict"]["lift.weight"][:, :, 0, 0])  # (out, in) now
