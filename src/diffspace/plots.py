"""Figures: training curves from `metrics.csv`, power spectra of samples against data, the GUD softness sweep.

matplotlib is optional (`pip install "diffspace[plot]"`) and imported only when a figure is drawn, through
`matplotlib.figure.Figure` (no pyplot, no global backend state); without it every function that draws raises
`PlotMissing`, which the command line reports in one line (exit status 2). Nothing here imports torch: the
figure functions take plain sequences of numbers, so `diffspace plot` starts in a fraction of a second.

Each figure is built by a `*_figure` function that returns the `Figure` (tests read its lines back) and
written by `save_figure`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: What to install for plots; every "matplotlib is missing" message says it.
PLOT_HINT = 'pip install "diffspace[plot]"'
#: The curves of `diffspace plot`: (metrics.csv column, axis label, logarithmic y when all values are > 0).
METRIC_CURVES: tuple[tuple[str, str, bool], ...] = (
    ("loss", "training loss (interval mean)", True),
    ("lr", "learning rate", False),
    ("grad_norm", "gradient norm before clipping", True),
)
#: The figure `diffspace plot` writes in the run directory unless --out says otherwise.
METRICS_FIGURE = "metrics.png"
#: File types `save_figure` writes (matplotlib's Agg, SVG and PDF canvases).
FORMATS = (".png", ".svg", ".pdf")


class PlotMissing(RuntimeError):
    """A figure was asked for and matplotlib is not installed."""


class PlotError(ValueError):
    """A figure cannot be drawn from what it was given (no metrics file, no rows, an unknown file type)."""


def figure_class() -> Any:
    """matplotlib's `Figure` class, imported now; PlotMissing (saying how to install it) when it is absent."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotMissing(f"plots need matplotlib: {PLOT_HINT}") from None
    return Figure


