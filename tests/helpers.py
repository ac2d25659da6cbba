"""Helpers the test modules share: profiles, projects, servers, processes and waiting.

Test modules import these from here, never from conftest.py (which keeps only fixtures) or from one another.
pytest puts tests/ on sys.path (its default `prepend` import mode, as for conftest.py), so `helpers` imports
as a top-level module.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import StdioServerParameters

from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend, Recorded
from aether_mcp.workers.spawn_log import log_path, read_spawn_log

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"

TOKEN = "sk-aether-test-7c1d9e"  # distinctive, so a leak is easy to find
MASTER_KEY = "sk-litellm-master-5f2a"  # LiteLLM refuses to start without one, and it must start with sk-

# --- profiles and projects -----------------------------------------------------------------------------------


def trusted(path: Path) -> Path:
    """Trust the profile's proxy and worker settings, as its user would with `aether-mcp trust`."""
    ProfileStore(path).trust(path)
    return path


def write_profile(path: Path, endpoint: str, extra: str = "") -> Path:
    """A trusted profile of three castes whose proxy is `endpoint`, with `extra` at the end."""
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


def profile_for(folder: Path, proxy: str, token: str = MASTER_KEY, extra: str = "", into: str = "") -> Path:
    """A profile whose proxy is LiteLLM; `extra` goes at the end, or with `into="worker_models"` among the castes."""
    castes = "worker_models:\n  builder: kimi-k2.5\n  scout: glm-5\n  watcher: minimax-2.5\n"
    path = folder / "model-profiles.yaml"
    path.write_text(
        castes
        + (extra if into == "worker_models" else "")
        + f"proxy:\n  endpoint: {proxy}\n  auth_token: {token}\n"
        + (extra if into != "worker_models" else "")
    )
    return trusted(path)


def comments(text: str) -> list[str]:
    """The comments of a YAML text, in order: an edit must keep them all."""
    return [line[line.index("#") :] for line in text.splitlines() if "#" in line]


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
    store = ProfileStore(profile, cwd=root)
    for agent in store.untrusted_agents():
        store.trust(agent.path)
    return profile


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


# A worker's Bash command: write the worktree's name to same.txt and commit it there.
COMMIT_MY_NAME = (
    'basename "$PWD" > same.txt && git add same.txt && '
    'git -c user.email=w@x -c user.name=w commit -qm "from $(basename "$PWD")"'
)

# --- the server and its answers ------------------------------------------------------------------------------


def run_aether(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The aether-mcp command as a user runs it in `cwd`, with this virtualenv's scripts first on PATH."""
    environ = dict(env or os.environ)
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "aether_mcp", *args],
        cwd=cwd,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stdio_server(cwd: Path, *extra: str) -> StdioServerParameters:
    """`aether-mcp serve` over stdio in `cwd`, with the venv's scripts first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "aether_mcp", "serve", "--log-level", "WARNING", *extra],
        cwd=str(cwd),
        env=env,
    )


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


# --- processes -----------------------------------------------------------------------------------------------


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


SYSTEM_PYTHON = "/usr/bin/python3"
Test = TypeVar("Test", bound=Callable[..., Any])


def as_another_user(test: Test) -> Test:
    """Skip marks for a test that runs a process as another local user (uid 65534, nobody)."""
    test = pytest.mark.skipif(
        os.getuid() != 0, reason="runs a process as another local user (uid 65534), and only root may switch users"
    )(test)
    return pytest.mark.skipif(
        not Path(SYSTEM_PYTHON).exists(),
        reason=f"the other user's process needs a Python of the system's own ({SYSTEM_PYTHON}), not this virtualenv's",
    )(test)


# --- waiting -------------------------------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], object], seconds: float = 10, interval: float = 0.1) -> bool:
    """Poll `predicate` (plain or async) until it holds or `seconds` pass; whether it held in the end."""

    async def holds() -> bool:
        answer = predicate()
        return bool(await answer if inspect.isawaitable(answer) else answer)

    with anyio.move_on_after(seconds):
        while not await holds():
            await anyio.sleep(interval)  # paces the polling: the condition is what ends the wait
    return await holds()


def hand_over_ready(project: Path, seconds: float = 30) -> Callable[[Recorded], None]:
    """A local backend's `before_answer` that holds a parent's first answer until the aether-mcp server of the
    Claude Code session in `project` takes hand-overs: Claude Code in -p mode sends its first request without
    waiting for its MCP servers, and a hook that runs before the server is up keeps the call instead."""
    from aether_mcp.adapters.handoff import address

    def sessions() -> list[int]:
        found = []
        for entry in os.scandir("/proc"):
            try:
                here = entry.name.isdigit() and os.readlink(f"/proc/{entry.name}/cwd") == str(project.resolve())
                if here and b"-p" in Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def listening() -> bool:
        names = {address(pid) for pid in sessions()} - {None}
        table = Path("/proc/net/unix").read_text(errors="replace")
        return any(f"@{name[1:]}" in table for name in names if name)

    def hold(request: Recorded) -> None:
        deadline = time.monotonic() + seconds
        while not listening() and time.monotonic() < deadline:
            time.sleep(0.05)  # paces the look at /proc: the server being up is what ends the wait

    return hold


# --- aether-mcp top, driven by Textual's pilot ------------------------------------------------------------------


def table_cells(app: Any) -> dict[str, dict[str, str]]:
    """top's worker table as shown: worker id -> column key -> the cell's text."""
    from textual.widgets import DataTable

    table = app.query_one("#workers", DataTable)
    keys = [str(column.key.value) for column in table.columns.values()]
    shown = {}
    for row_key in table.rows:
        values = table.get_row(row_key)
        shown[str(row_key.value)] = {key: str(getattr(v, "plain", v)) for key, v in zip(keys, values, strict=True)}
    return shown


async def pilot_until(pilot: Any, holds: Callable[[], object], seconds: float = 30) -> None:
    """Wait until `holds()`, letting the app run: the pilot's pause, not a sleep, gives it its turns."""
    deadline = time.monotonic() + seconds
    while not holds():
        assert time.monotonic() < deadline, "not within the time allowed"
        await pilot.pause(0.1)  # paces the polling, and the app handles its messages meanwhile


