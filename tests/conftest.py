"""Shared fixtures: every test runs in its own directory with a clean environment."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
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
    return target


@pytest.fixture
def cli_env() -> dict[str, str]:
    """The environment for a child process: ours, with the venv's scripts first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


TOKEN = "sk-aether-test-7c1d9e"  # distinctive, so a leak is easy to find


@pytest.fixture
def backend():
    """The project's local Anthropic-compatible endpoint, routing three models, with a token."""
    from aether_mcp.backend import LocalBackend

    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5", "minimax-2.5"]) as server:
        yield server


def write_profile(path: Path, endpoint: str, extra: str = "") -> Path:
    path.write_text(
        "# test colony\n"
        "worker_models:\n"
        "  builder: kimi-k2.5\n"
        "  scout: glm-5\n"
        "  watcher: minimax-2.5\n"
        "proxy:\n"
        f"  endpoint: {endpoint}\n"
        "  auth_token: ${AETHER_TEST_TOKEN:-" + TOKEN + "}\n" + extra
    )
    return path


@pytest.fixture
def colony_profile(isolated: Path, backend) -> Path:
    """A profile in the working directory whose proxy is the local backend."""
    return write_profile(isolated / "model-profiles.yaml", backend.url)


def claude_processes(marker: str) -> list[int]:
    """Live processes whose command line or environment mention `marker` and run a Claude CLI."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"claude" in cmdline and marker.encode() in cmdline + environ:
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_worker_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory):
    """After the run, no Claude Code process that a test started is still alive."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    import time

    deadline = time.monotonic() + 10
    while claude_processes(base) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert claude_processes(base) == [], "Claude Code processes started by the tests are still running"
