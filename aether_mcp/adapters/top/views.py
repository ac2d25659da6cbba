"""How `aether-mcp top` shows workers: a table's cells, the timeline, the totals, a worker's requests.

Plain functions from the board's rows to Rich text, so that they are tested without an app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from ...commands.board import Board, Row, transcript_tail
from ...commands.costs import finite

TIMELINE_ROWS = 8
STATUS = {  # a symbol and a word for each state, so neither color nor symbol alone carries it
    "queued": ("·", "queued", "grey62"),
    "running": ("▶", "running", "cyan"),
    "succeeded": ("✓", "done", "green"),
    "failed": ("✗", "failed", "red"),
    "timed_out": ("⧗", "timeout", "red"),  # one cell wide, as every symbol here
    "cancelled": ("■", "cancel", "yellow"),
    "budget_exceeded": ("$", "budget", "magenta"),
    "interrupted": ("?", "lost", "red"),
}


# The table's columns, in the order they give way when the terminal is narrow (the first ones stay).
COLUMNS: list[tuple[str, str, int]] = [
    ("worker", "WORKER", 32),  # its id (16) and the start of its description; it takes what the others leave
    ("status", "STATUS", 9),
    ("caste", "CASTE", 9),
    ("model", "MODEL", 12),
    ("verified", "OK", 3),
    ("elapsed", "TIME", 6),
    ("served", "SERVED BY", 20),
    ("node", "NODE", 12),
    ("cost", "COST", 8),
    ("tokens", "TOKENS", 7),
    ("requests", "REQ", 4),
]
PADDING = 2  # DataTable's cell padding, both sides


def columns_for(width: int) -> list[tuple[str, str, int]]:
    """The columns that fit `width` cells, giving way from the last; the worker's (its id and description)
    takes the width the others leave."""
    shown: list[tuple[str, str, int]] = []
    used = 2  # the scrollbar
    for column in COLUMNS:
        if used + column[2] + PADDING > width and len(shown) >= 3:
            break
        shown.append(column)
        used += column[2] + PADDING
    key, label, least = shown[0]
    shown[0] = (key, label, least + max(0, width - used))
    return shown


def status_text(row: Row) -> Text:
    symbol, word, color = STATUS.get(row.status, ("?", row.status, "white"))
    return Text(f"{symbol} {word}", style=color)


def cell(row: Row, key: str, now: float) -> Text | str:
    """What `row` shows in the column `key`."""
    if key == "worker":
        return row.worker_id + (f" {row.description}" if row.description else "")
    if key == "status":
        return status_text(row)
    if key == "caste":
        return row.caste
    if key == "model":
        return row.model or "(default)"
    if key == "verified":
        if row.live:
            return Text("…", style="grey62")
        return Text("✓", style="green") if row.verified else Text("✗", style="bold red")
    if key == "elapsed":
        elapsed = row.elapsed(now)
        return duration(elapsed, running=row.status == "running") if elapsed is not None else "-"
    if key == "served":  # verified with no deployment named (no /model/info): served as asked
        return ", ".join(row.served_by) or ("as asked" if row.verified and not row.live else "-")
    if key == "node":
        return node_name(row.node)
    if key == "cost":  # a running worker's cost is shown once an answer has one
        return f"${row.cost_usd:.4f}" if row.cost_usd is not None and (row.cost_usd or not row.live) else "-"
    if key == "tokens":
        return f"{row.tokens:,}" if row.tokens else "-"
    return str(row.requests) if row.requests is not None else "-"


def node_name(node: str | None) -> str:
    """Where a worker runs: its Ray node's name (the record adds the start of its id), else here."""
    return node.split(" (")[0] if node else "local"


