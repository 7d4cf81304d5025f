"""What the examples share: the --toy flag (or DIFFSPACE_EXAMPLES_TOY=1) and a scratch folder for runs."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def arguments(description: str) -> argparse.Namespace:
    """--toy (tiny sizes, seconds on a CPU; also DIFFSPACE_EXAMPLES_TOY=1) and --out (where runs go)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--toy", action="store_true", default=os.environ.get("DIFFSPACE_EXAMPLES_TOY") == "1",
                        help="toy size: a few training steps, a few samples (what the test suite runs)")
    parser.add_argument("--out", help="folder for the runs and figures (default: a temporary folder)")
    return parser.parse_args()


def workspace(out: str | None) -> Path:
    """`out` (created), or a fresh temporary folder."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="diffspace-example-"))
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path