# --- a session run through `aether-mcp run` ---------------------------------------------------------------------

WRAPPER = (sys.executable, "-m", "aether_mcp", "run", "--")  # the wrapper, as a user runs it, before the command
WIRE_CASTES = {"builder": "kimi-k2.5", "scout": "glm-5", "watcher": "minimax-2.5"}


def wire_project(
    project: Path,
    home: Path,
    endpoint: str,
    token: str,
    castes: dict[str, str] = WIRE_CASTES,
    *,
    first_run: bool = False,
) -> None:
    """An Aether-shaped project, installed (server, hooks) and trusted, whose profile gives each caste a model
    (not its agent file's `model:` line); `first_run`: Claude Code has been started in this HOME before
    (onboarding done, a theme chosen), as an interactive session needs."""
    project.mkdir()
    home.mkdir(exist_ok=True)
    write_aether_project(project, endpoint, token=token)
    models = "worker_models:\n" + "".join(f"  {caste}: {model}\n" for caste, model in castes.items())
    (project / "model-profiles.yaml").write_text(
        AETHER_PROFILE.replace("worker_models:\n  watcher: minimax-2.5\n", models)
        .replace("ENDPOINT", endpoint)
        .replace("TOKEN", token)
    )
    installed = run_aether("install", "--trust", cwd=project, env={**os.environ, "HOME": str(home)})
    assert installed.returncode == 0, installed.stderr
    seen: dict[str, Any] = {"hasCompletedOnboarding": True, "theme": "dark"} if first_run else {}
    seen["projects"] = {str(project): {"hasTrustDialogAccepted": True}}
    (home / ".claude.json").write_text(json.dumps(seen))


def messages_of(backend: LocalBackend) -> list[Recorded]:
    """The Messages requests the backend saw (not count_tokens), in arrival order."""
    return [r for r in backend.requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path]


def wire_records(project: Path) -> list[dict[str, Any]]:
    """The spawn log's records of a wrapped session's conversations, newest first."""
    return [e for e in read_spawn_log(log_path(project / ".aether"), 100) if e.get("mode") == "wire"]


def one_builder_call(project: Path) -> LocalBackend:
    """A local backend whose parent's first act is one aether-builder Agent call, after which it makes the calls
    its tool results name; each answer waits until the session's aether-mcp server in `project` takes hand-overs."""
    from aether_mcp.commands.demo import DEMO_TOKEN, PARENT_MODEL
    from aether_mcp.testing.backend import Turn

    call = {"description": "build", "prompt": "Add a greeting module.", "subagent_type": "aether-builder"}
    script = {PARENT_MODEL: [Turn(tool="Agent", tool_input=call), Turn(follow=True)]}
    return LocalBackend(token=DEMO_TOKEN, models=["kimi-k2.5"], scripts=script, before_answer=hand_over_ready(project))
