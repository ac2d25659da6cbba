"""`aether-mcp top` against real workers: Textual's headless pilot, and a real terminal (tmux).

The workers are real Claude Code processes started by real stdio servers, through the real LiteLLM proxy in
front of the local backend, so the deployments shown are the ones LiteLLM named on the wire.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import pilot_until, profile_for, stdio_server, structured, table_cells, wait_for
from mcp import Client
from textual.widgets import DataTable

from aether_mcp import procs
from aether_mcp.adapters import control
from aether_mcp.adapters.top.app import ColonyApp, ConfirmCancel, WorkerScreen
from aether_mcp.adapters.top.views import cell, columns_for, timeline
from aether_mcp.commands.board import LIVENESS_S, Board, Row
from aether_mcp.errors import AetherError
from aether_mcp.testing.backend import LocalBackend

pytestmark = pytest.mark.anyio


@contextmanager
def slow(backend: LocalBackend, model: str, seconds: float) -> Iterator[None]:
    """`model`'s answers take `seconds` at `backend` (a session's backend: put back after)."""
    backend.delays[model] = seconds
    try:
        yield
    finally:
        backend.delays.pop(model, None)


async def test_the_pilot_follows_real_workers(
    isolated: Path, litellm_proxy: str, routed_backend: LocalBackend, second_backend: LocalBackend
) -> None:
    """Rows appear as workers start, update, and finish with verdicts and deployments; Enter shows the
    requests at the wire; the filter keeps one caste; c cancels after a confirmation."""
    profile_for(isolated, litellm_proxy)
    app = ColonyApp(isolated / ".aether", isolated)
    with slow(routed_backend, "kimi-k2.5", 2.0), slow(second_backend, "glm-5", 2.0):
        async with Client(stdio_server(isolated)) as client, app.run_test(size=(160, 36)) as pilot:
            assert app.query_one("#empty").display and "No workers yet" in str(app.query_one("#empty").render())
            spawn = {"task": "say hi", "wait": False}
            builder = structured(await client.call_tool("spawn_worker", {"caste": "builder", **spawn}))["worker_id"]
            scout = structured(await client.call_tool("spawn_worker", {"caste": "scout", **spawn}))["worker_id"]
            await pilot_until(pilot, lambda: {builder, scout} <= set(table_cells(app)))
            shown = table_cells(app)
            assert (shown[builder]["caste"], shown[builder]["model"]) == ("builder", "kimi-k2.5")
            assert (shown[scout]["caste"], shown[scout]["model"]) == ("scout", "glm-5")
            assert {shown[builder]["status"], shown[scout]["status"]} <= {"· queued", "▶ running"}
            counted_running = ("▶ running", "1")  # its first request, counted before it is answered
            await pilot_until(
                pilot,
                lambda: (table_cells(app)[builder]["status"], table_cells(app)[builder]["requests"]) == counted_running,
            )
            await pilot_until(pilot, lambda: all(table_cells(app)[w]["status"] == "✓ done" for w in (builder, scout)))
            shown = table_cells(app)
            assert shown[builder]["served"] == "deployment-kimi-k2.5" and shown[builder]["verified"] == "✓"
            assert shown[scout]["served"] == "deployment-glm-5" and shown[scout]["verified"] == "✓"

            table = app.query_one("#workers", DataTable)
            table.move_cursor(row=table.get_row_index(builder))
            await pilot.press("enter")
            assert isinstance(app.screen, WorkerScreen)
            requests = app.screen.query_one("#requests", DataTable)
            rows = [[str(getattr(v, "plain", v)) for v in requests.get_row(k)] for k in requests.rows]
            messages = [r for r in rows if r[0] == "POST /v1/messages"]
            assert messages and all(r[1] == "200" and r[6] == "deployment-kimi-k2.5" for r in messages), rows
            about = str(app.screen.query_one("#about").render())
            assert "say hi" in about and "routing verified at the gateway" in about
            await pilot.press("escape")
            assert not isinstance(app.screen, WorkerScreen)

            await pilot.press("slash", "s", "c", "o", "enter")
            assert set(table_cells(app)) == {scout}
            await pilot.press("escape")
            assert set(table_cells(app)) == {builder, scout}

            with slow(routed_backend, "kimi-k2.5", 60.0):
                long = structured(await client.call_tool("spawn_worker", {"caste": "builder", **spawn}))["worker_id"]
                await pilot_until(pilot, lambda: table_cells(app).get(long, {}).get("status") == "▶ running")
                table.move_cursor(row=table.get_row_index(long))
                await pilot.press("c")
                assert isinstance(app.screen, ConfirmCancel)
                await pilot.press("n")  # kept: nothing is sent
                assert not isinstance(app.screen, ConfirmCancel)
                await pilot.pause(1.0)
                assert table_cells(app)[long]["status"] == "▶ running"
                await pilot.press("c", "y")
                await pilot_until(pilot, lambda: table_cells(app)[long]["status"] == "■ cancel")
                final = structured(await client.call_tool("get_worker", {"worker_id": long}))
    assert final["status"] == "cancelled"


def test_columns_give_way_in_order() -> None:
    every = [key for key, _, _ in columns_for(200)]
    assert every == [
        "worker",
        "status",
        "caste",
        "model",
        "verified",
        "elapsed",
        "served",
        "node",
        "cost",
        "tokens",
        "requests",
    ]
    narrow = [key for key, _, _ in columns_for(80)]
    assert narrow == every[: len(narrow)] and 5 <= len(narrow) < len(every)
    assert sum(width + 2 for _, _, width in columns_for(80)) + 2 <= 80


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_worker_column_takes_the_width_the_others_leave(width: int) -> None:
    """At 120 columns a worker's description was cut to 3 characters: the worker column now fills the screen."""
    columns = columns_for(width)
    assert sum(cells + 2 for _, _, cells in columns) + 2 == width
    assert columns[0][2] >= len("builder-0123abcd add the greeting") if width >= 120 else columns[0][2] >= 32


