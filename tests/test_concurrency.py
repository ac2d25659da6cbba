"""Several writers, killed writers, and load: nothing is lost, the file always parses.

The counts here are the ones docs/reliability.md reports.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import comments, write_profile
from mcp import Client, StdioServerParameters

from aether_mcp.profile import yaml_edit
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import LocalBackend

pytestmark = pytest.mark.anyio

SETS_PER_WRITER = 50
HAMMER_SETS = 25
KILL_TRIALS = 100
CONCURRENT_GETS = 200
CONCURRENT_SPAWNS = 20
SPAWN_LIMIT = 4


def server(profile: Path, env: dict[str, str]) -> StdioServerParameters:
    args = ["-m", "aether_mcp", "serve", "--profiles", str(profile), "--log-level", "WARNING"]
    return StdioServerParameters(command=sys.executable, args=args, cwd=str(profile.parent), env=env)


def cli_loop(profile: Path, env: dict[str, str], caste: str, values: list[str]) -> subprocess.Popen[str]:
    """A shell loop of `aether-mcp caste-models set`, one process per call, as a user's scripts would run it."""
    sets = " && ".join(
        f"aether-mcp --profiles {profile} caste-models set {caste}={value} >/dev/null 2>&1" for value in values
    )
    return subprocess.Popen(["bash", "-c", sets], env=env, text=True)


async def mcp_loop(profile: Path, env: dict[str, str], caste: str, values: list[str]) -> None:
    async with Client(server(profile, env)) as client:
        for value in values:
            result = await client.call_tool("set_caste_model", {"caste": caste, "model": value})
            assert not result.is_error, result.content


async def test_four_processes_on_their_own_castes_lose_no_update(aether_profile: Path, cli_env: dict[str, str]) -> None:
    original = aether_profile.read_text()
    plan = {
        caste: [f"{caste}-m{i}" for i in range(SETS_PER_WRITER)] for caste in ("builder", "scout", "watcher", "oracle")
    }
    shells = [cli_loop(aether_profile, cli_env, caste, plan[caste]) for caste in ("builder", "scout")]
    async with anyio.create_task_group() as group:
        for caste in ("watcher", "oracle"):
            group.start_soon(mcp_loop, aether_profile, cli_env, caste, plan[caste])
    for shell in shells:
        assert shell.wait(300) == 0
    text = aether_profile.read_text()
    profile = parse_profile(text, aether_profile, {})
    assert profile.user_overrides == {caste: values[-1] for caste, values in plan.items()}
    assert comments(text) == comments(original)
    assert text.startswith(original)


async def test_one_caste_hammered_from_four_processes_always_parses(
    aether_profile: Path, cli_env: dict[str, str]
) -> None:
    plan = {w: [f"w{w}-v{i}" for i in range(HAMMER_SETS)] for w in range(4)}
    written = {value for values in plan.values() for value in values}
    seen: list[str | None] = []
    broken: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text = aether_profile.read_text()
            try:
                overrides = parse_profile(text, aether_profile, {}).user_overrides or {}
            except Exception as exc:  # noqa: BLE001 (any failure to parse is what this test hunts)
                broken.append(f"{exc}: {text!r}")
                continue
            seen.append(overrides.get("scout"))

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        shells = [cli_loop(aether_profile, cli_env, "scout", plan[w]) for w in (0, 1)]
        async with anyio.create_task_group() as group:
            for w in (2, 3):
                group.start_soon(mcp_loop, aether_profile, cli_env, "scout", plan[w])
        for shell in shells:
            assert shell.wait(300) == 0
    finally:
        stop.set()
        watcher.join()
    assert broken == []
    assert len(seen) > 100
    assert set(seen) <= written | {None}
    final = parse_profile(aether_profile.read_text(), aether_profile, {}).user_overrides or {}
    assert final["scout"] in {values[-1] for values in plan.values()}


WRITER = """
import sys
from aether_mcp.profile.store import ProfileStore
store = ProfileStore(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    store.set_override("scout", f"v{i}")
    i += 1
"""


