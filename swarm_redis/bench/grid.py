"""Tables as plain data (:class:`Grid`), rendered by rich in a terminal or as Markdown, and the
cell formatting every table uses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rich.table import Table


def fmt(value: Any, digits: int = 1) -> str:
    """A figure as a table cell: thousands separators, ``digits`` decimals, "-" for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class Grid:
    """A table as plain data, rendered by rich (terminal) or as Markdown (docs)."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]

    def add_row(self, *cells: str) -> None:
        """Append one row of formatted cells."""
        self.rows.append(tuple(cells))

    def rich(self) -> Table:
        """The grid as a rich Table."""
        table = Table(title=self.title, title_justify="left", title_style="bold")
        for i, c in enumerate(self.columns):
            table.add_column(c, justify="left" if i == 0 else "right")
        for row in self.rows:
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        """The grid as a GitHub Markdown table under a bold title line."""
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|")
        for row in self.rows:
            cells = [plain(c) for c in row]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def plain(cell: str) -> str:
    """A cell without rich markup (``[bold]x[/]`` -> ``x``)."""
    return re.sub(r"\[/?[a-z ]*\]", "", cell)


def table(title: str, *columns: str) -> Grid:
    """An empty grid with a title and column names."""
    return Grid(title, columns, [])