def test_a_worker_verified_with_no_deployment_named_was_served_as_asked() -> None:
    entry = {"worker_id": "b-1", "caste": "builder", "status": "succeeded", "routing_verified": True}
    assert cell(Row.of(entry), "served", 0.0) == "as asked"
    assert cell(Row.of({**entry, "routing_verified": False}), "served", 0.0) == "-"


def test_the_timeline_shows_a_wave_side_by_side_and_states_in_words() -> None:
    def row(worker_id: str, status: str, started: float, finished: float | None) -> Row:
        entry = {"worker_id": worker_id, "caste": "builder", "status": status, "routing_verified": True}
        return replace(Row.of(entry), started=started, finished=finished)

    wave = [row("b1", "running", 990, None), row("b2", "succeeded", 980, 990), row("b3", "failed", 980, 995)]
    lines = timeline(wave, 60, now=1_000.0).plain.splitlines()
    assert [line.split()[-1] for line in lines[:3]] == ["failed", "done", "running"]  # oldest first
    assert [line.split()[-2] for line in lines[:3]] == ["✗", "✓", "▶"]
    bars = [line[12:] for line in lines[:3]]
    starts = [bar.index("━") for bar in bars]
    assert starts[0] == starts[1] == 0 < starts[2]  # b3 and b2 started together, b1 later
    assert lines[3].split() == ["0s", "20.0s"]


