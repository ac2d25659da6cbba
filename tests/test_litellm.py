"""Workers through the real LiteLLM proxy, which routes two model names to the local backend."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import trusted
from mcp import Client

from aether_mcp.adapters.server import build_server
from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend

ROOT = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-litellm-master-5f2a"  # LiteLLM refuses to start without one, and it must start with sk-
BACKEND_KEY = "sk-backend-key-91b3"

pytestmark = pytest.mark.anyio


def litellm_binary() -> str:
    path = os.environ.get("AETHER_LITELLM") or str(ROOT / ".venv-litellm" / "bin" / "litellm")
    if not Path(path).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"LiteLLM not installed at {path}: `make litellm` installs it")
        pytest.skip(f"LiteLLM not installed at {path}: run `make litellm`")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def routed_backend() -> Iterator[LocalBackend]:
    with LocalBackend(token=BACKEND_KEY) as backend:
        yield backend


@pytest.fixture(scope="session")
def litellm_proxy(routed_backend: LocalBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One LiteLLM proxy for the session, on loopback, routing kimi-k2.5 and glm-5 to the local backend."""
    binary = litellm_binary()
    folder = tmp_path_factory.mktemp("litellm")
    config = folder / "config.yaml"
    routes = "".join(
        f"  - model_name: {name}\n"
        f"    litellm_params: {{model: anthropic/{name}, api_base: '{routed_backend.url}', api_key: {BACKEND_KEY}}}\n"
        for name in ("kimi-k2.5", "glm-5")
    )
    config.write_text(f"model_list:\n{routes}general_settings:\n  master_key: {MASTER_KEY}\n")
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOME": str(folder)}
    log = (folder / "litellm.log").open("w")
    process = subprocess.Popen(
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health/liveliness", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"LiteLLM did not start; see {folder / 'litellm.log'}") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(20)
        log.close()


def profile_for(folder: Path, proxy: str, token: str = MASTER_KEY) -> Path:
    path = folder / "model-profiles.yaml"
    path.write_text(
        "worker_models:\n  builder: kimi-k2.5\n  scout: glm-5\n  watcher: minimax-2.5\n"
        f"proxy:\n  endpoint: {proxy}\n  auth_token: {token}\n"
    )
    return trusted(path)


def content(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    data: dict[str, Any] = result.structured_content
    return data


async def test_two_castes_through_litellm(isolated: Path, litellm_proxy: str, routed_backend: LocalBackend) -> None:
    profile_for(isolated, litellm_proxy)
    before = len(routed_backend.models_asked())
    async with Client(build_server(ProfileStore())) as client:
        builder = content(await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"}))
        scout = content(await client.call_tool("spawn_worker", {"caste": "scout", "task": "say hi"}))
    assert routed_backend.models_asked()[before:] == ["kimi-k2.5", "glm-5"]
    for result, model in ((builder, "kimi-k2.5"), (scout, "glm-5")):
        assert (result["status"], result["routing_verified"], result["models_reported"]) == ("succeeded", True, [model])
        assert (
            f"preflight: proxy {litellm_proxy} routes '{model}' (GET /v1/models lists 2 model(s))"
            in (result["routing_evidence"])
        )


async def test_litellm_refusals(isolated: Path, litellm_proxy: str, routed_backend: LocalBackend) -> None:
    before = len(routed_backend.models_asked())
    profile_for(isolated, litellm_proxy)
    async with Client(build_server(ProfileStore())) as client:
        unrouted = await client.call_tool("spawn_worker", {"caste": "watcher", "task": "hi"})
        assert unrouted.is_error
        assert "does not route model 'minimax-2.5'. It routes: kimi-k2.5, glm-5." in unrouted.content[0].text
    profile_for(isolated, litellm_proxy, token="sk-not-the-key")
    async with Client(build_server(ProfileStore())) as client:
        started = time.monotonic()
        wrong = await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi"})
        assert wrong.is_error and "rejected the workers' token" in wrong.content[0].text
        assert "sk-not-the-key" not in wrong.content[0].text
        assert time.monotonic() - started < 2
    assert len(routed_backend.models_asked()) == before
