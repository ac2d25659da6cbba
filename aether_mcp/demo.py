"""`aether-mcp demo`: the routing table, read and changed through a real MCP session.

Starts `aether-mcp serve` as a child process over stdio, exactly as Claude
Code would, on a temporary copy of the packaged profile, so the user's own
files are never touched.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from .store import packaged_default


def run_demo() -> int:
    return anyio.run(_demo)


async def _demo() -> int:
    from mcp import Client, StdioServerParameters

    with tempfile.TemporaryDirectory(prefix="aether-demo-") as folder:
        profile = Path(folder) / "model-profiles.yaml"
        shutil.copyfile(packaged_default(), profile)
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "aether_mcp", "serve", "--profiles", str(profile), "--log-level", "WARNING"],
            cwd=folder,
        )
        async with Client(params) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            print(f"MCP server started over stdio; tools: {', '.join(tools)}\n")
            await _call(client, "set_caste_model", {"caste": "scout", "model": "glm-5"})
            print("set_caste_model(scout, glm-5), then get_caste_model():\n")
            table = await _call(client, "get_caste_model", {})
            _print_table(table["castes"])
            reset = await _call(client, "reset_caste_model", {"caste": "scout"})
            print(f"\nreset_caste_model(scout): scout is back on {reset['model']}")
    return 0


async def _call(client: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error or result.structured_content is None:
        raise SystemExit(f"Error: {tool} failed: {result.content[0].text if result.content else 'no answer'}")
    content: dict[str, Any] = result.structured_content
    return content


def _print_table(castes: list[dict[str, Any]]) -> None:
    rows = [("CASTE", "MODEL", "SOURCE")] + [(c["caste"], c["model"] or "(CLI default)", c["source"]) for c in castes]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
