"""`aether-mcp demo`: a parent Claude Code session routes three castes to three models, proven.

No API key, no LiteLLM, no network: the project's local backend stands where
the proxy would and plays the parent's part from a script (one
`mcp__aether__spawn_worker` call per caste). The parent is the real Claude
Code CLI with aether-mcp registered from the shipped `mcp.json`, exactly as a
user's project would have it; the workers are real Claude Code processes. The
table compares each caste's model with the model the backend saw it ask for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import AetherError
from ..private_files import user_config_dir
from ..profile.parsing import parse_profile
from ..profile.store import ProfileStore
from ..profile.trust import TrustStore
from ..tables import table
from ..testing.backend import LocalBackend, Turn
from ..workers.claude_cli import CLI_ENV_VAR, find_cli
from ..workers.spec import ENV_ALLOWLIST

DEMO_TOKEN = "sk-aether-demo"  # noqa: S105 (a throwaway the local backend checks, as a proxy would)
PARENT_MODEL = "parent-model"
CASTES = {"builder": "kimi-k2.5", "scout": "glm-5", "watcher": "minimax-2.5"}
TOOL = "mcp__aether__spawn_worker"


@dataclass
class ParentRun:
    """What the parent session printed, and the spawn_worker results it received."""

    exit_code: int
    final_text: str
    tool_results: list[dict[str, Any]]
    stderr: str
    denied: list[str]  # the tools whose calls were denied (by a hook, or for want of a permission)


def shipped_mcp_json() -> str:
    return (resources.files("aether_mcp") / "mcp.json").read_text()


def prepare_project(project: Path, home: Path, endpoint: str, castes: dict[str, str]) -> None:
    """A project registered as the README says (the shipped mcp.json as .mcp.json), trusted in a fresh HOME.

    Its profile's proxy is trusted too, as `aether-mcp trust` would in that HOME."""
    lines = ["worker_models:"] + [f"  {caste}: {model}" for caste, model in castes.items()]
    lines += ["proxy:", f"  endpoint: {endpoint}", f"  auth_token: {DEMO_TOKEN}"]
    profile = project / "model-profiles.yaml"
    profile.write_text("\n".join(lines) + "\n")
    ProfileStore(profile, trust=TrustStore(user_config_dir({"HOME": str(home)}))).trust(profile)
    (project / ".mcp.json").write_text(shipped_mcp_json())
    (project / ".claude").mkdir(exist_ok=True)
    (project / ".claude" / "settings.local.json").write_text(json.dumps({"enableAllProjectMcpServers": True}))
    (home / ".claude.json").write_text(json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}}))


def parent_script(castes: dict[str, str]) -> dict[str, list[Turn]]:
    """The parent model's turns: one spawn_worker call per caste, then (by default) a text answer."""
    calls = [Turn(tool=TOOL, tool_input={"caste": c, "task": f"Say hello as the {c}."}) for c in castes]
    return {PARENT_MODEL: calls}


def run_parent(
    cli: str,
    project: Path,
    home: Path,
    endpoint: str,
    *,
    timeout_s: float = 300,
    allow: str | None = "mcp__aether",
    wrapper: tuple[str, ...] = (),
) -> ParentRun:
    """Run `claude -p` as the parent session, with the settings a scripted parent needs; `allow` pre-approves
    tools (None: only the project's settings allow anything, as in Claude Code's default permission mode);
    `wrapper` runs it through a command (`aether-mcp run --`).

    The aether-mcp server it starts inherits this environment, so its workers run with the same CLI."""
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWLIST}
    env.update(
        {
            # aether-mcp must be on PATH, as it is for a user who installed it
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(home),
            CLI_ENV_VAR: cli,
            "ANTHROPIC_BASE_URL": endpoint,
            "ANTHROPIC_AUTH_TOKEN": DEMO_TOKEN,
            "ENABLE_TOOL_SEARCH": "false",  # else MCP tools hide behind ToolSearch
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
    )
    command = [*wrapper, cli, "-p", "--model", PARENT_MODEL, "--output-format", "stream-json", "--verbose"]
    if allow is not None:
        command += ["--allowedTools", allow]  # mcp__aether: every tool of the server, spawn_worker, get_worker, ...
    done = subprocess.run(
        command,
        input="Spawn one worker per caste.",
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        timeout=timeout_s,
        check=False,
    )
    final, results, denied = "", [], []
    for line in done.stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("type") == "result":
            final = str(event.get("result") or "")
            denials = event.get("permission_denials")
            denied = (
                [str(d.get("tool_name")) for d in denials if isinstance(d, dict)] if isinstance(denials, list) else []
            )
        elif event.get("type") == "user":
            results += _spawn_results(event)
    return ParentRun(done.returncode, final, results, done.stderr[-2000:], denied)


def _spawn_results(event: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for block in event.get("message", {}).get("content") or []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            content = block.get("content")
            text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content or [])
            try:
                found.append(json.loads(text))
            except json.JSONDecodeError:
                found.append({"error": text})
    return found


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="aether-demo-") as folder:
        project, home = Path(folder) / "project", Path(folder) / "home"
        project.mkdir()
        home.mkdir()
        scripts = parent_script(CASTES)
        with LocalBackend(token=DEMO_TOKEN, models=list(CASTES.values()), scripts=scripts) as backend:
            prepare_project(project, home, backend.url, CASTES)
            profile = parse_profile((project / "model-profiles.yaml").read_text(), "demo profile")
            try:
                cli = find_cli(profile, os.environ)
            except AetherError as exc:
                print(f"Error: {exc}", file=sys.stderr)
                return 1
            print(f"Local Anthropic-compatible backend on {backend.url}, standing in for the proxy.")
            print(f"Parent session: {cli.path} -p --model {PARENT_MODEL}, with aether-mcp from the shipped mcp.json.")
            print("Its model calls mcp__aether__spawn_worker once per caste...\n")
            run = run_parent(cli.path, project, home, backend.url)
            asked = backend.models_asked()
    if run.exit_code != 0 or len(run.tool_results) != len(CASTES):
        print(f"Error: the parent session failed (exit {run.exit_code}): {run.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    print_results(CASTES, run.tool_results, asked)
    verified = all(r.get("routing_verified") and r.get("status") == "succeeded" for r in run.tool_results)
    parent_ok = PARENT_MODEL in asked
    print(f"\nThe parent session itself asked for {PARENT_MODEL}: {'yes' if parent_ok else 'NO'}.")
    ok = verified and parent_ok
    print("Every caste ran on its own model." if ok else "Routing was NOT verified for every caste.")
    return 0 if ok else 1


def print_results(castes: dict[str, str], results: list[dict[str, Any]], asked: list[str]) -> None:
    """One row per caste, in the order the parent spawned them; then what went wrong with any that failed."""
    rows = [("CASTE", "ASSIGNED", "BACKEND SAW", "VERIFIED", "TIME")]
    errors = []
    for (caste, assigned), result in zip(castes.items(), results, strict=True):
        model = result.get("model") or assigned
        seen = model if model in asked else "(not seen)"
        took = f"{result['duration_s']:.2f} s" if result.get("duration_s") is not None else "-"
        verified = "yes" if result.get("routing_verified") else "NO"
        rows.append((caste, model, seen, verified, took))
        if result.get("error"):
            errors.append(f"{caste}: {result['error']}")
    print(table(rows))
    if errors:
        print("\n" + "\n".join(errors))
