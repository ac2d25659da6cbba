"""What a worker is started with: its spec, its argument list and its environment.

The argument list never holds a secret (any local user can read a process's
command line), and the environment is built from an allowlist rather than
inherited.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AetherError
from ..profile.castes import WorkerSettings, settings_for
from ..profile.resolution import Source, resolve
from ..profile.schema import Profile, check_model_name
from ..profile.store import STATE_DIR
from .claude_cli import ClaudeCli, find_cli

# Only these reach a worker from the server's own environment (plus LC_* and
# the profile's workers.env_passthrough): a worker must not pick up a stray
# ANTHROPIC_API_KEY and quietly go around the proxy.
ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "TERM", "TMPDIR", "USER", "SHELL")
# A day: longer than any worker should run, short enough that a typo (1e300) is caught.
MAX_TIMEOUT_S = 86_400.0


@dataclass
class WorkerSpec:
    """Everything needed to start one worker."""

    worker_id: str
    caste: str
    task: str
    model: str | None
    model_source: Source
    cwd: Path
    settings: WorkerSettings
    cli: ClaudeCli
    transcript_path: Path
    max_retries: int = 2
    api_timeout_ms: int = 120_000
    env_passthrough: list[str] = field(default_factory=list)


def build_spec(
    profile: Profile,
    caste: str,
    task: str,
    *,
    home: Path,
    environ: Mapping[str, str],
    cwd: str | None = None,
    model: str | None = None,
    timeout_s: float | None = None,
) -> WorkerSpec:
    """The worker a spawn asks for: its model (and why), settings, CLI and directory.

    `home` is the server's working directory: the default `cwd`, and where `.aether/workers/` keeps transcripts.
    Bad input raises here, before anything runs."""
    if timeout_s is not None and not 0 < timeout_s <= MAX_TIMEOUT_S:  # NaN fails this too
        raise AetherError(f"The timeout must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds, not {timeout_s}.")
    entry = resolve(profile, caste, task)
    chosen, source = entry.model, entry.source
    if model is not None:
        chosen, source = check_model_name(model), "explicit"
    settings = settings_for(profile, entry.caste)
    if timeout_s is not None:
        settings = settings.model_copy(update={"timeout_s": timeout_s})
    worker_id = f"{entry.caste.lower().replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    return WorkerSpec(
        worker_id=worker_id,
        caste=entry.caste,
        task=task,
        model=chosen,
        model_source=source,
        cwd=working_directory(cwd, home),
        settings=settings,
        cli=find_cli(profile, environ),
        transcript_path=home / STATE_DIR / "workers" / f"{worker_id}.jsonl",
        max_retries=profile.workers.max_retries,
        api_timeout_ms=profile.workers.api_timeout_ms,
        env_passthrough=profile.workers.env_passthrough,
    )


def working_directory(cwd: str | None, default: Path) -> Path:
    """The directory a worker runs in: an existing absolute path, symlinks resolved."""
    if cwd is None:
        return default
    path = Path(cwd).expanduser()
    if not path.is_absolute():
        raise AetherError(f"cwd must be an absolute path, not '{cwd}'.")
    if not path.exists():
        raise AetherError(f"cwd '{cwd}' does not exist.")
    if not path.is_dir():
        raise AetherError(f"cwd '{cwd}' is not a directory.")
    return path.resolve()


def build_command(spec: WorkerSpec) -> list[str]:
    """The worker's argument list. No secret goes here: /proc/<pid>/cmdline is world-readable."""
    s = spec.settings
    command = [spec.cli.path, "-p", "--output-format", "stream-json", "--verbose"]
    if spec.model:
        command += ["--model", spec.model]
    command += ["--append-system-prompt", s.role, "--permission-mode", s.permission_mode]
    command += ["--max-turns", str(s.max_turns)]
    if s.max_budget_usd is not None:
        command += ["--max-budget-usd", f"{s.max_budget_usd:g}"]
    if s.allowed_tools:
        command += ["--allowedTools", ",".join(s.allowed_tools)]
    if s.disallowed_tools:
        command += ["--disallowedTools", ",".join(s.disallowed_tools)]
    # Only the caste's own MCP servers: a worker never loads aether-mcp from
    # the project's .mcp.json, so it cannot start a colony of its own.
    command += ["--strict-mcp-config", "--mcp-config", json.dumps({"mcpServers": s.mcp_servers})]
    return command


def build_env(spec: WorkerSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's whole environment, built from an allowlist."""
    keep = set(ENV_ALLOWLIST) | set(spec.env_passthrough)
    env = {k: v for k, v in environ.items() if k in keep or k.startswith("LC_")}
    for secret in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        if secret not in spec.env_passthrough:
            env.pop(secret, None)
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    endpoint = spec.settings.endpoint
    if endpoint:
        env["ANTHROPIC_BASE_URL"] = endpoint
        env.pop("ANTHROPIC_API_KEY", None)
        if spec.settings.auth_token is not None:
            env["ANTHROPIC_AUTH_TOKEN"] = spec.settings.auth_token.get_secret_value()
        env["CLAUDE_CODE_MAX_RETRIES"] = str(spec.max_retries)
        env["API_TIMEOUT_MS"] = str(spec.api_timeout_ms)
    if spec.model:
        env["ANTHROPIC_MODEL"] = spec.model
        if endpoint:
            # Nothing inside the worker may fall back to a model the proxy does not route.
            for variable in (
                "ANTHROPIC_DEFAULT_OPUS_MODEL",
                "ANTHROPIC_DEFAULT_SONNET_MODEL",
                "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                "ANTHROPIC_SMALL_FAST_MODEL",
                "CLAUDE_CODE_SUBAGENT_MODEL",
            ):
                env[variable] = spec.model
    return env
