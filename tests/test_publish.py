"""What servers publish of their workers for `aether-mcp top`, and how top stops a worker through its server.

The test process stands where the user's terminal does: beside the stdio servers (it is their parent through
the MCP client), not below any of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import TOKEN, as_another_user, claude_processes, stdio_server, structured, wait_for, write_profile
from mcp import Client

from aether_mcp.adapters import control
from aether_mcp.errors import AetherError
from aether_mcp.testing.backend import LocalBackend, Turn
from aether_mcp.workers import publish
from aether_mcp.workers.spawn_log import read_running, read_spawn_log

pytestmark = pytest.mark.anyio

TASK = "Map the parser.\nList every module it imports.\nSay which are unused.\nKeep it short.\nFifth line."


def note_of(project: Path, worker_id: str) -> dict[str, Any] | None:
    path = project / ".aether" / "running" / f"{worker_id}.json"
    return json.loads(path.read_text()) if path.exists() else None


def published(project: Path) -> list[Path]:
    """The notes and details as they stand (a temp file being renamed into place is not one yet)."""
    folders = [project / ".aether" / "running", project / ".aether" / "details"]
    return [p for folder in folders if folder.is_dir() for p in folder.iterdir() if not p.name.startswith(".")]


def every_published_byte(project: Path) -> bytes:
    return b"".join(p.read_bytes() for p in published(project))


async def test_a_running_worker_is_published_as_it_goes(isolated: Path) -> None:
    """Queued, running with its requests counted while they run, then finished: the note gives way to the log
    line, and the details keep the task's first lines, the requests at the wire and the evidence."""
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], delays={"kimi-k2.5": 3.0}) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(stdio_server(isolated)) as client:
            started = structured(
                await client.call_tool(
                    "spawn_worker", {"caste": "builder", "task": TASK, "description": "map", "wait": False}
                )
            )
            worker_id = started["worker_id"]
            assert note_of(isolated, worker_id) is not None  # written before the spawn's answer
            # The first request is under way (the model takes 3 s): the note counts it before it is answered.
            assert await wait_for(lambda: (note_of(isolated, worker_id) or {}).get("requests") == 1, seconds=20)
            live = note_of(isolated, worker_id)
            assert live is not None
            assert (live["status"], live["caste"], live["model"], live["description"]) == (
                "running",
                "builder",
                "kimi-k2.5",
                "map",
            )
            running_details = publish.read_details(isolated / ".aether", worker_id)
            assert running_details is not None
            assert running_details["task_head"] == "\n".join(TASK.splitlines()[:4])
            assert [(r["path"].split("?")[0], r["model"]) for r in running_details["requests"]] == [
                ("/v1/messages", "kimi-k2.5")
            ]
            assert {oct(p.stat().st_mode & 0o777) for p in published(isolated)} == {"0o600"}
            assert TOKEN.encode() not in every_published_byte(isolated)
            final = structured(await client.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 60}))
    assert final["status"] == "succeeded"
    assert note_of(isolated, worker_id) is None
    assert read_spawn_log(isolated / ".aether" / "spawn-log.jsonl", 5)[0]["worker_id"] == worker_id
    finished = publish.read_details(isolated / ".aether", worker_id)
    assert finished is not None
    assert finished["routing_evidence"] == final["routing_evidence"]
    assert finished["requests"][0]["status"] == 200 and finished["requests"][0]["ttfb_s"] is not None
    assert TOKEN.encode() not in every_published_byte(isolated)


