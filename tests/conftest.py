"""Shared fixtures: every test runs in its own directory with a clean environment.

Only fixtures, and what they need, live here; the helpers that tests call are in helpers.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import DATA, MASTER_KEY, ROOT, TOKEN, claude_processes, git, trusted, wait_for, write_profile

from aether_mcp.testing.backend import LocalBackend
from aether_mcp.testing.proxy import deployments_config, running_proxy

ISOLATED_VARS = ("AETHER_MODEL_PROFILES", "LITELLM_AUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh working directory and HOME, with no profile variables from the caller."""
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    for name in ISOLATED_VARS:
        monkeypatch.delenv(name, raising=False)
    return work


@pytest.fixture
def aether_profile(isolated: Path) -> Path:
    """Aether's own 1.0 profile, with comments, at .aether/model-profiles.yaml."""
    target = isolated / ".aether" / "model-profiles.yaml"
    target.parent.mkdir()
    shutil.copyfile(DATA / "aether-1.0.yaml", target)
    return trusted(target)


@pytest.fixture
def cli_env() -> dict[str, str]:
    """The environment for a child process: ours, with the venv's scripts first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def backend():
    """The project's local Anthropic-compatible endpoint, routing three models, with a token."""
    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5", "minimax-2.5"]) as server:
        yield server


@pytest.fixture
def colony_profile(isolated: Path, backend) -> Path:
    """A profile in the working directory whose proxy is the local backend."""
    return write_profile(isolated / "model-profiles.yaml", backend.url)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def no_worker_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory):
    """After the run, no Claude Code process that a test started is still alive."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    anyio.run(wait_for, lambda: not claude_processes(base))
    assert claude_processes(base) == [], "Claude Code processes started by the tests are still running"


@pytest.fixture
def repo(isolated: Path, backend: Any) -> Path:
    """The project is a git repository with one commit; .aether/ is ignored, as aether-mcp's state."""
    git(isolated, "init", "-q", "-b", "main")
    (isolated / ".gitignore").write_text(".aether/\n")
    (isolated / "README.md").write_text("the project\n")
    write_profile(isolated / "model-profiles.yaml", backend.url)
    git(isolated, "add", ".")
    git(isolated, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "first")
    return isolated


# --- the real LiteLLM proxy, one for the session, in front of the local backend ---

BACKEND_KEY = "sk-backend-key-91b3"


def litellm_binary() -> str:
    path = os.environ.get("AETHER_LITELLM") or str(ROOT / ".venv-litellm" / "bin" / "litellm")
    if not Path(path).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"LiteLLM not installed at {path}: `make litellm` installs it")
        pytest.skip(
            f"routes workers through the real LiteLLM proxy, which is not installed at {path}: run `make litellm`"
        )
    return path


@pytest.fixture(scope="session")
def routed_backend() -> Iterator[LocalBackend]:
    with LocalBackend(token=BACKEND_KEY) as backend:
        yield backend


@pytest.fixture(scope="session")
def second_backend() -> Iterator[LocalBackend]:
    """glm-5's own deployment, at another address: the evidence must tell the two apart."""
    with LocalBackend(token=BACKEND_KEY) as backend:
        yield backend


@pytest.fixture(scope="session")
def broken_backend() -> Iterator[LocalBackend]:
    """flaky-5's deployment, which always fails: LiteLLM's router then falls back to kimi-k2.5 by itself."""
    with LocalBackend(token=BACKEND_KEY, fail_status=500) as backend:
        yield backend


@pytest.fixture(scope="session")
def litellm_proxy(
    routed_backend: LocalBackend,
    second_backend: LocalBackend,
    broken_backend: LocalBackend,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """One LiteLLM proxy for the session, on loopback: kimi-k2.5 and glm-5 on two deployments of the local
    backend, flaky-5, whose deployment fails, with a router fallback to kimi-k2.5 that no caste declares, and
    kimi-cheap, whose deployment calls glm-5."""
    binary = litellm_binary()
    deployments = {
        "kimi-k2.5": routed_backend,
        "glm-5": second_backend,
        "flaky-5": broken_backend,
        "kimi-cheap": second_backend,  # a group named for one model whose deployment calls another (glm-5)
    }
    config = deployments_config(
        {name: backend.url for name, backend in deployments.items()},
        api_key=BACKEND_KEY,
        master_key=MASTER_KEY,
        router="router_settings:\n  num_retries: 0\n  fallbacks: [{flaky-5: [kimi-k2.5]}]\n",
        calls={"kimi-cheap": "glm-5"},
    )
    with running_proxy(binary, tmp_path_factory.mktemp("litellm"), config) as url:
        yield url