async def test_top_in_a_real_terminal(
    isolated: Path, litellm_proxy: str, routed_backend: LocalBackend, second_backend: LocalBackend, tmp_path: Path
) -> None:
    """tmux, 100x30: empty at first; the workers of two MCP sessions of the project appear within 2 s with
    caste and model; their deployments and verdicts show once they finish; Enter shows the requests at the
    wire; q quits with status 0."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed: .ci/run installs it (apt-get install tmux)")
        pytest.skip("drives top in a real terminal, which tmux provides: tmux is not installed (apt-get install tmux)")
    profile_for(isolated, litellm_proxy)
    session = f"aether-top-{isolated.name}-{int(time.time())}"
    status_file = tmp_path / "status"
    # COLUMNS and LINES, which Textual would take over the terminal's own size, are the test runner's, not tmux's.
    command = f"env -u COLUMNS -u LINES {Path(sys.executable).parent / 'aether-mcp'} top; echo $? > {status_file}"
    tmux = ["tmux", "-L", session]  # a server of its own: the user's tmux sessions are not touched
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "30", "-c", str(isolated), "sh", "-c", command],
        check=True,
    )

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
        ).stdout

    async def shows(*words: str, seconds: float = 30) -> float:
        """How long it took the screen to show all of `words`."""
        began = time.monotonic()
        shown = await wait_for(lambda: all(word in screen() for word in words), seconds=seconds, interval=0.05)
        assert shown, f"{words} not shown:\n{screen()}"
        return time.monotonic() - began

    try:
        await shows("No workers yet", seconds=10)
        with slow(routed_backend, "kimi-k2.5", 3.0), slow(second_backend, "glm-5", 3.0):
            async with Client(stdio_server(isolated)) as first, Client(stdio_server(isolated)) as second:
                spawn = {"task": "say hi", "wait": False}
                builder = structured(await first.call_tool("spawn_worker", {"caste": "builder", **spawn}))
                scout = structured(await second.call_tool("spawn_worker", {"caste": "scout", **spawn}))
                appeared = await shows(builder["worker_id"], scout["worker_id"], "kimi-k2.5", "glm-5", seconds=2)
                for client, worker in ((first, builder), (second, scout)):
                    await client.call_tool("get_worker", {"worker_id": worker["worker_id"], "wait_s": 60})
        await shows("deployment-kimi-k2.5", "deployment-glm-5", "2 finished (2 verified)", seconds=5)
        lines = [line for line in screen().splitlines() if builder["worker_id"] in line or scout["worker_id"] in line]
        assert len(lines) == 2 and all("✓ done" in line for line in lines), lines
        subprocess.run([*tmux, "send-keys", "-t", session, "Enter"], check=True)
        # a worker's requests
        await shows("POST /v1/messages", "200", "DEPLOYMENT", "deployment-", "Evidence", seconds=5)
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
        assert await wait_for(status_file.exists, seconds=10), f"top did not quit:\n{screen()}"
        assert status_file.read_text().strip() == "0"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
    assert appeared <= 2


async def test_a_dead_servers_workers_are_not_shown_running(isolated: Path) -> None:
    """A worker whose server dies (killed outright: its note stays) is shown lost within the board's liveness
    check, though no file changed."""
    server = subprocess.Popen(["sleep", "60"])
    running = isolated / ".aether" / "running"
    running.mkdir(parents=True)
    note = {"worker_id": "builder-dead0001", "caste": "builder", "model": "m", "status": "running"}
    (running / "builder-dead0001.json").write_text(json.dumps({**note, "server": procs.identity(server.pid)}))
    board = Board(isolated / ".aether")
    assert board.refresh()
    assert [(r.status, r.live) for r in board.rows] == [("running", True)]
    server.kill()
    server.wait()

    def no_longer_running() -> bool:
        board.refresh()
        return board.rows[0].status != "running"

    assert await wait_for(no_longer_running, seconds=LIVENESS_S + 1)
    assert [(r.worker_id, r.status, r.live) for r in board.rows] == [("builder-dead0001", "interrupted", False)]


def test_only_top_loads_textual() -> None:
    """The server, the hook and the other commands start as fast as before: none of them imports Textual."""
    code = (
        "import sys\n"
        "import aether_mcp.adapters.cli, aether_mcp.adapters.server, aether_mcp.adapters.hook\n"
        "import aether_mcp.adapters.control, aether_mcp.commands.board\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'rich'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_top_without_textual_says_how_to_get_it(isolated: Path) -> None:
    code = (
        "import sys\nsys.modules['textual'] = None\nfrom aether_mcp.adapters.cli import main\nsys.exit(main(['top']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "aether-mcp top needs Textual" in done.stderr and "pip install 'aether-mcp[top]'" in done.stderr


async def test_it_fits_80_by_24(isolated: Path) -> None:
    """The columns that fit, nothing wrapped below the table, and the footer's keys, in 80x24."""
    running = isolated / ".aether" / "running"
    running.mkdir(parents=True)
    for n, caste in enumerate(["builder", "scout", "watcher", "architect"] * 3):
        note = {"worker_id": f"{caste}-{n:08x}", "caste": caste, "model": "kimi-k2.5", "status": "running"}
        started = datetime.now(UTC) - timedelta(seconds=30 * n)
        note |= {"started_at": started.isoformat(), "served_by": ["deployment deployment-kimi-k2.5 (x)"]}
        (running / f"{note['worker_id']}.json").write_text(json.dumps({**note, "server": procs.identity()}))
    app = ColonyApp(isolated / ".aether", isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        table = app.query_one("#workers", DataTable)
        assert [str(c.key.value) for c in table.columns.values()] == [k for k, _, _ in columns_for(80)]
        assert table.row_count == 12
        timeline_shown = app.query_one("#timeline")
        lines = str(timeline_shown.render()).splitlines()
        assert len(lines) == 9 and all(len(line) <= timeline_shown.content_size.width for line in lines)
        table.move_cursor(row=3)
        chosen = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        await pilot.resize_terminal(100, 30)  # the columns change: the cursor stays on its worker
        await pilot.pause(0.2)
        assert str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value) == chosen
        footer = {b.binding.description for b in app.active_bindings.values() if b.binding.show}
    assert {"Details", "Quit", "Cancel", "Filter caste"} <= footer