def test_a_writer_killed_at_random_moments_never_leaves_a_broken_file(
    aether_profile: Path, cli_env: dict[str, str]
) -> None:
    original = aether_profile.read_text()
    rng = random.Random(20261125)
    left_temp_files = 0
    for _ in range(KILL_TRIALS):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(aether_profile)], stdout=subprocess.PIPE, text=True, env=cli_env
        )
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        threading.Event().wait(rng.uniform(0, 0.03))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        text = aether_profile.read_text()
        overrides = parse_profile(text, aether_profile, {}).user_overrides or {}
        value = overrides.get("scout")
        # old or new, whole: the text is exactly what one complete write produces
        assert text == original or (value is not None and text == yaml_edit.set_override(original, "scout", value))
        left_temp_files += len(list(aether_profile.parent.glob(".model-profiles.yaml.*.tmp")))
    # the next write clears whatever a killed writer left behind (a reset with no override writes nothing)
    for words in (["set", "scout=glm-5"], ["reset", "scout"]):
        subprocess.run(
            ["aether-mcp", "--profiles", str(aether_profile), "caste-models", *words], env=cli_env, check=True
        )
    assert list(aether_profile.parent.glob(".model-profiles.yaml.*.tmp")) == []
    assert aether_profile.read_text() == original
    print(f"{KILL_TRIALS} kills, {left_temp_files} left a temp file for the next write to remove")


async def test_200_concurrent_lookups_over_one_stdio_session(aether_profile: Path, cli_env: dict[str, str]) -> None:
    castes = ["prime", "architect", "oracle", "builder", "scout", "route_setter", "watcher"]
    expected = parse_profile(aether_profile.read_text(), aether_profile, {})
    answers: dict[int, Any] = {}
    async with Client(server(aether_profile, cli_env)) as client:

        async def ask(i: int) -> None:
            caste = castes[i % len(castes)]
            result = await client.call_tool("get_caste_model", {"caste": caste})
            answers[i] = (caste, result)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for i in range(CONCURRENT_GETS):
                    group.start_soon(ask, i)
    assert len(answers) == CONCURRENT_GETS
    for caste, result in answers.values():
        assert not result.is_error
        assert result.structured_content["castes"][0]["model"] == expected.worker_models[caste]


async def test_20_background_spawns_keep_the_limit_and_the_queue_order(isolated: Path) -> None:
    models = [f"m{i:02d}" for i in range(CONCURRENT_SPAWNS)]
    # each request waits (up to 5 s) until the limit's worth are in flight, then 0.5 s more
    with LocalBackend(token="sk-load-test", models=models, delay_s=0.5, gather=SPAWN_LIMIT) as backend:
        profile = write_profile(
            isolated / "model-profiles.yaml", backend.url, f"workers: {{max_concurrent_workers: {SPAWN_LIMIT}}}\n"
        )
        profile.write_text(profile.read_text().replace("${AETHER_TEST_TOKEN:-sk-aether-test-7c1d9e}", "sk-load-test"))
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        async with Client(server(profile, env)) as client:
            ids = []
            for model in models:
                result = await client.call_tool(
                    "spawn_worker", {"caste": "builder", "task": "hi", "model": model, "wait": False}
                )
                assert not result.is_error, result.content
                ids.append(result.structured_content["worker_id"])
            finals = []
            for worker_id in ids:
                done = await client.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 120})
                finals.append(done.structured_content)
        asked = backend.models_asked()
        peak = backend.max_in_flight
    assert [f["status"] for f in finals] == ["succeeded"] * CONCURRENT_SPAWNS, [
        (f["error"], f["routing_evidence"]) for f in finals if f["status"] != "succeeded"
    ]
    assert all(f["routing_verified"] for f in finals)
    assert sorted(asked) == models
    assert peak == SPAWN_LIMIT  # the limit is reached, and never passed
    # first in, first out: worker i starts only after every worker before it, give or take the limit
    for position, model in enumerate(asked):
        assert position <= models.index(model) + SPAWN_LIMIT - 1, asked
