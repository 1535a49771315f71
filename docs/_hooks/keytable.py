"""mkdocs hook: the key table of docs/keys.md, generated from the docstring of engine/keys.py.

The docstring of ``swarm_redis/engine/keys.py`` is the one written copy of the key table (an
reStructuredText simple table). This hook reads it without importing the package (``ast``), turns
it into a Markdown table and puts it where a page says ``<!-- key-table -->``, so the site never
holds a hand copy that can drift. ``tests/test_docs.py`` checks the docstring's names against
``RUN_KEY_NAMES``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

MARKER = "<!-- key-table -->"
KEYS_MODULE = Path(__file__).resolve().parents[2] / "swarm_redis" / "engine" / "keys.py"


def key_table_rows(source: Path = KEYS_MODULE) -> list[tuple[str, str, str]]:
    """(name, type, content) of every row of the docstring's table, in order."""
    doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
    lines = doc.splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"=+( +=+)+", line)]
    if len(rules) != 3:
        raise ValueError(f"{source}: expected one simple table (3 rule lines), found {len(rules)}")
    starts = [m.start() for m in re.finditer(r"=+", lines[rules[0]])]
    rows: list[list[str]] = []
    for line in lines[rules[1] + 1 : rules[2]]:
        cells = [
            line[a : starts[i + 1] if i + 1 < len(starts) else None].strip()
            for i, a in enumerate(starts)
        ]
        if cells[0]:
            rows.append(cells)
        elif rows:  # continuation of the previous row's content
            rows[-1][2] += " " + cells[2]
        else:
            raise ValueError(f"{source}: the table starts with a continuation line")
    return [(name, kind, content) for name, kind, content in rows]


def key_table_names(rows: list[tuple[str, str, str]], statuses: tuple[str, ...]) -> list[str]:
    """The key names the rows stand for, ``s:G .. s:F`` expanded to one set per status."""
    names: list[str] = []
    for name, _, _ in rows:
        if name == "s:G .. s:F":
            names.extend(f"s:{s}" for s in statuses)
        else:
            names.append(name)
    return names


def _cell(text: str) -> str:
    """reStructuredText literals as Markdown code; a ``|`` outside them escaped for the table."""
    parts = re.split(r"``(.+?)``", text)  # odd items: the literals
    return "".join(f"`{p}`" if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def key_table_markdown(rows: list[tuple[str, str, str]]) -> str:
    """The rows as a Markdown table."""
    out = ["| key | type | content |", "|---|---|---|"]
    for name, kind, content in rows:
        shown = "`s:G` … `s:F`" if name == "s:G .. s:F" else f"`{name}`"
        out.append(f"| {shown} | {kind} | {_cell(content)} |")
    return "\n".join(out)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the marker with the generated table."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, key_table_markdown(key_table_rows()))
