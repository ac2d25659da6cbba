"""Workers that crash, hang, babble or meet a failing backend: a clear status and error, nothing left running.

The cases here are the ones docs/reliability.md counts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import processes_with, wait_for
from mcp import Client

from aether_mcp.adapters.server import build_server
from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend

pytestmark = pytest.mark.anyio

INIT = '{"type":"system","subtype":"init","model":"kimi-k2.5","session_id":"s"}'
ANSWER = '{"type":"assistant","message":{"model":"kimi-k2.5","content":[{"type":"text","text":"hi"}]},"parent_tool_use_id":null}'
RESULT = (
    '{"type":"result","subtype":"success","is_error":false,"result":"done","num_turns":1,"modelUsage":{"kimi-k2.5":{}}}'
)

FAKE_CLIS: dict[str, tuple[str, str, str]] = {
    # name: (script body, expected status, expected words in the error)
    "crashes at start": ("echo 'boom: cannot start' >&2; exit 3", "failed", "exited with status 3: boom: cannot start"),
    "segfaults mid-run": (f"echo '{INIT}'; kill -SEGV $$", "failed", "exited with status -11"),
    "hangs with children": ("sleep 300 & sleep 300 & wait", "timed_out", "ran past its timeout of 2 s"),
    "ignores SIGTERM": ("trap '' TERM; sleep 300 & wait; sleep 300", "timed_out", "ran past its timeout of 2 s"),
    "a child leaves its process group": ("setsid -f sleep 300; sleep 300", "timed_out", "ran past its timeout of 2 s"),
    "prints garbage only": ("echo 'not json'; echo '{broken'; echo '[1,2]'", "failed", "ended without a result line"),
    "garbage between good lines": (
        f"echo '{INIT}'; echo 'garbage'; echo '{ANSWER}'; printf '%s' '{{\"half'; echo; echo '{RESULT}'",
        "succeeded",
        # its stream parses, but a CLI that never called the gateway proves nothing about its model
        "made no request through the gateway",
    ),
    "exits 0 without a result": (f"echo '{INIT}'; exit 0", "failed", "ended without a result line"),
}


def spawn_log(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / ".aether" / "spawn-log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list(FAKE_CLIS))
async def test_a_misbehaving_cli(
    colony_profile: Path, backend: LocalBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    body, status, words = FAKE_CLIS[name]
    fake = tmp_path / "fake-claude"
    fake.write_text(f"#!/bin/bash\ncat >/dev/null\n{body}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("AETHER_CLAUDE_CLI", str(fake))
    home = str(colony_profile.parent.parent / "home")
    async with Client(build_server(ProfileStore())) as client:
        started = time.monotonic()
        result = await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "timeout_s": 2})
        took = time.monotonic() - started
        assert not result.is_error, result.content
        outcome = result.structured_content
        assert outcome is not None
        assert outcome["status"] == status
        if words:
            assert words in outcome["error"]
        else:
            assert outcome["error"] is None
        assert not (await client.call_tool("list_workers", {})).is_error  # the server still answers
    assert took < 10
    assert await wait_for(lambda: not processes_with(home), seconds=5)
    assert [e["worker_id"] for e in spawn_log(colony_profile.parent)] == [outcome["worker_id"]]


BACKEND_FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "HTTP 500": ({"fail_status": 500}, "500"),
    "HTTP 529 overloaded": ({"fail_status": 529}, "529"),
    "closes mid-stream": ({"close_mid_stream": True}, "reported an error: API Error: Connection to the API was lost"),
}


@pytest.mark.parametrize("name", list(BACKEND_FAULTS))
async def test_a_failing_backend(colony_profile: Path, backend: LocalBackend, name: str) -> None:
    settings, words = BACKEND_FAULTS[name]
    for key, value in settings.items():
        setattr(backend, key, value)
    home = str(colony_profile.parent.parent / "home")
    async with Client(build_server(ProfileStore())) as client:
        result = await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "timeout_s": 60})
        outcome = result.structured_content
        assert outcome is not None
        assert outcome["status"] == "failed", outcome
        assert outcome["routing_verified"] is False
        assert outcome["error"] and words in outcome["error"]
        assert not (await client.call_tool("get_caste_model", {"caste": "scout"})).is_error
    assert await wait_for(lambda: not processes_with(home), seconds=5)
    log = spawn_log(colony_profile.parent)
    assert [(e["worker_id"], e["status"]) for e in log] == [(outcome["worker_id"], "failed")]
