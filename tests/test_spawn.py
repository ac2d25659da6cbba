"""spawn_worker through a real MCP client, with the real Claude Code CLI as the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import TOKEN, claude_processes, error_text, stdio_server, structured, wait_for, write_profile
from mcp import Client

from aether_mcp.adapters.server import build_server
from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend
from aether_mcp.workers.request import spawn_request

pytestmark = pytest.mark.anyio


async def test_one_stdio_session_routes_two_castes_to_their_models(colony_profile: Path, backend: LocalBackend) -> None:
    async with Client(stdio_server(colony_profile.parent)) as client:
        structured(await client.call_tool("set_caste_model", {"caste": "builder", "model": "minimax-2.5"}))
        structured(await client.call_tool("set_caste_model", {"caste": "scout", "model": "kimi-k2.5"}))
        builder = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"}))
        scout = structured(await client.call_tool("spawn_worker", {"caste": "scout", "task": "say hi"}))
    assert backend.models_asked() == ["minimax-2.5", "kimi-k2.5"]
    for result, model in ((builder, "minimax-2.5"), (scout, "kimi-k2.5")):
        assert (result["status"], result["model"], result["model_source"]) == ("succeeded", model, "override")
        assert result["routing_verified"] is True
        assert result["models_reported"] == [model]
        assert result["output"] == f"served-by {model}"
        assert result["error"] is None
        assert "claude-agent-sdk bundle" in result["cli"] or "claude on PATH" in result["cli"]
    log = [
        json.loads(line) for line in (colony_profile.parent / ".aether" / "spawn-log.jsonl").read_text().splitlines()
    ]
    assert [(e["caste"], e["model"], e["routing_verified"]) for e in log] == [
        ("builder", "minimax-2.5", True),
        ("scout", "kimi-k2.5", True),
    ]
    transcript = Path(builder["transcript_path"]).read_text()
    assert '"subtype":"init"' in transcript and TOKEN not in transcript


async def test_the_task_reaches_the_worker_on_stdin(colony_profile: Path, backend: LocalBackend) -> None:
    task = "review this: " + "x" * 200_000  # past the 128 KiB cap on one argument
    async with Client(build_server(ProfileStore())) as client:
        result = structured(await client.call_tool("spawn_worker", {"caste": "watcher", "task": task}))
    assert result["status"] == "succeeded"
    assert result["usage"]["input_tokens"] > 50_000  # the backend counted the task it received


async def test_progress_notifications_while_waiting(colony_profile: Path, backend: LocalBackend) -> None:
    notes: list[tuple[float, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        notes.append((done, message))

    async with Client(build_server(ProfileStore())) as client:
        await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi"}, progress_callback=progress)
    # from its start (before its first turn ends, which a one-turn worker's call would otherwise wait in silence)
    assert [done for done, _ in notes] == list(range(1, len(notes) + 1))
    assert "builder on kimi-k2.5: running, turn 1" in [message for _, message in notes]


async def test_an_explicit_model_for_one_worker(colony_profile: Path, backend: LocalBackend) -> None:
    async with Client(build_server(ProfileStore())) as client:
        result = structured(
            await client.call_tool("spawn_worker", {"caste": "scout", "task": "hi", "model": "minimax-2.5"})
        )
    assert (result["model"], result["model_source"], result["routing_verified"]) == ("minimax-2.5", "explicit", True)


async def test_three_background_workers_at_once(colony_profile: Path, backend: LocalBackend) -> None:
    backend.gather = 3  # each request waits (up to 5 s) until three are in flight
    async with Client(build_server(ProfileStore())) as client:
        ids = []
        for caste in ("builder", "scout", "watcher"):
            result = structured(await client.call_tool("spawn_worker", {"caste": caste, "task": "hi", "wait": False}))
            assert result["status"] in ("queued", "running")
            ids.append(result["worker_id"])
        listed = structured(await client.call_tool("list_workers", {}))["workers"]
        assert [w["worker_id"] for w in listed] == ids[::-1]
        assert {w["status"] for w in listed} <= {"queued", "running"}
        finals = [structured(await client.call_tool("get_worker", {"worker_id": i, "wait_s": 60})) for i in ids]
        listed = structured(await client.call_tool("list_workers", {}))["workers"]
    assert [f["status"] for f in finals] == ["succeeded"] * 3
    assert [f["model"] for f in finals] == ["kimi-k2.5", "glm-5", "minimax-2.5"]
    assert all(f["routing_verified"] for f in finals)
    assert [w["status"] for w in listed] == ["succeeded"] * 3
    assert sorted(backend.models_asked()) == ["glm-5", "kimi-k2.5", "minimax-2.5"]
    assert backend.max_in_flight == 3  # the three were answered side by side, not one after another


async def test_spawns_past_the_limit_queue(isolated: Path, backend: LocalBackend) -> None:
    write_profile(isolated / "model-profiles.yaml", backend.url, "workers: {max_concurrent_workers: 1}\n")
    backend.delay_s = 0.5
    async with Client(build_server(ProfileStore())) as client:
        first = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "a", "wait": False}))
        second = structured(await client.call_tool("spawn_worker", {"caste": "scout", "task": "b", "wait": False}))

        async def states() -> dict[str, str]:
            listed = structured(await client.call_tool("list_workers", {}))["workers"]
            return {w["worker_id"]: w["status"] for w in listed}

        async def first_runs() -> bool:
            return (await states())[first["worker_id"]] == "running"

        assert await wait_for(first_runs)
        assert await states() == {first["worker_id"]: "running", second["worker_id"]: "queued"}
        done = structured(await client.call_tool("get_worker", {"worker_id": second["worker_id"], "wait_s": 60}))
    assert done["status"] == "succeeded"
    assert backend.models_asked() == ["kimi-k2.5", "glm-5"]


async def test_a_backend_answering_as_another_model_is_not_verified(isolated: Path) -> None:
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], claims={"kimi-k2.5": "cheap-model-7b"}) as lying:
        write_profile(isolated / "model-profiles.yaml", lying.url)
        async with Client(build_server(ProfileStore())) as client:
            result = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi"}))
    assert result["routing_verified"] is False
    assert "cheap-model-7b" in result["models_reported"] and "kimi-k2.5" in result["models_reported"]
    [mismatch] = result["routing_mismatches"]
    assert (mismatch["code"], mismatch["asked"], mismatch["seen"]) == (
        "answer_names_other",
        "kimi-k2.5",
        "cheap-model-7b",
    )
    assert mismatch["message"] in result["error"]


# --- refusals: before any worker starts, fast, with what to do ---------------


async def refused(tool_args: dict[str, Any]) -> tuple[str, float]:
    async with Client(build_server(ProfileStore())) as client:
        started = time.monotonic()
        text = error_text(await client.call_tool("spawn_worker", tool_args))
        return text, time.monotonic() - started


async def test_proxy_down_is_refused_fast(isolated: Path) -> None:
    with LocalBackend() as gone:
        url = gone.url
    write_profile(isolated / "model-profiles.yaml", url)
    text, took = await refused({"caste": "builder", "task": "hi"})
    assert f"The proxy at {url} is not reachable" in text
    assert took < 2


async def test_a_wrong_token_is_refused(isolated: Path, backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_TEST_TOKEN", "sk-wrong-token")
    write_profile(isolated / "model-profiles.yaml", backend.url)
    text, took = await refused({"caste": "builder", "task": "hi"})
    assert "rejected the workers' token (HTTP 401: authentication_error invalid x-api-key or bearer token)" in text
    assert "sk-wrong-token" not in text
    assert took < 2


async def test_an_unrouted_model_is_refused_with_the_routed_list(colony_profile: Path, backend: LocalBackend) -> None:
    text, took = await refused({"caste": "builder", "task": "hi", "model": "gpt-9"})
    assert "does not route model 'gpt-9'. It routes: kimi-k2.5, glm-5, minimax-2.5." in text
    assert took < 2
    assert backend.models_asked() == []


async def test_a_missing_cli_is_an_error(colony_profile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_CLAUDE_CLI", "/nonexistent/claude")
    text, _ = await refused({"caste": "builder", "task": "hi"})
    assert "The Claude Code CLI named by AETHER_CLAUDE_CLI (/nonexistent/claude) is not an executable file." in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"caste": "builder", "task": "hi", "cwd": "relative/dir"}, "cwd must be an absolute path"),
        ({"caste": "builder", "task": "hi", "cwd": "/nonexistent/dir"}, "does not exist"),
        ({"caste": "builder", "task": "hi", "cwd": "/etc/hostname"}, "is not a directory"),
        ({"caste": "scot", "task": "hi"}, "Unknown caste 'scot'. Known castes: builder, scout, watcher."),
        ({"caste": "builder", "task": "   "}, "The task is empty"),
        ({"caste": "builder", "task": "hi", "timeout_s": -1}, "The timeout must be more than 0"),
    ],
)
async def test_bad_spawn_arguments(
    colony_profile: Path, backend: LocalBackend, args: dict[str, Any], message: str
) -> None:
    text, _ = await refused(args)
    assert message in text
    assert backend.models_asked() == []


# --- workers that must be stopped ---------------------------------------------


async def test_a_worker_past_its_timeout_is_killed(colony_profile: Path, backend: LocalBackend) -> None:
    backend.delay_s = 30
    async with Client(build_server(ProfileStore())) as client:
        started = time.monotonic()
        result = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "timeout_s": 2}))
        took = time.monotonic() - started
    assert result["status"] == "timed_out"
    assert "ran past its timeout of 2 s and was killed" in result["error"]
    assert took < 8
    assert claude_processes(str(colony_profile.parent.parent)) == []


async def test_cancel_worker_kills_it(colony_profile: Path, backend: LocalBackend) -> None:
    backend.delay_s = 30
    async with Client(build_server(ProfileStore())) as client:
        spawned = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "wait": False}))
        assert await wait_for(backend.models_asked)
        cancelled = structured(await client.call_tool("cancel_worker", {"worker_id": spawned["worker_id"]}))
        assert cancelled["status"] == "cancelled"
        assert claude_processes(str(colony_profile.parent.parent)) == []
        unknown = await client.call_tool("get_worker", {"worker_id": "nobody-1"})
        assert "No worker 'nobody-1'" in error_text(unknown)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_a_killed_server_takes_its_workers_with_it(
    colony_profile: Path, backend: LocalBackend, sig: signal.Signals
) -> None:
    backend.delay_s = 60
    marker = str(colony_profile.parent.parent)
    process = subprocess.Popen(
        [sys.executable, "-m", "aether_mcp", "spawn", "builder", "hi"],
        cwd=colony_profile.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert await wait_for(lambda: claude_processes(marker) and backend.models_asked(), 15), "no worker started"
        process.send_signal(sig)  # SIGKILL leaves no cleanup: the kernel's parent-death signal ends the CLI
        process.wait(10)
    finally:
        process.kill()
    assert await wait_for(lambda: not claude_processes(marker), 5)


async def test_stdio_server_sigterm_kills_running_workers(colony_profile: Path, backend: LocalBackend) -> None:
    backend.delay_s = 60
    marker = str(colony_profile.parent.parent)
    async with Client(stdio_server(colony_profile.parent)) as client:
        structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "wait": False}))
        assert await wait_for(backend.models_asked, 15)
        assert claude_processes(marker)
    # leaving the client closes stdin, then SIGTERM after 2 s: the workers must be gone either way
    assert await wait_for(lambda: not claude_processes(marker), 5)


async def test_cancelling_the_request_kills_the_worker(colony_profile: Path, backend: LocalBackend) -> None:
    backend.delay_s = 30
    marker = str(colony_profile.parent.parent)
    async with Client(build_server(ProfileStore())) as client:
        with anyio.move_on_after(3):
            await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi"})
        statuses: list[str] = []

        async def cancelled() -> bool:
            statuses[:] = [w["status"] for w in structured(await client.call_tool("list_workers", {}))["workers"]]
            return statuses == ["cancelled"]

        assert await wait_for(cancelled, 5), statuses
        assert claude_processes(marker) == []


# --- warm workers --------------------------------------------------------------


async def test_warm_workers_take_only_the_tasks_they_match(isolated: Path, backend: LocalBackend) -> None:
    """A warm worker serves only the spawn it was started for. (Finding 15: this test once failed on a loaded
    machine, waiting for a count of processes that a worker still exiting could satisfy.)"""
    from aether_mcp.workers.colony import Colony

    write_profile(isolated / "model-profiles.yaml", backend.url, "workers: {warm_workers: {builder: 1}}\n")
    marker = str(isolated.parent)
    async with Colony(ProfileStore()) as colony:
        assert await wait_for(lambda: len(claude_processes(marker)) == 1)  # pre-started, waiting for a task
        assert backend.models_asked() == []  # a warm worker sends nothing before its task
        results = []
        (isolated / "sub").mkdir()
        for args in ({}, {"model": "glm-5"}, {"cwd": str(isolated / "sub")}, {}):
            worker = await colony.spawn(spawn_request(caste="builder", task="say hi", **args))
            await worker.done.wait()
            results.append(worker.record())
            # refilled behind the take: what the next spawn needs is a warm worker waiting in the pool, and the
            # worker that ran gone (on a loaded machine it may take seconds to exit, and the refill to start)
            assert await wait_for(lambda: colony.warm_waiting() == len(claude_processes(marker)) == 1, seconds=60)
    assert [(r.warm, r.status, r.routing_verified) for r in results] == [
        (True, "succeeded", True),
        (False, "succeeded", True),  # another model: a cold worker
        (False, "succeeded", True),  # another cwd: a cold worker
        (True, "succeeded", True),
    ]
    assert backend.models_asked() == ["kimi-k2.5", "glm-5", "kimi-k2.5", "kimi-k2.5"]
    assert await wait_for(lambda: claude_processes(marker) == [])  # the pool dies with the colony


async def test_idle_warm_workers_are_reaped(isolated: Path, backend: LocalBackend) -> None:
    from aether_mcp.workers.colony import Colony

    extra = "workers: {warm_workers: {scout: 2}, warm_idle_s: 1}\n"
    write_profile(isolated / "model-profiles.yaml", backend.url, extra)
    marker = str(isolated.parent)
    async with Colony(ProfileStore()):
        assert await wait_for(lambda: len(claude_processes(marker)) == 2)
        assert await wait_for(lambda: claude_processes(marker) == [], seconds=8)


async def test_a_spawn_does_not_stall_the_loop_that_carries_the_other_workers(
    colony_profile: Path, backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 14: the git a spawn with a cwd runs (the project's top), and the profile's parsing, ran on the event
    loop that also carries every worker's stream through the gateway. With a git that takes a second, the loop
    must still turn over at once."""
    shim = tmp_path / "slow-git"
    shim.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    (shim / "git").write_text(f'#!/bin/sh\nsleep 1\nexec {real_git} "$@"\n')
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    (colony_profile.parent / "sub").mkdir()
    gaps: list[float] = []
    async with Client(build_server(ProfileStore())) as client:

        async def heartbeat() -> None:
            last = time.monotonic()
            while True:
                await anyio.sleep(0.01)  # the beat itself: a gap much longer than it is the loop stalled
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as group:
            group.start_soon(heartbeat)
            began = time.monotonic()
            arguments = {"caste": "builder", "task": "hi", "cwd": str(colony_profile.parent / "sub"), "wait": False}
            structured(await client.call_tool("spawn_worker", arguments))
            took = time.monotonic() - began
            group.cancel_scope.cancel()
    assert took >= 1.0  # the slow git did run for this spawn
    assert max(gaps) < 0.5  # and the loop went on meanwhile
