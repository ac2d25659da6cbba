"""`aether-mcp top`: the project's workers, live, in the terminal (Textual).

It reads what the servers write (see `commands.board`), twice a second, and redraws only what changed; it
talks to a server only to cancel one of its workers (see `control`). Only this command imports Textual.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from ..commands.board import Board, Row, transcript_tail
from ..errors import AetherError

REFRESH_S = 0.5
TIMELINE_ROWS = 8
STATUS = {  # a symbol and a word for each state, so neither color nor symbol alone carries it
    "queued": ("·", "queued", "grey62"),
    "running": ("▶", "running", "cyan"),
    "succeeded": ("✓", "done", "green"),
    "failed": ("✗", "failed", "red"),
    "timed_out": ("⌛", "timeout", "red"),
    "cancelled": ("■", "cancel", "yellow"),
    "budget_exceeded": ("$", "budget", "magenta"),
    "interrupted": ("?", "lost", "red"),
}


# The table's columns, in the order they give way when the terminal is narrow (the first ones stay).
COLUMNS: list[tuple[str, str, int]] = [
    ("worker", "WORKER", 20),
    ("status", "STATUS", 9),
    ("caste", "CASTE", 9),
    ("model", "MODEL", 12),
    ("verified", "OK", 3),
    ("elapsed", "TIME", 6),
    ("served", "SERVED BY", 20),
    ("cost", "COST", 8),
    ("tokens", "TOKENS", 7),
    ("requests", "REQ", 4),
]
PADDING = 2  # DataTable's cell padding, both sides


def columns_for(width: int) -> list[tuple[str, str, int]]:
    """The columns that fit `width` cells, giving way from the last."""
    shown: list[tuple[str, str, int]] = []
    used = 2  # the scrollbar
    for column in COLUMNS:
        if used + column[2] + PADDING > width and len(shown) >= 3:
            break
        shown.append(column)
        used += column[2] + PADDING
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
    if key == "served":
        return ", ".join(row.served_by) or "-"
    if key == "cost":  # a running worker's cost is shown once an answer has one
        return f"${row.cost_usd:.4f}" if row.cost_usd is not None and (row.cost_usd or not row.live) else "-"
    if key == "tokens":
        return f"{row.tokens:,}" if row.tokens else "-"
    return str(row.requests) if row.requests is not None else "-"


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


class WorkerTable(DataTable[Text | str]):
    """The workers, one a row; Enter opens the selected one (named in the footer)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Details")]


