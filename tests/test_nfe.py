"""benchmarks/nfe.py at toy size (--smoke), so that the quality-against-NFE benchmark never rots: every sampler of
every family runs, every row is finite, the record and the plot are written; and its goal and planning logic."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import nfe  # noqa: E402

from diffspace.process import family  # noqa: E402


def test_the_smoke_run_scores_every_sampler_of_every_case(tmp_path: Path) -> None:
    out = tmp_path / "nfe.json"
    record = nfe.main(["--smoke", "--nfe", "5", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(record["rows"])) and Path(record["figure"]).is_file()
    for design in nfe.DESIGNS:
        assert [r["sampler"] for r in saved["rows"] if r["case"] == design] == list(family("gaussian").samplers)
    kinds = {"digits": "gaussian", "mnist14": "gaussian", "cld14": "multivariate", "blackout": "blackout"}
    for name, kind in kinds.items():
        if name in saved["skipped"]:  # its data set is not on this machine
            assert "not found" in saved["skipped"][name]
            continue
        record_ = family(kind)
        expected = [s for s in record_.samplers if s not in record_.oracle_only]
        assert sorted(r["sampler"] for r in saved["rows"] if r["case"] == name) == sorted(expected), name
    for row in saved["rows"]:
        assert math.isfinite(row["value"]) and row["value"] >= 0, row
        assert row["nfe"] == 5, row  # N + 1 or 2N + 1 with the final denoising step, N for Blackout
        if row["part"] == "trained":
            assert math.isfinite(row["stderr"]) and row["stderr"] > 0, row
    assert saved["table"].count("\n") == 1 + len({(r["case"], r["sampler"]) for r in saved["rows"]})


def test_the_goal_compares_dpmpp_at_20_with_euler_maruyama_at_250_within_their_joint_standard_error() -> None:
    def row(sampler: str, target: int, value: float, stderr: float) -> dict:
        return {"part": "trained", "case": "m", "sampler": sampler, "target": target, "metric": "domain_fid",
                "value": value, "stderr": stderr}

    met = nfe.goal([row("dpmpp_2m", 20, 10.0, 0.6), row("euler_maruyama", 250, 9.3, 0.8)])
    assert met[0]["met"] and math.isclose(met[0]["difference_se"], 1.0)
    missed = nfe.goal([row("dpmpp_2m", 20, 10.0, 0.6), row("euler_maruyama", 250, 8.9, 0.8)])
    assert not missed[0]["met"]
    assert nfe.goal([row("dpmpp_2m", 20, 10.0, 0.6)]) == []  # the pair is incomplete


def test_the_plan_runs_the_goal_pair_first_and_caps_the_other_samplers() -> None:
    def trained(kind: str, discrete: bool) -> SimpleNamespace:
        process = SimpleNamespace(capabilities=SimpleNamespace(discrete=discrete))
        return SimpleNamespace(config=SimpleNamespace(process=SimpleNamespace(kind=kind)),
                               model=SimpleNamespace(process=process))

    rows = nfe.plan(trained("gaussian", False), [5, 20, 250], 100)
    assert rows[:2] == list(nfe.GOAL)
    assert ("heun", 250) not in rows and ("euler_maruyama", 5) in rows and len(rows) == len(set(rows))
    assert ("binomial_bridge", 250) in nfe.plan(trained("blackout", True), [5, 250], 100)
    assert nfe.steps_for("heun", 20, False) == 10 and nfe.steps_for("dpmpp_2m", 20, False) == 19


def test_the_samplers_page_shows_the_records_table() -> None:
    """docs/samplers.md holds, between its nfe-table markers, the table of benchmarks/results/nfe-cpu.json's rows."""
    root = Path(__file__).resolve().parents[1]
    record = json.loads((root / "benchmarks" / "results" / "nfe-cpu.json").read_text())
    page = (root / "docs" / "samplers.md").read_text()
    start = page.index("<!-- nfe-table: benchmarks/results/nfe-cpu.json -->\n")
    shown = page[start:page.index("<!-- /nfe-table -->")].split("\n", 1)[1].strip()
    assert shown == nfe.table(record["rows"], record["nfe_targets"])
    assert not record["smoke"] and record["threads"] == 1