def read_metrics_columns(run_dir: str | Path) -> dict[str, list[float]]:
    """The columns of a run's metrics.csv as lists of floats (step included), read without torch; PlotError
    when the file is missing or holds no rows yet."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise PlotError(f"{run_dir} has no metrics.csv: is it a run directory (diffspace train --run-dir)?")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise PlotError(f"{path} holds no rows yet: train at least train.log_every steps")
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def metrics_figure(columns: Mapping[str, Sequence[float]], title: str = "") -> Any:
    """Training loss, learning rate and gradient norm against the optimizer step, one panel each (the columns
    of `METRIC_CURVES` that are present), one point per metrics.csv row."""
    Figure = figure_class()
    curves = [(key, label, log) for key, label, log in METRIC_CURVES if key in columns]
    if "step" not in columns or not curves:
        raise PlotError("metrics need a 'step' column and at least one of " + ", ".join(k for k, _, _ in METRIC_CURVES))
    fig = Figure(figsize=(7.0, 2.2 * len(curves)), layout="constrained")
    axes = fig.subplots(len(curves), 1, sharex=True, squeeze=False)[:, 0]
    steps = list(columns["step"])
    for ax, (key, label, log) in zip(axes, curves):
        values = list(columns[key])
        ax.plot(steps, values, marker="." if len(values) <= 60 else None, linewidth=1.2, label=key)
        finite = [v for v in values if math.isfinite(v)]
        if log and finite and min(finite) > 0:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    if title:
        fig.suptitle(title)
    return fig


def spectrum_figure(shells: Sequence[float], sample_power: Sequence[float], data_power: Sequence[float],
                    band_edges: Sequence[float] | None = None, band_error: Sequence[float] | None = None,
                    title: str = "") -> Any:
    """Radially averaged power spectra S_j of samples and data against the shell |k| ≈ j (log-log, the mean
    mode j = 0 left out), and, when given, the relative error of each band's power (one bar per band)."""
    Figure = figure_class()
    bands = band_edges is not None and band_error is not None
    fig = Figure(figsize=(9.0 if bands else 5.5, 3.6), layout="constrained")
    axes = fig.subplots(1, 2 if bands else 1, squeeze=False)[0]
    keep = [i for i, j in enumerate(shells) if j > 0]
    ax = axes[0]
    ax.loglog([shells[i] for i in keep], [data_power[i] for i in keep], "o-", color="black", markersize=3,
              linewidth=1.2, label="data")
    ax.loglog([shells[i] for i in keep], [sample_power[i] for i in keep], "s--", color="tab:red", markersize=3,
              linewidth=1.2, label="samples")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("wavenumber |k|")
    ax.set_ylabel("radial power spectrum  mean |c_k|²")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if bands:
        names = [f"[{lo:g}, {hi:g})" for lo, hi in zip(band_edges[:-1], band_edges[1:])]
        axes[1].bar(range(len(band_error)), list(band_error), color="tab:red", alpha=0.7)
        positive = [e for e in band_error if e > 0]
        if positive and max(positive) > 100 * min(positive):
            axes[1].set_yscale("log")
        axes[1].set_xticks(range(len(names)), names, rotation=30)
        axes[1].set_xlabel("band of |k|")
        axes[1].set_ylabel("relative error of the band's power")
        axes[1].grid(True, axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


#: The panels of the softness figure: (row key in the gud_softness record, axis label).
SOFTNESS_PANELS: tuple[tuple[str, str], ...] = (
    ("domain_fid", "domain FID ↓"), ("precision", "precision ↑"), ("recall", "recall ↑"),
    ("class_balance_tv", "class TV ↓"), ("bpd", "bits/dim ↓"), ("fid", "FID ↓"),
)


def softness_figure(record: Mapping[str, Any]) -> Any:
    """The GUD hierarchy-strength sweep of `benchmarks/gud_softness.py`: each metric of its record's rows against
    a = 1/softness, one line per prior (standard errors as error bars where the record has them)."""
    Figure = figure_class()
    rows = list(record.get("rows", []))
    if not rows:
        raise PlotError("the softness record has no rows")
    panels = [(key, label) for key, label in SOFTNESS_PANELS if all(r.get(key) is not None for r in rows)]
    columns = min(3, len(panels))
    lines = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(3.4 * columns, 2.8 * lines), layout="constrained")
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    priors = list(dict.fromkeys(r["prior"] for r in rows))
    for ax, (key, label) in zip(axes, panels):
        for prior in priors:
            mine = sorted((r for r in rows if r["prior"] == prior), key=lambda r: r["a"])
            errors = [r.get(f"{key}_se") for r in mine]
            ax.errorbar([r["a"] for r in mine], [r[key] for r in mine],
                        yerr=None if any(e is None for e in errors) else errors,
                        marker="o", markersize=4, capsize=2, linewidth=1.2, label=prior)
        ax.set_xlabel("hierarchy strength a = 1/softness")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend()
    size = f"{record.get('data', '?')} {record.get('resolution', '?')}×{record.get('resolution', '?')}"
    fig.suptitle(f"GUD softness sweep: {size}, {record.get('train_steps', '?')} steps, "
                 f"{record.get('num_samples', '?')} samples per point ({record.get('device', '?')})")
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` to `path` (.png, .svg or .pdf, by its suffix), through a temporary file renamed into place so
    that a reader never sees half a picture; returns the path."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise PlotError(f"a figure is written as {', '.join(FORMATS)}; got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        fig.savefig(partial, dpi=dpi, format=path.suffix.lower()[1:])
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """`diffspace plot`: the training curves of a run (`metrics_figure`) written to `out` (default
    <run>/metrics.png)."""
    columns = read_metrics_columns(run_dir)
    fig = metrics_figure(columns, title=f"{Path(run_dir).resolve().name}: {len(columns['step'])} logged rows")
    return save_figure(fig, Path(out) if out is not None else Path(run_dir) / METRICS_FIGURE)
