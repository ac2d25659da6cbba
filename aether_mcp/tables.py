"""Text tables for people: the routing table, the spawn log, costs, the demo's results."""

from __future__ import annotations

from collections.abc import Sequence

from .terminal import shown


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks; the first row is the header. Each cell is
    `shown` before it is measured, so a control character in one neither acts nor breaks the columns."""
    rows = [[shown(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