class ColonyApp(App[int]):
    """The table of workers, totals per caste and model, and a timeline; Enter opens a worker."""

    CSS_PATH = "top.tcss"
    TITLE = "aether-mcp top"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_top", "Quit"),
        Binding("c", "cancel_worker", "Cancel"),
        Binding("slash", "filter", "Filter caste"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("j", "cursor(1)", "Down", show=False),
        Binding("k", "cursor(-1)", "Up", show=False),
    ]

    def __init__(self, state_dir: Path, project: Path) -> None:
        super().__init__()
        self.board = Board(state_dir)
        self.project = project
        self.caste_filter = ""
        self._shown: list[Row] = []
        self._columns: list[tuple[str, str, int]] = []
        self._timeline_drawn = ""

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        yield Static(empty_state(self.project), id="empty")
        yield WorkerTable(id="workers", cursor_type="row", show_row_labels=False)
        with Horizontal(id="below"):
            yield Static(id="totals")
            yield Static(id="timeline")
        yield Input(placeholder="caste (Enter keeps it, Esc clears it)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter").display = False
        self.board.refresh()
        self._redraw()
        self.set_interval(REFRESH_S, self._tick)

    def on_resize(self) -> None:
        self._redraw(columns_changed=True)

    # --- drawing -------------------------------------------------------------------------------------------

    def _tick(self) -> None:
        changed = self.board.refresh()
        if changed:
            self._redraw()
        elif any(r.status == "running" for r in self._shown):
            self._redraw_clock()

    def _rows(self) -> list[Row]:
        wanted = self.caste_filter.lower()
        return [r for r in self.board.rows if wanted in r.caste.lower()]

    def _redraw(self, *, columns_changed: bool = False) -> None:
        table = self.query_one("#workers", DataTable)
        columns = columns_for(self.size.width)
        now = time.time()
        rows = self._rows()
        if columns != self._columns or columns_changed:
            self._columns = columns
            table.clear(columns=True)
            for key, label, width in columns:
                table.add_column(label, key=key, width=width)
            self._shown = []
        selected = self._selected()
        if [r.worker_id for r in rows] == [r.worker_id for r in self._shown]:
            for old, new in zip(self._shown, rows, strict=True):
                for key, _, _ in self._columns:
                    value = cell(new, key, now)
                    if value != cell(old, key, now):
                        table.update_cell(new.worker_id, key, value)
        else:
            table.clear()
            for row in rows:
                table.add_row(*(cell(row, key, now) for key, _, _ in self._columns), key=row.worker_id)
            if selected is not None and selected in {r.worker_id for r in rows}:
                table.move_cursor(row=table.get_row_index(selected))
        self._shown = rows
        empty = not self.board.rows
        self.query_one("#empty").display = empty
        table.display = not empty
        self.query_one("#below").display = not empty
        self._draw_summary()
        self.query_one("#totals", Static).update(totals_table(self.board, self.size.width))
        self._timeline_drawn = ""
        self._draw_timeline(now)

    def _redraw_clock(self) -> None:
        """Only the running workers' times and bars move: each is redrawn when what it shows changes."""
        table, now = self.query_one("#workers", DataTable), time.time()
        if any(key == "elapsed" for key, _, _ in self._columns):
            for row in self._shown:
                if row.status == "running":
                    shown = cell(row, "elapsed", now)
                    if shown != table.get_cell(row.worker_id, "elapsed"):
                        table.update_cell(row.worker_id, "elapsed", shown)
        self._draw_timeline(now)

    def _draw_timeline(self, now: float) -> None:
        drawn = timeline(self._shown, self._timeline_width(), now)
        if drawn.plain != self._timeline_drawn:
            self._timeline_drawn = drawn.plain
            self.query_one("#timeline", Static).update(drawn)

    def _timeline_width(self) -> int:
        return self.query_one("#timeline").content_size.width or self.size.width // 2  # before the first layout

    def _draw_summary(self) -> None:
        rows = self.board.rows
        counts = {s: sum(1 for r in rows if r.status == s) for s in ("running", "queued")}
        finished = [r for r in rows if not r.live]
        verified = sum(r.verified for r in finished)
        text = Text.assemble(  # the counts first: the project's path is what a narrow terminal cuts
            (f"▶ {counts['running']} running  ", "cyan"),
            (f"· {counts['queued']} queued  ", "grey62"),
            f"{len(finished)} finished",
            (f" ({verified} verified)" if finished else "", "green" if verified == len(finished) else "red"),
            (f"  filter: {self.caste_filter}" if self.caste_filter else "", "yellow"),
            (f"  {self.project}", "grey62"),
        )
        text.no_wrap, text.overflow = True, "ellipsis"
        self.query_one("#summary", Static).update(text)

    def _selected(self) -> str | None:
        table = self.query_one("#workers", DataTable)
        if not self._shown or table.cursor_row < 0 or table.cursor_row >= len(self._shown):
            return None
        return self._shown[table.cursor_row].worker_id

    def _selected_row(self) -> Row | None:
        wanted = self._selected()
        return next((r for r in self._shown if r.worker_id == wanted), None)

    # --- keys ----------------------------------------------------------------------------------------------

    def action_quit_top(self) -> None:
        self.exit(0)

    def action_cursor(self, step: int) -> None:
        table = self.query_one("#workers", DataTable)
        table.move_cursor(row=max(0, table.cursor_row + step))

    @on(DataTable.RowSelected)
    def _open(self) -> None:
        row = self._selected_row()
        if row is not None and not isinstance(self.screen, ModalScreen):
            self.push_screen(WorkerScreen(self.board, row.worker_id))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.caste_filter
        box.focus()

    @on(Input.Changed, "#filter")
    def _filtered(self, event: Input.Changed) -> None:
        self.caste_filter = event.value.strip()
        self._redraw()

    @on(Input.Submitted, "#filter")
    def _filter_kept(self) -> None:
        self.query_one("#filter").display = False
        self.query_one("#workers").focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value, box.display = "", False
        self.caste_filter = ""
        self.query_one("#workers").focus()
        self._redraw()

    def action_cancel_worker(self) -> None:
        row = self._selected_row()
        if row is None or not row.live or row.server is None:
            self.notify("Select a queued or running worker to cancel.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes and row.server is not None:
                self._cancel(row.server, row.worker_id)

        self.push_screen(ConfirmCancel(row), confirmed)

    @work(thread=True, exclusive=False)
    def _cancel(self, server: str, worker_id: str) -> None:
        try:
            status = cancel(server, worker_id)
        except AetherError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.call_from_thread(self.notify, f"{worker_id}: {status}")


def cancel(server: str, worker_id: str) -> str:
    from .control import cancel as ask  # anyio's sockets: loaded only when a worker is cancelled

    return ask(server, worker_id)


class ConfirmCancel(ModalScreen[bool]):
    """Cancel this worker? It and every process it started end; its server records it as cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes, cancel it"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, row: Row) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(f"Cancel {self.row.worker_id} ({self.row.caste}, {self.row.status})?")
            yield Label("It and every process it started will end. y: yes, n: no")
            with Horizontal():
                yield Button("Cancel it (y)", variant="error", id="yes")
                yield Button("Keep it (n)", id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class WorkerScreen(Screen[None]):
    """One worker: its requests at the wire, its task's first lines, its transcript's last, its evidence."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.quit_top", "Quit"),
    ]

    def __init__(self, board: Board, worker_id: str) -> None:
        super().__init__()
        self.board, self.worker_id = board, worker_id

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="heading")
            yield DataTable(id="requests", cursor_type="none", show_row_labels=False)
            yield Static(id="about")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#requests", DataTable)
        for label in ("ROUTE", "STATUS", "MODEL", "TTFB", "TIME", "TOKENS", "DEPLOYMENT", "FALLBACK"):
            table.add_column(label)
        self._draw()
        self.set_interval(1.0, self._draw)

    def _draw(self) -> None:
        row = next((r for r in self.board.rows if r.worker_id == self.worker_id), None)
        details = self.board.details(self.worker_id)
        if row is None:
            return
        heading = Text.assemble(
            (row.worker_id, "bold"),
            f"  {row.caste} on {row.model or '(default)'}  ",
            status_text(row),
            (
                "  verified" if row.verified else ("" if row.live else "  NOT verified"),
                "green" if row.verified else "red",
            ),
        )
        if row.description:
            heading.append(f"\n{row.description}", style="italic")
        self.query_one("#heading", Static).update(heading)
        requests = details.get("requests") or []
        table = self.query_one("#requests", DataTable)
        if table.row_count != len(requests) or any(r.get("duration_s") is None for r in requests):
            table.clear()
            for request in requests:
                table.add_row(*request_cells(request, row.model))
        self.query_one("#about", Static).update(about(row, details))