ODD_LOG_LINE = (
    '{"worker_id": "builder-0dd00001", "caste": "builder", "model": ["x"], "status": "succeeded",'
    ' "cost_usd": NaN, "duration_s": Infinity, "requests": "many", "tokens": {"input": "x"},'
    ' "served_by": "deployment-x", "started_at": "not a date", "routing_verified": "yes"}\n'
)
ODD_DETAILS = (
    '{"requests": [{"status": "x", "ttfb_s": NaN, "duration_s": "slow", "input_tokens": "many", "path": 5},'
    ' "not a request"], "routing_evidence": "not a list", "task_head": 5}'
)


async def test_odd_values_on_disk_show_as_dashes(isolated: Path, cli_env: dict[str, str]) -> None:
    """Attacker: a cloned repository ships `.aether/` with values of the wrong type, NaN and infinity: top
    and costs show them as unknown, and a server named with a surrogate gets no cancel."""
    state = isolated / ".aether"
    (state / "details").mkdir(parents=True)
    (state / "spawn-log.jsonl").write_text(ODD_LOG_LINE + "[1, 2]\n")
    (state / "details" / "builder-0dd00001.json").write_text(ODD_DETAILS)
    (state / "running").mkdir()
    for name in ("scout-0dd00002", "a"):  # two notes that name one worker: one is its own, one planted
        (state / "running" / f"{name}.json").write_text('{"worker_id": "scout-0dd00002", "status": "running"}')
    app = ColonyApp(state, isolated)
    async with app.run_test(size=(160, 36)) as pilot:
        await pilot.pause(0.3)
        shown = table_cells(app)["builder-0dd00001"]
        assert (shown["cost"], shown["elapsed"], shown["requests"], shown["tokens"]) == ("-", "-", "-", "-")
        assert shown["verified"] == "✗"  # "yes" is not true
        assert set(table_cells(app)) == {"builder-0dd00001", "scout-0dd00002"}
        table = app.query_one("#workers", DataTable)
        table.move_cursor(row=table.get_row_index("builder-0dd00001"))
        await pilot.press("enter")
        assert isinstance(app.screen, WorkerScreen)
        await pilot.pause(0.2)
        assert app.screen.query_one("#requests", DataTable).row_count == 1  # the one that is a request
        await pilot.press("escape")
        assert app.is_running
    costs = subprocess.run(["aether-mcp", "costs"], capture_output=True, text=True, env=cli_env, check=False)
    assert costs.returncode == 0, costs.stderr
    with pytest.raises(AetherError, match="names no server"):
        control.cancel("1\udcff/2", "builder-0dd00001")
