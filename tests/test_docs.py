"""The documentation site's sources: every command's help is included from the program, the build-time tables are
the records' own, the pages the navigation names exist, the included snippets exist, the tables that restate the
registry agree with it, and the docstring filter of the API pages leaves code alone. (`mkdocs build --strict`
itself runs in .ci/run.)"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffspace.cli import command_parsers
from diffspace.process import families, family

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / "_hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generated = _module("generated")


def test_every_command_has_its_help_on_the_cli_page() -> None:
    markers = [m.group("command").strip() for m in generated.MARKER.finditer((DOCS / "cli.md").read_text())]
    assert sorted(markers) == sorted(command_parsers()), "add a <!-- diffspace-help: COMMAND --> line to docs/cli.md"


@pytest.mark.parametrize("command", ["", "plot", "data fetch", "eval"])
def test_a_help_marker_becomes_what_the_program_prints(command: str) -> None:
    expanded = generated.expand(f"<!-- diffspace-help: {command} -->")
    printed = subprocess.run([sys.executable, "-m", "diffspace.cli", *command.split(), "--help"], capture_output=True,
                             text=True, env={**os.environ, "COLUMNS": str(generated.WIDTH)})
    assert printed.returncode == 0
    assert expanded == f"```text\n{printed.stdout.rstrip()}\n```"
    with pytest.raises(KeyError, match="no command 'trian'"):
        generated.help_text("trian")


def test_record_tables_hold_every_row_of_the_record() -> None:
    record = json.loads((ROOT / "benchmarks" / "results" / "gud_softness.json").read_text())
    table = generated.expand("<!-- diffspace-record: benchmarks/results/gud_softness.json rows=rows "
                             "columns=prior,a,bpd -->").splitlines()
    assert table[0] == "| prior | a | bpd |" and len(table) == 2 + len(record["rows"])
    assert table[2] == f"| whitened | 0.4 | {record['rows'][0]['bpd']:.4g} |"
    with pytest.raises(KeyError, match="has no nothing"):
        generated.record_table("benchmarks/results/gud_softness.json", "rows", ["prior", "nothing"])
    for page in DOCS.rglob("*.md"):  # every record marker of the pages expands
        generated.RECORD.sub(lambda m: generated.record_table(m["path"], m["rows"], m["columns"].split(",")),
                             page.read_text())


def _nav_files(nav: list) -> list[str]:
    found = []
    for entry in nav:
        value = entry if isinstance(entry, str) else next(iter(entry.values()))
        found.extend(_nav_files(value) if isinstance(value, list) else [value])
    return found


def test_the_navigation_names_every_page_and_only_existing_ones() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_files(config["nav"])
    assert all((DOCS / page).is_file() for page in nav), [p for p in nav if not (DOCS / p).is_file()]
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_hooks" not in p.parts}
    assert pages == set(nav)
    assert "families/flow.md" in nav  # the slot of the family being added


def test_included_snippets_exist() -> None:
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r'^--8<-- "([^"]+)"$', page.read_text(), flags=re.M):
            path, _, section = target.partition(":")
            assert (ROOT / path).is_file(), f"{page}: {path}"
            if section:
                assert f"--8<-- [start:{section}]" in (ROOT / path).read_text(), f"{page}: {target}"


def test_the_getting_started_page_includes_the_readmes_two_commands() -> None:
    assert '--8<-- "README.md:two-commands"' in (DOCS / "getting-started.md").read_text()


def test_readme_links_point_at_files() -> None:
    for link in re.findall(r"\]\(([^)#]+)\)", (ROOT / "README.md").read_text()):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_the_sampler_table_is_the_registrys() -> None:
    """docs/design-space.md lists each family's samplers (first = default) as its registry record does."""
    text = (DOCS / "design-space.md").read_text()
    rows = dict(re.findall(r"^\| (Gaussian|multivariate|Blackout|flow) \| (.+) \|$", text, flags=re.M))
    assert {name.lower() for name in rows} == set(families()), "add the new family's row to docs/design-space.md"
    for name, cell in rows.items():
        assert re.findall(r"`(\w+)`", cell) == list(family(name.lower()).samplers)


def test_api_docstring_filter_escapes_brackets_outside_code_only() -> None:
    pytest.importorskip("griffe", reason='the API pages\' docstring filter is a griffe extension: pip install "diffspace[docs]"')
    plain = _module("griffe_plain")
    text = "E[x₀ | x_t] and <run>/metrics.png; `a[0] < b`\n\n    code[1] <x>\n\nafter [C; H]"
    assert plain.plain(text) == ("E\\[x₀ | x_t] and &lt;run>/metrics.png; `a[0] < b`\n\n    code[1] <x>\n\n"
                                 "after \\[C; H]")
    fields = "What it is.\nsteps        — optimizer steps\n               per run.\nlr, decay — rates.\nEnd."
    assert plain.field_lists(fields) == ("What it is.\n\n- **steps** — optimizer steps\n  per run.\n"
                                         "- **lr, decay** — rates.\n\nEnd.")
    assert plain.field_lists("one — line only") == "one — line only"


def test_every_module_has_an_api_page() -> None:
    """Each module of the package is rendered by a `::: module` block of some page under docs/api/."""
    package = ROOT / "src" / "diffspace"
    modules = {".".join(("diffspace", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
               for p in package.rglob("*.py")}
    rendered = {line.split(":::", 1)[1].strip() for page in (ROOT / "docs" / "api").glob("*.md")
                for line in page.read_text().splitlines() if line.startswith(":::")}
    assert sorted(modules - rendered) == []