async def test_workers_lists_the_queued_and_running_of_every_session(isolated: Path, cli_env: dict[str, str]) -> None:
    """Two sessions of one project: one runs a worker and queues another (one at a time), the other runs one."""
    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5"], delays={"kimi-k2.5": 6.0, "glm-5": 6.0}) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url, "workers: {max_concurrent_workers: 1}\n")
        async with Client(stdio_server(isolated)) as first, Client(stdio_server(isolated)) as second:
            spawn = {"task": "say hi", "wait": False}
            ids = [
                structured(await first.call_tool("spawn_worker", {"caste": "builder", **spawn}))["worker_id"],
                structured(await first.call_tool("spawn_worker", {"caste": "builder", **spawn}))["worker_id"],
                structured(await second.call_tool("spawn_worker", {"caste": "scout", **spawn}))["worker_id"],
            ]
            listed = subprocess.run(
                ["aether-mcp", "workers", "--json"], capture_output=True, text=True, env=cli_env, check=True
            )
            for worker_id in ids:
                await first.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 60})
                await second.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 60})
    statuses = {e["worker_id"]: (e["caste"], e["status"]) for e in json.loads(listed.stdout)}
    assert statuses == {
        ids[0]: ("builder", "running"),
        ids[1]: ("builder", "queued"),
        ids[2]: ("scout", "running"),
    }
    assert len({e["server"] for e in json.loads(listed.stdout)}) == 2  # two servers' workers


async def test_what_ran_recently_is_every_sessions_each_marked_mine_or_not(isolated: Path) -> None:
    """ "What ran recently?": one session ran a builder, another a scout. Each sees only its own by default, and
    both in the project's listing, its own marked mine."""
    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5"]) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(stdio_server(isolated)) as first, Client(stdio_server(isolated)) as second:
            built = structured(await first.call_tool("spawn_worker", {"caste": "builder", "task": "hi"}))
            scouted = structured(await second.call_tool("spawn_worker", {"caste": "scout", "task": "hi"}))
            own = structured(await first.call_tool("list_workers", {}))
            project = structured(await first.call_tool("list_workers", {"scope": "project"}))
    assert [w["worker_id"] for w in own["workers"]] == [built["worker_id"]]
    listed = {w["worker_id"]: (w["caste"], w["status"], w["mine"]) for w in project["workers"]}
    assert listed == {
        built["worker_id"]: ("builder", "succeeded", True),
        scouted["worker_id"]: ("scout", "succeeded", False),
    }
    assert [w["worker_id"] for w in project["workers"]] == [scouted["worker_id"], built["worker_id"]]  # newest first


async def test_top_cancels_a_worker_through_its_server(isolated: Path) -> None:
    """The worker ends as its session's cancel would end it: killed with its processes, logged as cancelled."""
    marker = f"aether-cancel-{os.getpid()}"
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], delays={"kimi-k2.5": 60.0}) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(stdio_server(isolated)) as client:
            started = structured(
                await client.call_tool("spawn_worker", {"caste": "builder", "task": marker, "wait": False})
            )
            worker_id = started["worker_id"]
            assert await wait_for(lambda: (note_of(isolated, worker_id) or {}).get("requests") == 1, seconds=20)
            server = read_running(isolated / ".aether")[0]["server"]
            assert control.cancel(server, worker_id) == "cancelled"
            final = structured(await client.call_tool("get_worker", {"worker_id": worker_id}))
            assert final["status"] == "cancelled"
            assert claude_processes(marker) == []
            with pytest.raises(AetherError, match="No worker 'builder-nope' in this server"):
                control.cancel(server, "builder-nope")
    assert read_spawn_log(isolated / ".aether" / "spawn-log.jsonl", 1)[0]["status"] == "cancelled"
    with pytest.raises(AetherError, match="is gone"):
        control.cancel(server, worker_id)  # its server has ended


PROBE = """
import json, pathlib, sys
from aether_mcp.adapters.control import cancel
note = [json.loads(p.read_text()) for p in pathlib.Path(".aether/running").glob("scout-*.json")][0]
try:
    print(sys.argv[1], "CANCELLED", cancel(note["server"], note["worker_id"]))
except Exception as exc:
    print(sys.argv[1], "refused", type(exc).__name__)
"""


