"""The benchmark suite still runs: tiny counts, figures not judged (they live in docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# The suite's own limit stays under the test's, so a hang fails here, with the bench's output, not in pytest.
@pytest.mark.timeout(600)
def test_bench_quick_smoke(cli_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
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
