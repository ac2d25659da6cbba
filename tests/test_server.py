"""The MCP server through a real MCP client: in memory, and over a real stdio pipe."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from mcp import Client, StdioServerParameters

from aether_mcp.adapters.server import build_server
from aether_mcp.profile.location import packaged_default
from aether_mcp.profile.store import ProfileStore

SNAPSHOT = Path(__file__).parent / "data" / "tools_list.json"

pytestmark = pytest.mark.anyio


def tools_snapshot(tools: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": tool.name,
            "description": tool.description,
            "annotations": tool.annotations.model_dump(exclude_none=True) if tool.annotations else None,
            "input_schema": tool.input_schema,
            "output_schema": tool.output_schema,
        }
        for tool in tools
    ]


async def test_tools_list_matches_the_snapshot() -> None:
    async with Client(build_server(ProfileStore())) as client:
        listed = tools_snapshot((await client.list_tools()).tools)
    if os.environ.get("AETHER_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(listed, indent=2) + "\n")
    assert listed == json.loads(SNAPSHOT.read_text()), (
        "tools/list changed; rerun with AETHER_UPDATE_SNAPSHOTS=1 if meant"
    )


async def test_output_schemas_are_flat_and_still_strict(aether_profile: Path) -> None:
    """Clients validate every result against its schema: no $ref to resolve, no anyOf arm to try for a null."""
    async with Client(build_server(ProfileStore())) as client:
        schemas = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}
        table = (await client.call_tool("get_caste_model", {})).structured_content
    for name, schema in schemas.items():
        text = json.dumps(schema)
        assert "$ref" not in text and '{"type": "null"}' not in text, name
    validator = jsonschema.Draft202012Validator(schemas["get_caste_model"])
    assert table is not None and list(validator.iter_errors(table)) == []
    wrong = json.loads(json.dumps(table))
    wrong["castes"][0]["metadata"]["context_window"] = "big"
    wrong["proxy_endpoint"] = 5
    assert sorted(error.message for error in validator.iter_errors(wrong)) == [
        "'big' is not of type 'integer', 'null'",
        "5 is not of type 'string', 'null'",
    ]


async def test_annotations_tell_the_truth() -> None:
    async with Client(build_server(ProfileStore())) as client:
        tools = {tool.name: tool.annotations for tool in (await client.list_tools()).tools}
    assert tools["get_caste_model"].read_only_hint and tools["get_caste_model"].idempotent_hint
    for name in ("set_caste_model", "reset_caste_model"):
        assert tools[name].read_only_hint is False and tools[name].idempotent_hint is True


async def test_set_get_reset_in_memory(aether_profile: Path) -> None:
    original = aether_profile.read_bytes()
    async with Client(build_server(ProfileStore())) as client:
        result = await client.call_tool("set_caste_model", {"caste": "Builder", "model": "glm-5"})
        assert not result.is_error
        assert result.structured_content == {
            "caste": "builder",
            "model": "glm-5",
            "slot": None,
            "previous": "kimi-k2.5",
            "path": str(aether_profile),
            "created": False,
            "warnings": [],
        }
        got = (await client.call_tool("get_caste_model", {"caste": "builder"})).structured_content
        assert got is not None
        entry = got["castes"][0]
        assert (entry["model"], entry["source"], entry["default_model"], entry["override"]) == (
            "glm-5",
            "override",
            "kimi-k2.5",
            "glm-5",
        )
        assert got["proxy_endpoint"] == "http://localhost:4000"
        assert "sk-litellm-local" not in json.dumps(got)
        reset = await client.call_tool("reset_caste_model", {"caste": "builder"})
        assert reset.structured_content == {
            "caste": "builder",
            "model": "kimi-k2.5",
            "had_override": True,
            "path": str(aether_profile),
        }
    assert aether_profile.read_bytes() == original


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("get_caste_model", {"caste": "scot"}, "Unknown caste 'scot'. Known castes: prime, architect, oracle,"),
        ("set_caste_model", {"caste": "scout", "model": "a b"}, "Invalid model name 'a b'"),
        ("set_caste_model", {"caste": "scout"}, "model"),
        ("reset_caste_model", {"caste": "nobody"}, "Unknown caste 'nobody'"),
    ],
)
async def test_bad_calls_are_tool_errors_and_the_server_stays_up(
    aether_profile: Path, tool: str, arguments: dict[str, Any], message: str
) -> None:
    before = aether_profile.read_bytes()
    async with Client(build_server(ProfileStore())) as client:
        result = await client.call_tool(tool, arguments)
        assert result.is_error
        assert message in result.content[0].text  # type: ignore[union-attr]
        assert not (await client.call_tool("get_caste_model", {})).is_error
    assert aether_profile.read_bytes() == before


async def test_get_over_stdio_answers_every_caste_of_the_shipped_profile(
    isolated: Path, cli_env: dict[str, str]
) -> None:
    # The expectations come from the file's own text, not from the resolution under test.
    shipped = yaml.safe_load(packaged_default().read_text())
    written, slots = shipped["worker_models"], shipped["model_slots"]
    assert len(written) >= 27 and all(isinstance(model, str) for model in written.values())
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "aether_mcp", "serve"], cwd=str(isolated), env=cli_env
    )
    async with Client(params) as client:
        table = (await client.call_tool("get_caste_model", {})).structured_content
        assert table is not None
        assert table["rule"] == "packaged default"
        assert [(e["caste"], e["model"], e["slot"]) for e in table["castes"]] == [
            (caste, slots[tier], tier) for caste, tier in written.items()
        ]
        for caste, tier in written.items():
            one = await client.call_tool("get_caste_model", {"caste": f"aether-{caste.replace('_', '-')}"})
            assert one.structured_content is not None and one.structured_content["castes"][0]["model"] == slots[tier]
        unknown = await client.call_tool("get_caste_model", {"caste": "queen-bee"})
        assert unknown.is_error
        assert "Known castes: queen, architect, route_setter, oracle, sage" in (
            unknown.content[0].text  # type: ignore[union-attr]
        )


async def test_set_over_stdio_uses_the_profiles_flag(
    aether_profile: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "aether_mcp", "serve", "--profiles", str(aether_profile)],
        cwd=str(tmp_path),
        env=cli_env,
    )
    async with Client(params) as client:
        result = await client.call_tool("set_caste_model", {"caste": "scout", "model": "glm-5"})
        assert result.structured_content is not None and result.structured_content["path"] == str(aether_profile)
    assert "user_overrides:\n  scout: glm-5\n" in aether_profile.read_text()


async def test_a_listing_comes_in_pages_that_fit_a_parent(colony_profile: Path, backend: Any) -> None:
    """What the parent reads stays small: 25 workers list as a page of 20 (newest first) and the rest."""
    async with Client(build_server(ProfileStore())) as client:
        ids = []
        for i in range(25):
            spawned = await client.call_tool("spawn_worker", {"caste": "scout", "task": f"t{i}", "wait": False})
            ids.append(spawned.structured_content["worker_id"])  # type: ignore[index]
        first = await client.call_tool("list_workers", {})
        rest = await client.call_tool("list_workers", {"offset": 20})
        for worker_id in ids:
            await client.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 60})
    page, tail = first.structured_content, rest.structured_content
    assert page is not None and tail is not None
    assert (len(page["workers"]), page["total"], page["next_offset"]) == (20, 25, 20)
    assert (len(tail["workers"]), tail["next_offset"]) == (5, None)
    assert [w["worker_id"] for w in page["workers"] + tail["workers"]] == ids[::-1]
    assert len(first.content[0].text) < 6_000  # type: ignore[union-attr]  # about 1,500 tokens for 20 workers
