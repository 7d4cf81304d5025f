"""The names of the data sets `load_dataset` knows, and the check that a name is one of them."""

from __future__ import annotations


from diffspace.validation import unknown

DATASETS: dict[str, str] = {
    "digits": "8×8 handwritten digits (scikit-learn's, UCI optdigits), 1797 images, 17 levels (shipped, no download)",
    "mnist": "MNIST handwritten digits, 28×28 grayscale, 60000 train / 10000 test",
    "fashion-mnist": "Fashion-MNIST clothing images, 28×28 grayscale, 60000 train / 10000 test",
    "binarized-mnist": "MNIST binarized stochastically, Bernoulli(pixel/255), seeded; 2 levels",
    "cifar10": "CIFAR-10 natural images, 32×32 RGB, 50000 train / 10000 test (python pickles)",
    "grf": "Gaussian random fields, spectrum λ_k = (τ² + |k|²)^(−s), generated at any resolution",
    "microstructure": "random crops of 8-bit grayscale material micrographs (PNG folder)",
    "darcy": "Darcy flow: permeability x (binary) or pressure y (continuous), 16×16 / 32×32",
    "folder": "any folder of images (png/jpg/jpeg/bmp/webp), grayscale or RGB",
}


def check_name(name: str) -> str:
    """Return `name` if it is a known data set; otherwise a ConfigError naming the closest and listing the names."""
    if name in DATASETS:
        return name
    raise unknown("data set", name, DATASETS)
