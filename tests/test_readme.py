"""The README's Python examples run as written, in a folder holding the `runs/quickstart` they load (a quickstart
run of a few steps)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from diffspace.config import load_preset
from diffspace.training import train

README = Path(__file__).resolve().parents[1] / "README.md"
FEW_STEPS = ["train.steps=2", "train.batch_size=8", "train.checkpoint_every=2", "train.device=cpu", "sample.num=0",
             "data.max_items=32", "model.channels=8", "model.channel_mult=1", "model.attn_resolutions="]


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README should hold at least one Python example"
    train(load_preset("quickstart").with_overrides(FEW_STEPS), tmp_path / "runs" / "quickstart", quiet=True)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    samples, exact = map(float, re.search(r"samples ([\d.]+), exact ([\d.]+)", out).groups())
    assert abs(samples - exact) < 0.1 * exact
    assert re.search(r"GaussianConfig\(kind='gaussian'.*\) 2$", out, flags=re.M)


def test_readme_keeps_the_two_commands_at_its_top() -> None:
    """The first section is "The two commands", holding exactly these two command lines (the docs include it)."""
    text = README.read_text()
    assert re.findall(r"^## (.*)$", text, flags=re.M)[0] == "The two commands"
    section = text[text.index("<!-- --8<-- [start:two-commands] -->"):text.index("<!-- --8<-- [end:two-commands] -->")]
    assert re.findall(r"```bash\n(.*?)\n```", section, flags=re.S) == [
        "pip install torch==2.13.0 && pip install -e . && diffspace train",
        'pip install -e ".[test]" && python -m pytest -q',
    ]