def request_cells(request: dict[str, Any], assigned: str | None) -> list[str | Text]:
    """One request at the wire: route, status, model asked, time to first byte, duration, tokens, deployment,
    and whether a fallback served it (a declared one, or the proxy's own)."""
    status = request.get("status")
    tokens = sum(int(request.get(k) or 0) for k in ("input_tokens", "output_tokens", "cache_read_tokens"))
    tokens += int(request.get("cache_write_tokens") or 0)
    fallback = []
    if assigned is not None and request.get("model") not in (None, assigned):
        fallback.append("declared")
    if request.get("attempted_fallbacks"):
        fallback.append(f"proxy x{request['attempted_fallbacks']}")
    return [
        f"{request.get('method')} {str(request.get('path')).split('?')[0]}",
        Text(str(status or "…"), style="green" if status == 200 else "red") if status else Text("…"),
        str(request.get("model") or "-"),
        f"{request['ttfb_s'] * 1000:.0f}ms" if isinstance(request.get("ttfb_s"), int | float) else "-",
        duration(request["duration_s"]) if isinstance(request.get("duration_s"), int | float) else "…",
        f"{tokens:,}",
        str(request.get("model_id") or "-"),
        ", ".join(fallback) or ("refused" if request.get("refused") else "-"),
    ]


def about(row: Row, details: dict[str, Any]) -> Text:
    text = Text()
    text.append("\nTask (first lines)\n", style="bold")
    text.append((details.get("task_head") or "(not recorded)") + "\n")
    if details.get("worktree") or details.get("branch"):
        text.append("\nWorktree ", style="bold")
        text.append(f"{details.get('worktree') or '(removed)'} on {details.get('branch') or '-'}\n")
    evidence = details.get("routing_evidence") or []
    text.append("\nEvidence\n", style="bold")
    text.append("\n".join(evidence) + "\n" if evidence else "(when it finishes)\n")
    text.append("\nTranscript (last lines)\n", style="bold")
    text.append("\n".join(transcript_tail(row.transcript)) or "(nothing yet)")
    return text


def run(state_dir: Path, project: Path) -> int:
    """Run the view until `q`; its exit status."""
    status = ColonyApp(state_dir, project).run()
    return status if isinstance(status, int) else 0
