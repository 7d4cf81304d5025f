"""Bases: exact inverse, Parseval, whiteness, labels as documented."""

from __future__ import annotations

import math

import pytest
import torch

from diffspace.families.gaussian.oracle import basis_matrix
from diffspace.spaces import DCTBasis, FourierBasis, HaarBasis, PCABasis, PixelBasis, column_labels, row_labels

SIZES = [(8, 8), (7, 9), (16, 12), (6, 10), (5, 4)]


def make_basis(name: str, shape=(2, 6, 10)):
    if name == "pca":
        data = torch.randn(400, *shape, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.2, 2, shape[-1])
        return PCABasis.fit(data)
    return {"pixel": PixelBasis, "dct": DCTBasis, "fourier": FourierBasis, "haar": HaarBasis}[name]()


@pytest.mark.parametrize("name", ["pixel", "dct", "fourier", "haar"])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_parseval(name: str, size: tuple[int, int]) -> None:
    basis = make_basis(name)
    if name == "haar" and basis.num_levels(*size) == 0:
        assert torch.equal(basis.encode(torch.ones(1, 1, *size)), torch.ones(1, 1, *size))
        return
    g = torch.Generator().manual_seed(1)
    x64 = torch.randn(3, 2, *size, generator=g, dtype=torch.float64)
    c64 = basis.encode(x64)
    assert c64.shape == x64.shape and c64.dtype == torch.float64
    assert (basis.decode(c64) - x64).abs().max() < 1e-10
    assert torch.allclose(c64.flatten(1).norm(dim=1), x64.flatten(1).norm(dim=1), rtol=1e-12)
    x32 = x64.float()
    assert (basis.decode(basis.encode(x32)) - x32).abs().max() < 1e-5


def test_pca_round_trip_parseval_and_save_load(tmp_path) -> None:
    basis = make_basis("pca")
    x = torch.randn(5, 2, 6, 10, dtype=torch.float64)
    assert (basis.decode(basis.encode(x)) - x).abs().max() < 1e-10
    assert torch.allclose(basis.encode(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-10)
    assert (basis.decode(basis.encode(x.float())) - x.float()).abs().max() < 1e-5
    basis.save(tmp_path / "pca.pt")
    loaded = PCABasis.load(tmp_path / "pca.pt")
    assert torch.equal(loaded.components, basis.components) and torch.equal(loaded.mean, basis.mean)
    assert torch.equal(loaded.encode(x), basis.encode(x))


@pytest.mark.parametrize("name", ["pixel", "dct", "fourier", "haar", "pca"])
def test_white_noise_stays_white(name: str) -> None:
    """Cov(U ξ) = I: every entry within 5 standard errors (SE √(2/n) on the diagonal, √(1/n) off it)."""
    shape = (1, 4, 6)
    basis = make_basis(name, shape)
    n = 20000
    noise = torch.randn(n, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    coeffs = basis.encode(noise).flatten(1)
    cov = coeffs.T @ coeffs / n
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    standard_error = torch.sqrt((1 + eye) / n)
    assert ((cov - eye).abs() / standard_error).max() < 5


def test_bases_are_orthogonal_matrices() -> None:
    for name in ["dct", "fourier", "haar"]:
        u = basis_matrix(make_basis(name), (1, 4, 6))
        assert torch.allclose(u @ u.T, torch.eye(24, dtype=torch.float64), atol=1e-12)


def test_fourier_basis_functions_are_scaled_cosines_and_sines() -> None:
    """Decoding a unit coefficient at a conjugate pair gives √(2/HW) cos / ∓sin of 2π k·x."""
    h, w = 6, 8
    y, x = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    basis = FourierBasis()
    coeff = torch.zeros(1, 1, h, w, dtype=torch.float64)
    coeff[..., 1, 2] = 1.0  # k = (1, 2) is canonical; its partner sits at (5, 6)
    phase = 2 * math.pi * (1 * y + 2 * x).double()
    assert torch.allclose(basis.decode(coeff)[0, 0], math.sqrt(2 / (h * w)) * torch.cos(phase), atol=1e-12)
    coeff.zero_()
    coeff[..., 5, 6] = 1.0
    assert torch.allclose(basis.decode(coeff)[0, 0], -math.sqrt(2 / (h * w)) * torch.sin(phase), atol=1e-12)
    coeff.zero_()
    coeff[..., 3, 4] = 1.0  # Nyquist in both directions: a self-conjugate real mode
    assert torch.allclose(basis.decode(coeff)[0, 0], torch.cos(math.pi * (6 * y + 8 * x)).double() / math.sqrt(h * w), atol=1e-12)


def test_labels_as_documented() -> None:
    shape = (2, 6, 8)
    fourier = FourierBasis().labels(shape)
    assert fourier[0, 0, 0] == 0 and fourier[0, 0, 1] == 1 and fourier[0, 0, 7] == 1 and fourier[0, 5, 0] == 1
    assert fourier[1, 3, 4] == 5.0  # |(3, 4)| = 5
    dct = DCTBasis().labels(shape)
    assert dct[0, 3, 4] == 2.5 and dct[0, 0, 0] == 0
    haar = HaarBasis().labels((1, 8, 8))[0]
    assert haar[0, 0] == 0 and haar[0, 1] == 1 and haar[1, 1] == 1 and haar[2, 3] == 2 and haar[7, 7] == 3
    assert haar[0, 4] == 3 and haar[0, 2] == 2
    assert torch.equal(PixelBasis().labels(shape), column_labels(shape))
    assert torch.equal(column_labels(shape)[1, 4], torch.arange(8, dtype=torch.float64))
    assert torch.equal(row_labels(shape)[0, :, 3], torch.arange(6, dtype=torch.float64))
    pca = make_basis("pca", (1, 3, 4))
    assert torch.equal(pca.labels((1, 3, 4)).flatten(), torch.arange(12, dtype=torch.float64))


def test_pca_orders_components_by_variance() -> None:
    g = torch.Generator().manual_seed(3)
    data = torch.randn(5000, 1, 2, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 0.1, 1.0])
    basis = PCABasis.fit(data)
    variances = basis.encode(data - basis.mean).flatten(1).var(0)
    assert torch.all(variances[:-1] >= variances[1:] - 1e-9)
    assert torch.allclose(variances, basis.variances, rtol=1e-10)


def test_haar_needs_divisible_sizes() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        HaarBasis(levels=3).encode(torch.zeros(1, 1, 12, 12))


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        DCTBasis().encode(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="fitted on shape"):
        make_basis("pca", (1, 3, 4)).encode(torch.zeros(2, 1, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", ["dct", "fourier", "haar", "pca"])
def test_bases_on_cuda(name: str) -> None:
    basis = make_basis(name, (1, 4, 6)).cuda()
    x = torch.randn(3, 1, 4, 6, device="cuda")
    assert (basis.decode(basis.encode(x)) - x).abs().max() < 1e-5
