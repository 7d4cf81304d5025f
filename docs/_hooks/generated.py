"""MkDocs hook: put each command's `--help`, as the program prints it, and tables of the benchmarks' JSON
records into the pages at build time.

A line `<!-- diffspace-help: train -->` (or `data fetch`, or empty for `diffspace --help` itself) is replaced
by a code block holding that command's help text, formatted by the command line's own argparse parser
(`diffspace.cli.command_parsers`) at a fixed width, so the pages never drift from the program. The
working tree's `src/` comes first on `sys.path`, so a build documents this checkout, not an installed copy.

A line `<!-- diffspace-record: benchmarks/results/X.json rows=KEY columns=a,b,c -->` is replaced by a Markdown
table of the list `KEY` of that record (a path relative to the repository root), one row per entry and one
column per named field (floats with 4 significant digits, or whole from 1,000), so the tables are the records' own numbers.
A missing file or field fails the build.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- diffspace-help:(?P<command>[ a-z-]*)-->[ \t]*$", re.M)
RECORD = re.compile(r"^<!-- diffspace-record: (?P<path>\S+) rows=(?P<rows>\w+) columns=(?P<columns>[\w,]+) -->[ \t]*$", re.M)
WIDTH = 80  # columns of the help text (argparse reads $COLUMNS): what the pages show without scrolling


def _parsers() -> dict[str, Any]:
    source = str(ROOT / "src")
    if source not in sys.path:
        sys.path.insert(0, source)
    from diffspace.cli import command_parsers

    return command_parsers()


def help_text(command: str) -> str:
    """`diffspace COMMAND --help`, formatted at WIDTH columns; KeyError naming the known commands otherwise."""
    parsers = _parsers()
    if command not in parsers:
        raise KeyError(f"no command {command!r}; known: {', '.join(repr(c) for c in parsers)}")
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parsers[command].format_help().rstrip()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def record_table(path: str, rows: str, columns: list[str]) -> str:
    """A Markdown table of the entries `rows` of the JSON record at `path` (relative to the repository root)."""
    record = json.loads((ROOT / path).read_text())
    entries = record[rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for i, entry in enumerate(entries):
        missing = [c for c in columns if c not in entry]
        if missing:
            raise KeyError(f"{path}: entry {i} of {rows!r} has no {', '.join(missing)}")
        lines.append("| " + " | ".join(_cell(entry[c]) for c in columns) + " |")
    return "\n".join(lines)


def expand(markdown: str) -> str:
    """Every help marker of `markdown` replaced by the help text of its command, in a ```text block, and every
    record marker by its table."""
    markdown = MARKER.sub(lambda m: f"```text\n{help_text(m.group('command').strip())}\n```", markdown)
    return RECORD.sub(lambda m: record_table(m.group("path"), m.group("rows"), m.group("columns").split(",")),
                      markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: expand the help markers of every page."""
    return expand(markdown)