def duration(seconds: float, *, running: bool = False) -> str:
    """A running worker's clock shows whole seconds: it changes (and is redrawn) once a second, not more."""
    if seconds < 60:
        return f"{int(seconds)}s" if running else f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def timeline(rows: list[Row], width: int, now: float) -> Text:
    """The most recent workers as bars on one time axis: a wave side by side shows as bars one above another."""
    recent = [r for r in rows if r.started is not None or r.status == "queued"][:TIMELINE_ROWS]
    text = Text()
    starts = [r.started for r in recent if r.started is not None]
    if not starts:
        return Text("No workers have run yet.", style="grey62")
    begin = min(starts)
    end = max([now if r.live else (r.finished or r.started or begin) for r in recent] + [begin + 1])
    label = 9  # the caste
    words = width - label >= 24  # room for " ▶ running" after a bar of 14; else the symbol alone
    span = max(4, width - label - (10 if words else 2))
    scale = span / (end - begin)
    for row in reversed(recent):
        symbol, word, color = STATUS.get(row.status, ("?", row.status, "white"))
        text.append(f"{row.caste[: label - 1]:<{label}}", style="bold")
        if row.started is None:
            text.append(" " * span)
        else:
            finish = now if row.live else (row.finished or row.started)
            left = min(span - 1, round((row.started - begin) * scale))
            length = min(span - left, max(1, round((finish - row.started) * scale)))
            text.append(" " * left)
            text.append("━" * length, style=color)
            text.append(" " * (span - left - length))
        text.append(f" {symbol} {word}\n" if words else f" {symbol}\n", style=color)
    text.append(f"{'':<{label}}0s{duration(end - begin):>{span - 2}}", style="grey62")
    text.no_wrap, text.overflow = True, "crop"
    return text


def totals_table(board: Board, width: int) -> Table | Text:
    """The finished workers per caste and model; the tokens give way in a terminal under 100 columns."""
    rows = board.totals()
    if not rows:
        return Text("Totals appear as workers finish.", style="grey62")
    names = ["CASTE", "MODEL", "N", "TOKENS", "COST", "OK"]
    if width < 100:
        names.remove("TOKENS")
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for name in names:
        table.add_column(name, justify="left" if name in ("CASTE", "MODEL") else "right")
    for row in rows[:4]:
        cost = "-" if row.cost_unknown == row.workers else f"${row.cost_usd:.4f}" + ("+?" if row.cost_unknown else "")
        share = Text(f"{row.share_verified:.0%}", style="green" if row.share_verified == 1 else "red")
        values = {"TOKENS": f"{row.tokens:,}", "COST": cost, "N": str(row.workers)}
        model = row.model or "(default)"
        table.add_row(row.caste, model, *(values.get(n, share) for n in names[2:]))
    return table


def empty_state(project: Path) -> str:
    return (
        f"No workers yet in {project}.\n\n"
        "Start one: in Claude Code, after `aether-mcp install`, ask for a sub-agent (the Task tool);\n"
        "or call the spawn_worker tool; or run `aether-mcp spawn scout 'map the repository'`.\n"
        "Workers of every session in this project show here as they start."
    )


def request_cells(request: dict[str, Any], assigned: str | None) -> list[str | Text]:
    """One request at the wire: route, status, model asked, time to first byte, duration, tokens, deployment,
    and whether a fallback served it (a declared one, or the proxy's own). Read from a file: any field may be
    missing or of another type, and shows as '-'."""
    status, ttfb, took = (
        finite(request.get("status")),
        finite(request.get("ttfb_s")),
        finite(request.get("duration_s")),
    )
    kinds = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    tokens = sum(int(finite(request.get(kind)) or 0) for kind in kinds)
    fallback = []
    if assigned is not None and request.get("model") not in (None, assigned):
        fallback.append("declared")
    if finite(request.get("attempted_fallbacks")):
        fallback.append(f"proxy x{int(request['attempted_fallbacks'])}")
    return [
        f"{request.get('method')} {str(request.get('path')).split('?')[0]}",
        Text(f"{status:.0f}", style="green" if status == 200 else "red") if status is not None else Text("…"),
        str(request.get("model") or "-"),
        f"{ttfb * 1000:.0f}ms" if ttfb is not None else "-",
        duration(took) if took is not None else "…",
        f"{tokens:,}",
        str(request.get("model_id") or "-"),
        ", ".join(fallback) or ("refused" if request.get("refused") else "-"),
    ]


def about(row: Row, details: dict[str, Any]) -> Text:
    text = Text()
    text.append("\nTask (first lines)\n", style="bold")
    text.append(str(details.get("task_head") or "(not recorded)") + "\n")
    if details.get("worktree") or details.get("branch"):
        text.append("\nWorktree ", style="bold")
        text.append(f"{details.get('worktree') or '(removed)'} on {details.get('branch') or '-'}\n")
    found = details.get("routing_evidence")
    evidence = [str(line) for line in found] if isinstance(found, list) else []
    text.append("\nEvidence\n", style="bold")
    text.append("\n".join(evidence) + "\n" if evidence else "(when it finishes)\n")
    text.append("\nTranscript (last lines)\n", style="bold")
    text.append("\n".join(transcript_tail(row.transcript)) or "(nothing yet)")
    return text
