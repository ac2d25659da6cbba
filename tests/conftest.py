"""Shared fixtures: every test runs in its own directory with a clean environment."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from aether_mcp.testing.backend import LocalBackend
from aether_mcp.testing.proxy import deployments_config, running_proxy

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
    return trusted(target)


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
    from aether_mcp.testing.backend import LocalBackend

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
    return trusted(path)


def trusted(path: Path) -> Path:
    """Trust the profile's proxy and worker settings, as its user would with `aether-mcp trust`."""
    from aether_mcp.profile.store import ProfileStore

    ProfileStore(path).trust(path)
    return path


@pytest.fixture
def colony_profile(isolated: Path, backend) -> Path:
    """A profile in the working directory whose proxy is the local backend."""
    return write_profile(isolated / "model-profiles.yaml", backend.url)


def structured(result: Any) -> dict[str, Any]:
    """A tool result that must have succeeded: its structured content."""
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    data: dict[str, Any] = result.structured_content
    return data


def error_text(result: Any) -> str:
    """A tool result that must be an error: its message."""
    assert result.is_error
    text: str = result.content[0].text
    return text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class LiveProcess:
    pid: int
    cmdline: bytes
    environ: bytes


def live_processes() -> list[LiveProcess]:
    """Every process whose command line and environment this user can read."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                found.append(
                    LiveProcess(int(proc.name), (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes())
                )
            except OSError:  # gone, or not ours to read
                continue
    return found


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries `marker` (workers inherit HOME, and so do their children)."""
    return [p.pid for p in live_processes() if marker.encode() in p.environ]


def claude_processes(marker: str) -> list[int]:
    """Live processes whose command line or environment mention `marker` and run a Claude CLI."""
    return [p.pid for p in live_processes() if b"claude" in p.cmdline and marker.encode() in p.cmdline + p.environ]


async def wait_for(predicate: Callable[[], object], seconds: float = 10, interval: float = 0.1) -> bool:
    """Poll `predicate` (plain or async) until it holds or `seconds` pass; whether it held in the end."""

    async def holds() -> bool:
        answer = predicate()
        return bool(await answer if inspect.isawaitable(answer) else answer)

    with anyio.move_on_after(seconds):
        while not await holds():
            await anyio.sleep(interval)
    return await holds()


@pytest.fixture(scope="session", autouse=True)
def no_worker_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory):
    """After the run, no Claude Code process that a test started is still alive."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    anyio.run(wait_for, lambda: not claude_processes(base))
    assert claude_processes(base) == [], "Claude Code processes started by the tests are still running"


# An Aether-shaped project: agent files in .claude/agents/ant/, written for these tests in the shapes a real
# Aether project has (a comma list of tools, a YAML list, a mapping of tools to true/false with `mode: subagent`,
# a `model:` slot or `inherit` or none), plus two files that are not agents.
AGENTS = {
    "aether-builder.md": (
        "---\nname: aether-builder\ndescription: Writes code test-first\ntools: Read, Write, Edit, Bash, Grep, Glob\n"
        "model: sonnet\n---\n\nYou are the Builder ant. BUILDER-RULES: write the failing test first, then the code.\n"
    ),
    "aether-watcher.md": (
        "---\nname: aether-watcher\ndescription: Verifies\ntools:\n  - Read\n  - Grep\n  - Bash\nmodel: opus\n---\n"
        "You are the Watcher ant. WATCHER-STEPS: run the tests, read the diff.\n"
    ),
    "aether-queen.md": "---\nname: aether-queen\ndescription: Coordinates\nmodel: opus\n---\nQUEEN-PROMPT\n",
    "aether-scout.md": (
        "---\nname: aether-scout\ndescription: Quick research\ntools: Read, Grep, Glob\nmodel: inherit\n---\n"
        "SCOUT-PROMPT\n"
    ),
    "aether-surveyor-nest.md": "---\nname: aether-surveyor-nest\ndescription: Maps the nest\n---\nSURVEYOR-PROMPT\n",
    "aether-porter.md": (
        "---\nname: aether-porter\ndescription: Carries files\nmode: subagent\ntools:\n  read: false\n"
        "  Read: true\n  Grep: true\n  Bash: false\nmodel: sonnet\n---\nPORTER-PROMPT\n"
    ),
    "aether-medic.md": "---\nname: aether-medic\ndescription: [unclosed\nmodel: glm-5\n---\nMEDIC-PROMPT\n",
    "README.md": "# Aether's agents\nNot an agent: no frontmatter.\n",
}
AETHER_PROFILE = """\
# slot form, as Aether wrote it
model_slots:
  opus: glm-5
  sonnet: kimi-k2.5
  haiku: minimax-2.5
  inherit: null  # uses parent model
worker_models:
  watcher: minimax-2.5
model_metadata:
  kimi-k2.5: {provider: kimi, context_window: 256000}
  glm-5: {provider: z.ai, context_window: 200000}
task_routing:
  default_model: glm-5
proxy:
  endpoint: ENDPOINT
  auth_token: TOKEN
"""


def write_aether_project(root: Path, endpoint: str, token: str = TOKEN) -> Path:
    """Agent files, a slot-form profile whose proxy is `endpoint`, and git: all trusted, as `install` leaves it."""
    folder = root / ".claude" / "agents" / "ant"
    folder.mkdir(parents=True)
    for name, text in AGENTS.items():
        (folder / name).write_text(text)
    profile = root / "model-profiles.yaml"
    profile.write_text(AETHER_PROFILE.replace("ENDPOINT", endpoint).replace("TOKEN", token))
    trusted(profile)
    from aether_mcp.profile.store import ProfileStore

    store = ProfileStore(profile, cwd=root)
    for agent in store.untrusted_agents():
        store.trust(agent.path)
    return profile


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


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

ROOT = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-litellm-master-5f2a"  # LiteLLM refuses to start without one, and it must start with sk-
BACKEND_KEY = "sk-backend-key-91b3"


def litellm_binary() -> str:
    path = os.environ.get("AETHER_LITELLM") or str(ROOT / ".venv-litellm" / "bin" / "litellm")
    if not Path(path).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"LiteLLM not installed at {path}: `make litellm` installs it")
        pytest.skip(f"LiteLLM not installed at {path}: run `make litellm`")
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
    backend, and flaky-5, whose deployment fails, with a router fallback to kimi-k2.5 that no caste declares."""
    binary = litellm_binary()
    deployments = {"kimi-k2.5": routed_backend, "glm-5": second_backend, "flaky-5": broken_backend}
    config = deployments_config(
        {name: backend.url for name, backend in deployments.items()},
        api_key=BACKEND_KEY,
        master_key=MASTER_KEY,
        router="router_settings:\n  num_retries: 0\n  fallbacks: [{flaky-5: [kimi-k2.5]}]\n",
    )
    with running_proxy(binary, tmp_path_factory.mktemp("litellm"), config) as url:
        yield url
