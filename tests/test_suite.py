"""benchmarks/suite.py at toy size (--smoke), so that the GPU suite never rots, and its failure handling."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import suite  # noqa: E402

from diffspace.data import DataConfig, DataError, load_dataset  # noqa: E402

#: Items that need a data set on disk (skipped, naming it, when it is missing).
NEEDS_DATA = {"quality_mnist", "quality_gud", "quality_multivariate", "quality_multilevel", "quality_blackout"}


def _mnist_present() -> bool:
    try:
        load_dataset(DataConfig(name="mnist", split="test", max_items=1))
    except DataError:
        return False
    return True


def test_the_smoke_suite_runs_every_item_and_records_finite_figures(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    # Smoke sizes are capped whatever the budget; a generous one keeps a loaded machine from turning a slow toy
    # item into a skipped one (the deadline itself is tested below).
    record = suite.main(["--smoke", "--budget", "300", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["items"] == json.loads(json.dumps(record["items"]))
    assert [e["item"] for e in saved["items"]] == [i.name for i in suite.ITEMS]
    for key in ("device", "device_name", "torch", "cuda", "budget_s", "elapsed_s", "smoke"):
        assert key in saved
    data = _mnist_present()
    for entry in saved["items"]:
        name = entry["item"]
        assert entry["budget_s"] >= 0 and entry["elapsed_s"] >= 0, name
        if name == "unet_ddpmpp_train_compile":
            assert entry["status"] == "skipped" and "smoke" in entry["error"]
            continue
        if name in NEEDS_DATA and not data:
            assert entry["status"] == "skipped" and "not in" in entry["error"], entry
            continue
        assert entry["status"] == "ok", f"{name}: {entry.get('error')}"
        assert entry["figures"], name
        for figure in entry["figures"]:
            assert isinstance(figure["value"], float) and math.isfinite(figure["value"]), (name, figure)
            assert figure["stderr"] is None or math.isfinite(figure["stderr"]), (name, figure)
    targets = {e["item"]: [f["target"] for f in e["figures"]] for e in saved["items"] if e["status"] == "ok"}
    for name in ("unet_ddpmpp_train", "fno_train", "fno_sample", "multivariate_step"):
        assert all(targets[name]), f"{name} prints no target beside its figure"


def test_a_failing_a_hanging_and_a_late_item_are_recorded_and_the_suite_goes_on(tmp_path: Path, monkeypatch) -> None:
    def fails(ctx: suite.Context) -> suite.Result:
        raise RuntimeError("out of luck")

    def hangs(ctx: suite.Context) -> suite.Result:
        time.sleep(30)
        raise AssertionError("not stopped")

    def works(ctx: suite.Context) -> suite.Result:
        return suite.Result([suite.Figure("answer", 42.0, "")])

    def slow(ctx: suite.Context) -> suite.Result:
        time.sleep(1.2)
        return suite.Result([suite.Figure("slow", 1.0, "")])

    monkeypatch.setattr(suite, "ITEMS", (suite.Item("fails", fails, 1), suite.Item("hangs", hangs, 1),
                                         suite.Item("works", works, 1)))
    monkeypatch.setattr(suite, "GRACE", 0.3)
    monkeypatch.setattr(suite, "HARD_FACTOR", 0.0)  # the hard limit is GRACE alone
    began = time.perf_counter()
    record = suite.main(["--smoke", "--budget", "100", "--out", str(tmp_path / "s.json")])
    assert time.perf_counter() - began < 10
    status = {e["item"]: (e["status"], e.get("error", "")) for e in record["items"]}
    assert status["fails"] == ("error", "RuntimeError: out of luck")
    assert status["hangs"][0] == "timeout"
    assert status["works"][0] == "ok" and record["items"][2]["figures"][0]["value"] == 42.0
    monkeypatch.undo()
    monkeypatch.setattr(suite, "ITEMS", (suite.Item("slow", slow, 1), suite.Item("late", works, 1)))
    record = suite.main(["--smoke", "--budget", "2", "--out", str(tmp_path / "s.json")])
    status = {e["item"]: (e["status"], e.get("error", "")) for e in record["items"]}
    assert status["slow"][0] == "ok"
    assert status["late"] == ("skipped", "no time left before the suite's deadline")


def test_an_item_runs_in_a_subprocess_as_the_compile_item_does(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(suite, "ITEMS", (suite.Item("fno_train", suite.fno_train, 1, subprocess=True),))
    record = suite.main(["--smoke", "--budget", "100", "--out", str(tmp_path / "s.json")])
    (entry,) = record["items"]
    assert entry["status"] == "ok", entry.get("error")
    assert entry["figures"][0]["name"] == "train images/s" and entry["figures"][0]["value"] > 0


def test_unknown_items_are_refused() -> None:
    with pytest.raises(SystemExit):
        suite.arguments(["--only", "fno_trian"])
