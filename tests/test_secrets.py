"""No secret in any output, log, transcript or command line; read-only castes cannot write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from helpers import live_processes, trusted, wait_for
from mcp import Client, StdioServerParameters

from aether_mcp.testing.backend import LocalBackend, Turn

pytestmark = pytest.mark.anyio

TOKEN = "sk-SECRET-tok-4f9d2a7e"  # the proxy token, set through LITELLM_AUTH_TOKEN
PARENT_KEY = "sk-ant-PARENT-key-88c1"  # an API key in the server's own environment, which workers must not get
SECRETS = (TOKEN, PARENT_KEY)


def hits(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def cmdline_hits() -> list[str]:
    return [hit for process in live_processes() for hit in hits(process.cmdline.decode(errors="replace"))]


@pytest.fixture
def secret_setup(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LITELLM_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", PARENT_KEY)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    models = ["kimi-k2.5", "glm-5", "minimax-2.5"]
    # the builder's model runs `env` first: the token reaches a tool result, the transcript and the answer
    scripts = {"kimi-k2.5": [Turn(tool="Bash", tool_input={"command": "env", "description": "show env"})]}
    with LocalBackend(token=TOKEN, models=models, scripts=scripts) as backend:
        (isolated / "model-profiles.yaml").write_text(
            "worker_models: {builder: kimi-k2.5, scout: glm-5, watcher: minimax-2.5}\n"
            f"proxy:\n  endpoint: {backend.url}\n  auth_token: ${{LITELLM_AUTH_TOKEN}}\n"
        )
        trusted(isolated / "model-profiles.yaml")
        yield isolated, env, backend


async def test_no_secret_anywhere(secret_setup: Any, tmp_path: Path) -> None:
    folder, env, backend = secret_setup
    log = tmp_path / "server.log"
    server = StdioServerParameters(
        command="bash",
        args=["-c", f"exec {sys.executable} -m aether_mcp serve --log-level DEBUG 2>>{log}"],
        cwd=str(folder),
        env=env,
    )
    outputs: list[str] = []
    seen_on_command_lines: list[str] = []
    async with Client(server) as client:

        async def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
            result = await client.call_tool(tool, arguments)
            outputs.append(result.model_dump_json())
            return result.structured_content

        await call("get_caste_model", {})
        await call("set_caste_model", {"caste": "scout", "model": "glm-5"})
        await call("reset_caste_model", {"caste": "scout"})
        await call("check_routing", {})
        built = await call("spawn_worker", {"caste": "builder", "task": "print your environment"})
        assert built is not None and built["status"] == "succeeded" and "ANTHROPIC_AUTH_TOKEN=" in built["output"]
        backend.delay_s = 2.0
        running = await call("spawn_worker", {"caste": "scout", "task": "hi", "wait": False})
        assert running is not None

        async def looked_until_it_ended() -> bool:
            """Look at every process's command line once more; whether the worker has finished."""
            seen_on_command_lines.extend(cmdline_hits())
            state = await call("get_worker", {"worker_id": running["worker_id"]})
            return state is not None and state["status"] not in ("queued", "running")

        assert await wait_for(looked_until_it_ended, seconds=30)  # every 0.1 s, for as long as the worker runs
        await call("get_worker", {"worker_id": running["worker_id"], "wait_s": 30})
        backend.delay_s = 0.0
        backend.fail_status = 401  # a failing spawn: the backend refuses the worker mid-run
        failed = await call("spawn_worker", {"caste": "watcher", "task": "hi"})
        assert failed is not None and failed["status"] == "failed"
        backend.fail_status = None
        await call("spawn_worker", {"caste": "builder", "task": "x", "model": "unrouted-model"})  # refused
        await call("list_workers", {})
        await call("cancel_worker", {"worker_id": running["worker_id"]})
        for prompt, arguments in (("colony", {"goal": "ship it"}), ("routing", {})):
            outputs.append((await client.get_prompt(prompt, arguments)).model_dump_json())

    for args in (
        ["caste-models", "list", "--json"],
        ["profiles", "path"],
        ["doctor", "--live", "--json"],
        ["spawn", "builder", "print your environment", "--json"],
        ["spawn", "scout", "hi", "--model", "unrouted-model"],
        ["workers", "--json"],
        ["demo"],
    ):
        backend.scripts["kimi-k2.5"] = deque([Turn(tool="Bash", tool_input={"command": "env", "description": "env"})])
        done = subprocess.run(
            ["aether-mcp", *args], capture_output=True, text=True, env=env, cwd=folder, timeout=300, check=False
        )
        outputs += [done.stdout, done.stderr]

    files = [log, *sorted((folder / ".aether").rglob("*"))]
    assert len(list((folder / ".aether" / "workers").iterdir())) >= 6
    written = {str(f): f.read_text(errors="replace") for f in files if f.is_file()}
    assert sum(len(text) for text in written.values()) > 10_000
    assert backend.requests and all(r.authorized for r in backend.requests)  # the token did reach the backend
    assert [hits(text) for text in outputs if hits(text)] == []
    assert {name: hits(text) for name, text in written.items() if hits(text)} == {}
    assert seen_on_command_lines == []


async def test_a_read_only_caste_cannot_write_a_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aether_mcp.profile.store import ProfileStore
    from aether_mcp.workers.colony import Colony
    from aether_mcp.workers.request import spawn_request

    target = {caste: isolated / f"written-by-{caste}.txt" for caste in ("scout", "builder")}
    scripts = {
        model: [Turn(tool="Write", tool_input={"file_path": str(target[caste]), "content": "pwned"})]
        for caste, model in (("scout", "glm-5"), ("builder", "kimi-k2.5"))
    }
    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5"], scripts=scripts) as backend:
        (isolated / "model-profiles.yaml").write_text(
            f"worker_models: {{builder: kimi-k2.5, scout: glm-5}}\nproxy: {{endpoint: '{backend.url}', auth_token: {TOKEN}}}\n"
        )
        trusted(isolated / "model-profiles.yaml")
        async with Colony(ProfileStore()) as colony:
            results = {}
            for caste in ("scout", "builder"):
                worker = await colony.spawn(spawn_request(caste=caste, task=f"Write the file {target[caste]}."))
                await worker.done.wait()
                results[caste] = worker.record()
    assert results["scout"].status == "succeeded"
    assert not target["scout"].exists()  # the read-only caste was refused
    assert target["builder"].read_text() == "pwned"  # the same request from a builder works: the test can fail
    transcript = Path(results["scout"].transcript_path or "").read_text()
    refusals = [json.loads(line) for line in transcript.splitlines() if '"tool_result"' in line]
    assert refusals and all('"is_error":true' in json.dumps(r).replace(" ", "") for r in refusals)
