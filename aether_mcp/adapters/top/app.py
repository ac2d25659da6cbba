"""The Textual app of `aether-mcp top`: the workers table with its totals and timeline, a worker's screen, and
the confirmation before a cancel.

It reads what the servers write (see `commands.board`) twice a second and redraws only what changed; it talks
to a server only to cancel one of its workers (see `adapters.control`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from ...commands.board import Board, Row
from ...errors import AetherError
from .views import about, cell, columns_for, empty_state, request_cells, status_text, timeline, totals_table

REFRESH_S = 0.5


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
        self._clock_second = 0

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
        """Twice a second, what the servers wrote; once a second, the running workers' clocks."""
        changed = self.board.refresh()
        if changed:
            self._redraw()
        elif int(time.time()) != self._clock_second and any(r.status == "running" for r in self._shown):
            self._redraw_clock()

    def _rows(self) -> list[Row]:
        wanted = self.caste_filter.lower()
        return [r for r in self.board.rows if wanted in r.caste.lower()]

    def _redraw(self, *, columns_changed: bool = False) -> None:
        table = self.query_one("#workers", DataTable)
        columns = columns_for(self.size.width)
        now = time.time()
        rows = self._rows()
        selected = self._selected()  # before the table is rebuilt: the cursor stays on its worker
        if columns != self._columns or columns_changed:
            self._columns = columns
            table.clear(columns=True)
            for key, label, width in columns:
                table.add_column(label, key=key, width=width)
            self._shown = []
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
        self._clock_second = int(now)
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
        if row.wire:  # nothing of aether-mcp's runs it: Claude Code does, in the wrapped session
            self.notify("A sub-agent of a wrapped session is Claude Code's own: stop it in that session.")
            return

        def confirmed(yes: bool | None) -> None:
            if yes and row.server is not None:
                self._cancel(row.server, row.worker_id)

        self.push_screen(ConfirmCancel(row), confirmed)

    @work(thread=True, exclusive=False)
    def _cancel(self, server: str, worker_id: str) -> None:
        try:
            status = cancel(server, worker_id)
        except (AetherError, OSError) as exc:  # said in the view; a failed cancel must not end it
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.call_from_thread(self.notify, f"{worker_id}: {status}")


def cancel(server: str, worker_id: str) -> str:
    from ..control import cancel as ask  # anyio's sockets: loaded only when a worker is cancelled

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
        found = details.get("requests")  # read from a file: only what is a request's record is one
        requests = [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []
        table = self.query_one("#requests", DataTable)
        if table.row_count != len(requests) or any(r.get("duration_s") is None for r in requests):
            table.clear()
            for request in requests:
                table.add_row(*request_cells(request, row.model))
        self.query_one("#about", Static).update(about(row, details))
