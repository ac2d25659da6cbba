"""The benchmark suite still runs: tiny counts, figures not judged (they live in docs/benchmarks.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT


def quick_run(module: str, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """`python -m <module> --quick` from the checkout, which must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


# The suite's own limit stays under the test's, so a hang fails here, with the bench's output, not in pytest.
@pytest.mark.timeout(600)
def test_bench_quick_smoke(cli_env: dict[str, str]) -> None:
    done = quick_run("bench", cli_env, timeout_s=540)
    figures = [line.split(" | ")[0].lstrip("| ") for line in done.stdout.splitlines() if line.startswith("| ")][2:]
    assert figures == [
        "cold start: spawn to a finished tools/list (stdio)",
        "get_caste_model round trip, p50 (p99)",
        "get_caste_model on the wire, p50 (without the client's output validation)",
        "set_caste_model round trip (lock, write, fsync)",
        "get_caste_model with 100 castes",
        "get_caste_model with 1,000 castes",
        "get_caste_model with 27 agent files in the project",
        "spawn_worker(wait=True), one-turn worker (through the gateway)",
        "spawn_worker with a warm worker",
        "floor: the same warm CLI fed directly, no server",
        "8 background workers at once, wall time to all done (through the gateway)",
        "server RSS, idle",
        "server RSS, 8 running workers through the gateway",
        "first request of an agent worker (bytes)",
        "first request of an agent worker (bytes)",
        "PreToolUse hook: a routed caste denied",
        "gateway's own latency per request, p50 (a backend answering at once)",
        "time to first byte of a streamed answer, p50 (a model taking 50 ms)",
    ]


@pytest.mark.timeout(300)
def test_wave_bench_quick_smoke(cli_env: dict[str, str]) -> None:
    """A wave of two builders, native and routed: every row is there, and each worker ran as the builder on its
    model with the builder's prompt, its answer reaching the parent (the timing targets are the bench's to judge)."""
    done = quick_run("bench.wave", cli_env, timeout_s=240)
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| wave of 2 builders")]
    assert [row[0].lstrip("| ") for row in rows] == [
        "wave of 2 builders: wall time, from the parent's request that issues it to its answer (median of 1)",
        "wave of 2 builders: spread of the workers' starts",
        "wave of 2 builders: parent turns",
        "wave of 2 builders: bytes the parent writes per caste beyond its Agent calls",
        "wave of 2 builders: workers on kimi-k2.5 with the builder's prompt and one task each; answers in the "
        "parent's final text; verified",
    ]
    assert rows[-1][1:3] == ["native: 2/2; 2/2; no proof", "2/2; 2/2; 2/2"]
    assert rows[-1][-1].strip(" |") == "yes"
    # what does not depend on the machine's load: no extra turn, and no prompt written twice
    turns, written = rows[2], rows[3]
    assert turns[-1].strip(" |") == "yes" and written[-1].strip(" |") == "yes", (turns, written)


@pytest.mark.timeout(150)
def test_wire_bench_quick_smoke(cli_env: dict[str, str]) -> None:
    """A wave of two builders, plain and through `aether-mcp run`, the start, the memory and the gateway: every row is
    there, each builder ran on its session's model (the agent's plain, its caste's wrapped, with a verified wire
    record) and answered the parent, and every request through the gateway was rewritten (the timing targets are
    the bench's to judge)."""
    done = quick_run("bench.wire", cli_env, timeout_s=120)
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ")][2:]
    assert [row[0].lstrip("| ") for row in rows] == [
        "wave of 2 builders as the parent's first act: wall time, the parent's request that issues it to its last "
        "(median of 1)",
        "wave of 2 builders: where the time goes: the parent's wave request to the last builder's first request; the "
        "last builder's answer to the parent's last request",
        "wave of 2 builders, wrapped: each hook run, start to answer (stream times; median, max)",
        "wave of 2 builders: builders whose every request reached the backend on the expected model with the "
        "builder's prompt and one task; answers in the parent's replies (worst run); wire records verified",
        "peak resident memory of the process tree (VmRSS summed, every 50 ms) during the wave of 2 builders",
        "peak resident memory, process mode",
        "session start: launch to the backend's first request, wrapped (installed, trusted) vs plain claude -p (no "
        "aether-mcp)",
        "session start: the wrapper alone (wrapped, in a project not installed: no server, no hooks)",
        "session start: the MCP server alone (plain claude -p in the installed project: Claude Code waits for the "
        "server before its first request)",
        "gateway's added latency per request, p50: a sub-agent's streamed 20 KB Messages request, model rewritten by "
        "the session's router (a backend answering at once; the backend closing each streamed answer's connection, "
        "so the gateway connects upstream for every request)",
        "gateway's added latency per request, p50: a sub-agent's streamed 20 KB Messages request, model rewritten by "
        "the session's router (a backend answering at once; every connection kept alive (a backend that keeps them, "
        "as a proxy on uvicorn does))",
        "time to first byte of a sub-agent's streamed answer through the gateway, p50 (a model taking 50 ms)",
    ]
    routed = rows[3]
    assert routed[1:3] == [
        "native, on sonnet-model (the agent's model: sonnet): 2/2",
        "on kimi-k2.5 (the profile's builder): 2/2; answers 2/2; verified 2/2",
    ]
    assert routed[-1].strip(" |") == "yes"
    for event in ("PreToolUse", "SubagentStart", "SubagentStop"):  # the hooks install added all ran
        assert f"{event} " in rows[2][2], rows[2]
    for row in rows[9:11]:
        assert "20 of 20 through the gateway reached the backend on kimi-k2.5" in row[2], row


@pytest.mark.timeout(200)
def test_top_bench_quick_smoke(cli_env: dict[str, str]) -> None:
    """top in tmux on a seeded project: both rows are there (the targets are the bench's to judge)."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed: .ci/run installs it (apt-get install tmux)")
        pytest.skip(
            "the bench runs top in a real terminal, which tmux provides: tmux is not installed (apt-get install tmux)"
        )
    done = quick_run("bench.top", cli_env, timeout_s=150)
    figures = [line.split(" | ")[0].lstrip("| ") for line in done.stdout.splitlines() if line.startswith("| ")][2:]
    assert figures == [
        "top: first frame (200 finished, 16 running; tmux 100x30)",
        "top: CPU while nothing changes (200 finished, 16 running)",
    ]


@pytest.mark.timeout(150)
def test_ray_bench_quick_smoke(cli_env: dict[str, str]) -> None:
    """One worker each way and a wave of two: every figure is printed, the wave spread over both nodes (each
    worker succeeded verified with its commit, or the bench exits non-zero; the ratios are the bench's to judge)."""
    done = quick_run("bench.ray", cli_env, timeout_s=120)
    lines = done.stdout.splitlines()
    assert any(line.startswith("first remote worker of the server") for line in lines), done.stdout
    assert any(line.startswith("one-turn worker: local ") and line.endswith("x") for line in lines), done.stdout
    assert any("over node-a, node-b" in line for line in lines), done.stdout
