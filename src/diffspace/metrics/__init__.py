"""Sample metrics. Function-space metrics (multilevel family), computed at any one resolution:
radially averaged power spectra with the relative error per octave band, sliced Wasserstein
distance and the Riesz-kernel (energy) MMD. Image metrics: FID and KID on Inception-v3 features
(`fid`), a domain classifier for MNIST-like data giving a domain FID, precision/recall and class
balance (`classifier`, `domain`), reference statistics cached per data set (`reference`), and
bits/dim of a data set under a model (`bpd`)."""

from diffspace.metrics.bpd import BpdResult, elbo_bpd, ode_bpd
from diffspace.metrics.classifier import DomainClassifier, load_classifier
from diffspace.metrics.distances import riesz_mmd, sliced_wasserstein
from diffspace.metrics.domain import ClassBalance, PrecisionRecall, class_balance, precision_recall
from diffspace.metrics.fid import (
    FeatureStats, InceptionFeatures, InceptionMissing, KIDResult, fid_bootstrap_se, fid_from_stats, frechet_distance, kernel_distance,
    mmd2_unbiased,
)
from diffspace.metrics.function_space import FunctionMetrics, function_metrics
from diffspace.metrics.spectra import (
    SpectrumComparison, band_powers, compare_spectra, mode_power, octave_edges, radial_power_spectrum, wavenumbers,
)
from diffspace.metrics.reference import ClassifierFeatures, reference_stats

__all__ = [
    "BpdResult", "ClassBalance", "ClassifierFeatures", "DomainClassifier", "FeatureStats", "InceptionFeatures",
    "InceptionMissing", "KIDResult", "PrecisionRecall", "class_balance", "elbo_bpd", "fid_bootstrap_se", "fid_from_stats",
    "frechet_distance", "kernel_distance", "load_classifier", "mmd2_unbiased", "ode_bpd", "precision_recall",
    "reference_stats",
    "FunctionMetrics", "SpectrumComparison", "band_powers", "compare_spectra", "function_metrics", "mode_power",
    "octave_edges", "radial_power_spectrum", "riesz_mmd", "sliced_wasserstein", "wavenumbers",
]