async def test_a_worker_cannot_cancel_its_siblings(isolated: Path) -> None:
    """Attacker: a rogue worker's Bash reads its server's notes and asks the server to cancel a sibling, from
    below the server, and from a process it detached (reparented away from the server, its mark kept)."""
    (isolated / "probe.py").write_text(PROBE)
    command = f"{sys.executable} probe.py BELOW; ({sys.executable} probe.py DETACHED > detached.txt 2>&1 &)"
    # the detached probe answers on its own time: wait (up to 20 s) until it has, then show what it said
    command += "; for _ in $(seq 200); do grep -qs DETACHED detached.txt && break; sleep 0.1; done; cat detached.txt"
    script = {"kimi-k2.5": [Turn(tool="Bash", tool_input={"command": command, "description": "probe"})]}
    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5"], scripts=script, delays={"glm-5": 15.0}) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(stdio_server(isolated)) as client:
            scout = structured(await client.call_tool("spawn_worker", {"caste": "scout", "task": "x", "wait": False}))
            rogue = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "probe"}))
            sibling = structured(await client.call_tool("get_worker", {"worker_id": scout["worker_id"], "wait_s": 60}))
    said = Path(rogue["transcript_path"]).read_text()
    assert "BELOW refused AetherError" in said and "DETACHED refused AetherError" in said, said[-3000:]
    assert "CANCELLED" not in said
    assert sibling["status"] == "succeeded"


async def test_the_tasks_first_lines_are_redacted_before_they_are_cut(colony_profile: Path, backend: object) -> None:
    """A token that straddles the cut of the details' first lines leaves none of its characters behind."""
    task = "x" * 390 + TOKEN + "\nsecond line"
    async with Client(stdio_server(colony_profile.parent)) as client:
        done = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": task}))
    details = publish.read_details(colony_profile.parent / ".aether", done["worker_id"])
    assert details is not None and details["task_head"].startswith("x" * 390)
    assert TOKEN[:6] not in details["task_head"]


@as_another_user
async def test_another_user_cannot_cancel(isolated: Path) -> None:
    """Attacker: another local user who knows the server's control address (an abstract socket has no mode)."""
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], delays={"kimi-k2.5": 8.0}) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(stdio_server(isolated)) as client:
            started = structured(
                await client.call_tool("spawn_worker", {"caste": "builder", "task": "x", "wait": False})
            )
            worker_id = started["worker_id"]
            note = note_of(isolated, worker_id)
            assert note is not None
            knock = (
                "import socket\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(10)\n"
                f"s.connect({control.address(note['server'])!r})\n"
                "try:\n"
                f'  s.sendall(b\'{{"cancel": "{worker_id}"}}\\n\')\n'
                "  print(repr(s.recv(100)))\n"
                "except OSError as e:\n  print(type(e).__name__)\n"
            )
            knocked = subprocess.run(
                ["/usr/bin/python3", "-c", knock], capture_output=True, text=True, user=65534, timeout=30, check=True
            )
            assert knocked.stdout.strip() in ("b''", "ConnectionResetError", "BrokenPipeError")  # closed with no answer
            final = structured(await client.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 60}))
    assert final["status"] == "succeeded"


def test_the_control_rule() -> None:
    me = os.getpid()
    assert control.may_control(me, os.getuid(), server_pid=-1)
    assert not control.may_control(me, os.getuid(), server_pid=me)  # the server itself
    assert not control.may_control(me, os.getuid(), server_pid=os.getppid())  # below the server
    assert not control.may_control(me, os.getuid() + 1, server_pid=-1)  # another user


def test_details_are_read_only_by_a_plain_worker_id(isolated: Path) -> None:
    state = isolated / ".aether"
    (state / "details").mkdir(parents=True)
    (state / "secret.json").write_text('{"x": 1}')
    assert publish.read_details(state, "../secret") is None
    (state / "details" / "builder-1.json").symlink_to(state / "secret.json")
    assert publish.read_details(state, "builder-1") is None  # a planted link is not followed


def test_only_the_most_recent_details_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "details"
    folder.mkdir()
    for n in range(11):
        path = folder / f"w{n}.json"
        path.write_text("{}")
        os.utime(path, (time.time() - 100 + n, time.time() - 100 + n))
    publish.prune(folder, keep=10)  # within a tenth over: nothing yet
    assert len(list(folder.iterdir())) == 11
    (folder / "w11.json").write_text("{}")
    publish.prune(folder, keep=10)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"w{n}.json" for n in range(2, 12))
