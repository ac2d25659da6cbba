"""Workers through the real LiteLLM proxy, which routes two model names to the local backend."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from helpers import profile_for
from mcp import Client

from aether_mcp.adapters.server import build_server
from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend

pytestmark = pytest.mark.anyio


def content(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    data: dict[str, Any] = result.structured_content
    return data


async def test_two_castes_through_litellm(
    isolated: Path, litellm_proxy: str, routed_backend: LocalBackend, second_backend: LocalBackend
) -> None:
    """Two model names on two deployments: each worker's evidence names its own deployment and address."""
    profile_for(isolated, litellm_proxy)
    before = (len(routed_backend.models_asked()), len(second_backend.models_asked()))
    async with Client(build_server(ProfileStore())) as client:
        builder = content(await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"}))
        scout = content(await client.call_tool("spawn_worker", {"caste": "scout", "task": "say hi"}))
    assert routed_backend.models_asked()[before[0] :] == ["kimi-k2.5"]
    assert second_backend.models_asked()[before[1] :] == ["glm-5"]
    for result, model, backend in ((builder, "kimi-k2.5", routed_backend), (scout, "glm-5", second_backend)):
        assert (result["status"], result["routing_verified"]) == ("succeeded", True), result["routing_evidence"]
        place = f"deployment deployment-{model} (anthropic/{model} at {backend.url})"
        assert result["served_by"] == [place]
        assert f"1 request(s) for {model}: {place}" in result["routing_evidence"]
        assert (
            f"preflight: proxy {litellm_proxy} routes '{model}' (GET /v1/models lists 4 model(s))"
            in (result["routing_evidence"])
        )


async def test_a_declared_fallback_through_litellm_stays_verified(
    isolated: Path, litellm_proxy: str, second_backend: LocalBackend
) -> None:
    """glm-5 is overloaded; the scout declares kimi-k2.5 as its fallback, and the CLI's own --fallback-model
    switches to it."""
    profile_for(isolated, litellm_proxy, extra="workers:\n  castes:\n    scout: {fallback_models: [kimi-k2.5]}\n")
    second_backend.overloaded.add("glm-5")
    try:
        async with Client(build_server(ProfileStore())) as client:
            scout = content(await client.call_tool("spawn_worker", {"caste": "scout", "task": "say hi"}))
    finally:
        second_backend.overloaded.discard("glm-5")
    assert (scout["status"], scout["routing_verified"]) == ("succeeded", True), scout["routing_evidence"]
    assert scout["fallback_used"] == ["kimi-k2.5"]
    assert "declared fallback kimi-k2.5 served 1 request(s)" in scout["routing_evidence"]


async def test_a_proxy_side_fallback_nobody_declared_is_not_verified(
    isolated: Path, litellm_proxy: str, routed_backend: LocalBackend
) -> None:
    """flaky-5's deployment fails and LiteLLM's router answers from kimi-k2.5's: the stream still says flaky-5,
    the headers do not."""
    profile_for(isolated, litellm_proxy, extra="  chaos: flaky-5\n", into="worker_models")
    async with Client(build_server(ProfileStore())) as client:
        chaos = content(await client.call_tool("spawn_worker", {"caste": "chaos", "task": "say hi"}))
    assert chaos["routing_verified"] is False
    assert chaos["models_reported"] == ["flaky-5"]  # what the worker's own stream shows: the name it asked for
    place = f"deployment deployment-kimi-k2.5 (anthropic/kimi-k2.5 at {routed_backend.url})"
    mismatches = [(m["code"], m["asked"], m["seen"]) for m in chaos["routing_mismatches"]]
    assert mismatches == [("deployment_serves_other", "flaky-5", "kimi-k2.5")], chaos["routing_evidence"]
    assert "after 1 proxy-side fallback(s) by " + place in chaos["routing_mismatches"][0]["message"]
    assert chaos["served_by"] == [place]


async def test_a_providers_anthropic_compatible_deployment_is_verified(isolated: Path, litellm_proxy: str) -> None:
    """Kimi served as `anthropic/kimi-k2.5` at the provider's Anthropic-compatible api_base, with model_metadata
    naming the provider as Aether's profiles do (kimi, which LiteLLM calls moonshot): no false alarm."""
    metadata = "model_metadata:\n  kimi-k2.5: {provider: kimi}\n"
    profile_for(isolated, litellm_proxy, extra=metadata)
    async with Client(build_server(ProfileStore())) as client:
        builder = content(await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"}))
    assert (builder["status"], builder["routing_verified"]) == ("succeeded", True), builder["routing_evidence"]
    assert builder["routing_mismatches"] == []


async def test_a_deployment_of_another_model_behind_the_group_is_flagged(isolated: Path, litellm_proxy: str) -> None:
    """The group kimi-cheap's deployment calls glm-5, which the proxy also serves under its own name."""
    profile_for(isolated, litellm_proxy, extra="  cheap: kimi-cheap\n", into="worker_models")
    async with Client(build_server(ProfileStore())) as client:
        cheap = content(await client.call_tool("spawn_worker", {"caste": "cheap", "task": "say hi"}))
    assert cheap["routing_verified"] is False
    mismatches = [(m["code"], m["asked"], m["seen"]) for m in cheap["routing_mismatches"]]
    assert mismatches == [("deployment_serves_other", "kimi-cheap", "glm-5")], cheap["routing_evidence"]


async def test_litellm_refusals(isolated: Path, litellm_proxy: str, routed_backend: LocalBackend) -> None:
    before = len(routed_backend.models_asked())
    profile_for(isolated, litellm_proxy)
    async with Client(build_server(ProfileStore())) as client:
        unrouted = await client.call_tool("spawn_worker", {"caste": "watcher", "task": "hi"})
        assert unrouted.is_error
        assert (
            "does not route model 'minimax-2.5'. It routes: kimi-k2.5, glm-5, flaky-5, kimi-cheap."
            in unrouted.content[0].text
        )
    profile_for(isolated, litellm_proxy, token="sk-not-the-key")
    async with Client(build_server(ProfileStore())) as client:
        started = time.monotonic()
        wrong = await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi"})
        assert wrong.is_error and "rejected the workers' token" in wrong.content[0].text
        assert "sk-not-the-key" not in wrong.content[0].text
        assert time.monotonic() - started < 2
    assert len(routed_backend.models_asked()) == before
