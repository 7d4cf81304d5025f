"""Figures (`diffspace.plots`): `diffspace plot` on a tiny quickstart run, the power spectra beside an eval report,
the softness sweep's figure, and one line with exit status 2 when matplotlib is missing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from diffspace.cli import main
from diffspace.config import load_preset
from diffspace.evaluate import EvalOptions, evaluate_path
from diffspace.training import train

pytest.importorskip("matplotlib", reason='plots need matplotlib: pip install "diffspace[plot]"')

from diffspace.plots import METRIC_CURVES, metrics_figure, read_metrics_columns, softness_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.steps=6", "train.log_every=2", "train.batch_size=8", "train.device=cpu", "train.checkpoint_every=6",
        "sample.num=0", "data.max_items=32", "model.channels=8", "model.channel_mult=1", "model.attn_resolutions="]
NO_MATPLOTLIB = "import sys\nsys.modules['matplotlib'] = None\nfrom diffspace.cli import main\nsys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart preset, 6 steps logged every 2: metrics.csv holds 3 rows."""
    path = tmp_path_factory.mktemp("plot") / "run"
    train(load_preset("quickstart").with_overrides(TINY), path, quiet=True)
    return path


def _csv_columns(run: Path) -> dict[str, list[float]]:
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(r[key]) for r in rows] for key in rows[0]}


def test_plot_command_writes_a_png_of_every_logged_row(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "--run", str(run_dir)]) == 0
    out = run_dir / "metrics.png"
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
    columns = _csv_columns(run_dir)
    assert columns["step"] == [2.0, 4.0, 6.0]
    figure = metrics_figure(read_metrics_columns(run_dir))
    assert len(figure.axes) == len(METRIC_CURVES) == 3
    for ax, (key, _, _) in zip(figure.axes, METRIC_CURVES):
        (line,) = ax.get_lines()
        assert list(line.get_xdata()) == columns["step"]  # one point per metrics.csv row
        assert list(line.get_ydata()) == columns[key]


def test_plot_out_chooses_the_file_and_its_type(run_dir: Path, tmp_path: Path) -> None:
    assert main(["plot", "--run", str(run_dir), "--out", str(tmp_path / "curves.svg")]) == 0
    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(("argv", "message"), [
    (["plot", "--run", "{tmp}/nothing"], "has no metrics.csv"),
    (["plot", "--run", "{run}", "--out", "{tmp}/curves.jpg"], "a figure is written as .png, .svg, .pdf"),
])
def test_plot_errors_are_one_line_with_status_2(argv: list[str], message: str, run_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(tmp=tmp_path, run=run_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_without_matplotlib_plot_says_how_to_get_it_in_one_line(run_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", NO_MATPLOTLIB, "plot", "--run", str(run_dir), "--out",
                           str(tmp_path / "m.png")], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == 'diffspace plot: plots need matplotlib: pip install "diffspace[plot]"'
    assert not (tmp_path / "m.png").exists()


def test_eval_function_draws_the_power_spectra_beside_the_report(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    options = EvalOptions(num=6, steps=3, sampler="euler_maruyama", device="cpu")
    report = evaluate_path(run_dir, ["function"], out, options)
    figure = tmp_path / "report-spectrum.png"
    assert report.plots == {"spectrum": str(figure)} and report.notes == []
    assert json.loads(out.read_text())["plots"] == {"spectrum": str(figure)}
    with Image.open(figure) as image:
        image.verify()
    without = evaluate_path(run_dir, ["bpd"], tmp_path / "bpd.json", EvalOptions(bpd_num=2, device="cpu"))
    assert without.plots == {} and without.notes == [] and not (tmp_path / "bpd-spectrum.png").exists()


def test_the_spectrum_figure_shows_every_shell_of_samples_and_data() -> None:
    from diffspace.plots import spectrum_figure

    shells, ours, theirs = [0, 1, 2, 3, 4], [9.0, 1.0, 0.5, 0.2, 0.1], [8.0, 1.1, 0.4, 0.25, 0.05]
    figure = spectrum_figure(shells, ours, theirs, band_edges=[0, 1, 2, 4], band_error=[0.1, 0.2, 0.3])
    data, samples = figure.axes[0].get_lines()
    assert list(data.get_xdata()) == [1, 2, 3, 4] and list(data.get_ydata()) == theirs[1:]  # the mean mode is left out
    assert list(samples.get_ydata()) == ours[1:]
    assert len(figure.axes[1].patches) == 3


def test_eval_without_matplotlib_notes_how_to_get_the_plot(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-c", NO_MATPLOTLIB, "eval", "--run", str(run_dir), "--metrics", "function",
                           "--num", "4", "--steps", "2", "--sampler", "euler_maruyama", "--device", "cpu", "--out",
                           str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    note = 'no power-spectrum plot: plots need matplotlib: pip install "diffspace[plot]"'
    assert note in done.stdout.splitlines()
    assert json.loads(out.read_text())["notes"] == [note] and not (tmp_path / "report-spectrum.png").exists()


def test_softness_figure_has_a_line_per_prior_with_a_point_per_hierarchy(tmp_path: Path) -> None:
    record = json.loads((ROOT / "benchmarks" / "results" / "gud_softness.json").read_text())
    figure = softness_figure(record)
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in visible] == ["domain FID ↓", "precision ↑", "recall ↑", "class TV ↓",
                                                     "bits/dim ↓"]  # no FID in the CPU record
    for ax in visible:
        lines = [container.lines[0] for container in ax.containers]  # the data line of each errorbar
        assert len(lines) == 2 and all(list(line.get_xdata()) == [0.4, 0.7, 1.0, 1.3, 1.6] for line in lines)
    whitened = [r["bpd"] for r in record["rows"] if r["prior"] == "whitened"]
    assert list(visible[4].containers[0].lines[0].get_ydata()) == whitened
    script = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot_gud_softness.py"), "--out",
                             str(tmp_path / "s.png")], capture_output=True, text=True)
    assert script.returncode == 0 and (tmp_path / "s.png").stat().st_size > 10_000
