"""`aether-mcp demo`: three castes on three models, proven, with no API key and no network.

The project's local backend stands where the LiteLLM proxy would, a temporary
profile puts three castes on three models, and a real MCP session over stdio
asks `aether-mcp serve` to spawn one real Claude Code worker per caste. The
table compares what each caste was assigned with what the backend saw.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from .backend import LocalBackend

DEMO_TOKEN = "sk-aether-demo"  # the local backend checks it, as a proxy would
CASTES = {"builder": "kimi-k2.5", "scout": "glm-5", "watcher": "minimax-2.5"}


def run_demo() -> int:
    return anyio.run(_demo)


async def _demo() -> int:
    from mcp import Client, StdioServerParameters

    with tempfile.TemporaryDirectory(prefix="aether-demo-") as folder, LocalBackend(
        token=DEMO_TOKEN, models=list(CASTES.values())
    ) as backend:
        profile = Path(folder) / "model-profiles.yaml"
        profile.write_text(_profile_text(backend.url))
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "aether_mcp", "serve", "--profiles", str(profile), "--log-level", "WARNING"],
            cwd=folder,
            env=_server_env(Path(folder)),
        )
        print(f"Local Anthropic-compatible backend on {backend.url}, standing in for the proxy.")
        async with Client(params) as client:
            print("MCP session over stdio to `aether-mcp serve`; spawning one worker per caste...\n")
            rows = []
            for caste in CASTES:
                seen_before = len(backend.models_asked())
                result = await _call(client, "spawn_worker", {"caste": caste, "task": f"Say hello as the {caste}."})
                seen = sorted(set(backend.models_asked()[seen_before:]))
                rows.append((caste, result, ", ".join(seen) or "(nothing)"))
        _print_table(rows)
    verified = all(r["routing_verified"] and r["status"] == "succeeded" for _, r, _ in rows)
    print("\nEvery caste ran on its own model." if verified else "\nRouting was NOT verified for every caste.")
    return 0 if verified else 1


def _profile_text(endpoint: str) -> str:
    lines = ["worker_models:"] + [f"  {caste}: {model}" for caste, model in CASTES.items()]
    lines += ["proxy:", f"  endpoint: {endpoint}", f"  auth_token: {DEMO_TOKEN}"]
    return "\n".join(lines) + "\n"


def _server_env(folder: Path) -> dict[str, str]:
    """The server's environment, with a HOME of its own so the workers touch nothing of the user's."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM", "TMPDIR", "USER", "SHELL")}
    env["HOME"] = str(folder / "home")
    (folder / "home").mkdir()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


async def _call(client: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error or result.structured_content is None:
        raise SystemExit(f"Error: {tool} failed: {result.content[0].text if result.content else 'no answer'}")
    content: dict[str, Any] = result.structured_content
    return content


def _print_table(rows: list[tuple[str, dict[str, Any], str]]) -> None:
    table = [("CASTE", "ASSIGNED", "BACKEND SAW", "VERIFIED", "TIME")]
    for caste, result, seen in rows:
        took = f"{result['duration_s']:.2f} s" if result.get("duration_s") is not None else "-"
        verified = "yes" if result["routing_verified"] else "NO"
        table.append((caste, result["model"] or "(CLI default)", seen, verified, took))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
