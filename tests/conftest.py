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
