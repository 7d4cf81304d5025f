"""The figure of the GUD softness benchmark, drawn from its JSON record (needs `pip install "diffspace[plot]"`).

Every metric of the record's rows (domain FID, precision, recall, class balance, bits/dim with its standard
error, and FID when measured) against the hierarchy strength a = 1/softness, one line per prior
(`diffspace.plots.softness_figure`). `gud_softness.py` calls it after writing the record; run it alone to
redraw a record:

    python benchmarks/plot_gud_softness.py --record benchmarks/results/gud_softness.json \\
        --out docs/figures/gud-softness.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffspace.plots import PlotMissing, save_figure, softness_figure

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "gud_softness.json"
FIGURE = ROOT / "docs" / "figures" / "gud-softness.png"


def draw(record: str | Path, out: str | Path) -> Path:
    """Read the record and write its figure to `out`."""
    return save_figure(softness_figure(json.loads(Path(record).read_text())), out)


def main() -> int:
    """Command line: --record JSON, --out PNG; exit status 2 with one line when matplotlib is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", default=str(RECORD), help="the benchmark's JSON record")
    parser.add_argument("--out", default=str(FIGURE), help="figure file (.png, .svg or .pdf)")
    args = parser.parse_args()
    try:
        print(f"wrote {draw(args.record, args.out)}")
    except PlotMissing as err:
        print(f"plot_gud_softness: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
