"""Griffe extension for the API pages: read diffspace's docstrings as the plain unicode prose they are.

The docstrings state maths in unicode (DESIGN.md: no LaTeX, no Markdown links), so square brackets in them are
expectations and matrices — E[x₀ | x_t], [[A, Γ], [0, −Aᵀ]] [C; H] — never Markdown references, and angle
brackets are placeholders (<run>/metrics.png), never HTML. Outside code spans and indented code blocks, `[`
becomes `\\[` and `<` becomes `&lt;`, so the pages show them as written and a broken cross-reference cannot
come from a formula.

The field lists of the config dataclasses are written as aligned lines, `name   — what it means` with
indented continuation lines; Markdown would run them into one paragraph, so a docstring with two or more
such lines at its left margin gets them as list items with the name in bold. Named in mkdocs.yml under the
python handler's `extensions`.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

CODE_SPAN = re.compile(r"(`+)(.+?)\1")
#: A field line: names (identifiers joined by ", " or " / ") at the left margin, spaces, an em dash, the text.
FIELD = re.compile(r"^(?P<names>[A-Za-z_]\w*(?:\s*[,/]\s*[A-Za-z_]\w*)*)\s+—\s+(?P<text>.*)$")


def _escape_prose(text: str) -> str:
    """`[` and `<` escaped outside the code spans of one line."""
    out, last = [], 0
    for match in CODE_SPAN.finditer(text):
        out.append(text[last:match.start()].replace("[", "\\[").replace("<", "&lt;"))
        out.append(match.group(0))
        last = match.end()
    out.append(text[last:].replace("[", "\\[").replace("<", "&lt;"))
    return "".join(out)


def plain(docstring: str) -> str:
    """The docstring with brackets escaped, indented code blocks (4+ spaces after a blank line) and fenced
    blocks left as they are."""
    lines, code, fenced, previous_blank = [], False, False, True
    for line in docstring.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
            lines.append(line)
            previous_blank = False
            continue
        indented = line.startswith("    ") and stripped != ""
        code = indented and (previous_blank or code)
        lines.append(line if fenced or code or stripped == "" else _escape_prose(line))
        previous_blank = stripped == ""
    return "\n".join(lines)


def field_lists(docstring: str) -> str:
    """Aligned `name — text` lines as Markdown list items (`- **name** — text`), a blank line before the first
    of each run; left alone unless the docstring has at least two of them."""
    lines = docstring.splitlines()
    if sum(bool(FIELD.match(line)) for line in lines) < 2:
        return docstring
    out: list[str] = []
    in_list = False
    for line in lines:
        match = FIELD.match(line)
        if match:
            if not in_list and out and out[-1].strip():
                out.append("")
            out.append(f"- **{match.group('names')}** — {match.group('text')}")
            in_list = True
        elif in_list and line.strip() and line[:1] == " ":
            out.append("  " + line.strip())  # a continuation line of the item
        else:
            if in_list and line.strip():
                out.append("")  # the list ends before a paragraph at the margin
            in_list = False if line.strip() or not in_list else in_list
            out.append(line)
    return "\n".join(out)


class PlainDocstrings(griffe.Extension):
    """Escape Markdown-active brackets in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: Any) -> None:
            if obj.is_alias or id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = field_lists(plain(obj.docstring.value))
            for member in obj.members.values():
                visit(member)

        visit(pkg)
