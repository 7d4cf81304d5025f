"""The scripts in examples/ run at toy size (`--toy`) and print what they promise; each well under 30 s of CPU time.

The limit is on the CPU seconds the script's process spends (user + system, from getrusage), not on wall time, which
on a shared 2-core machine grows with whatever else runs."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: Each example and a pattern its output must hold.
EXPECTED = {
    "grf_fno_two_resolutions.py": r"^\s+64\s+[\d.]+\s+.*\(unseen; 8 samples, NFE \d+\)$",
    "gud_softness_sweep.py": r"^ 1\.0\s+1\.000\s+[\d.]+ ± [\d.]+\s+grid: .*samples-a1\.0\.png$",
    "custom_basis_and_prior.py": r"relative covariance error [\d.]+ \(exact samples: [\d.]+ on average\)",
    "custom_net.py": r"^−ELBO of 16 test digits: [\d.]+ ± [\d.]+ bits/dim$",
}
LIMIT_CPU_S = 30.0


def test_every_example_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)


def _run(script: str, tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                              os.environ.get("PYTHONPATH")])),
                   "OMP_NUM_THREADS": "1", **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *flags, "--out", str(tmp_path)],
                          capture_output=True, text=True, env=environment, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done.stdout, seconds


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_at_toy_size(script: str, tmp_path: Path) -> None:
    out, seconds = _run(script, tmp_path, "--toy")
    assert re.search(EXPECTED[script], out, flags=re.M), out
    assert 0 < seconds < LIMIT_CPU_S, f"{script} --toy took {seconds:.1f} s of CPU time"


def test_the_toy_flag_also_comes_from_the_environment(tmp_path: Path) -> None:
    out, _ = _run("custom_basis_and_prior.py", tmp_path, env={"DIFFSPACE_EXAMPLES_TOY": "1"})
    assert out.startswith("256 samples")  # toy size: 256 samples, not 4096
