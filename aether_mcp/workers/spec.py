"""What a worker is started with: its spec, its argument list and its environment.

The argument list never holds a secret (any local user can read a process's
command line), and the environment is built from an allowlist rather than
inherited.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import AetherError
from ..git import project_root
from ..private_files import read_private, replace_private, write_private
from ..profile.agents import Agent
from ..profile.catalog import CasteCatalog
from ..profile.location import STATE_DIR
from ..profile.resolution import Source
from ..profile.schema import Profile, RaySection, check_model_name
from ..profile.worker_settings import WorkerSettings
from .claude_cli import ClaudeCli, find_cli
from .request import Isolation, SpawnRequest, WorkerShape
from .worktree import check_base

# Only these reach a worker from the server's own environment (plus LC_* and
# the profile's workers.env_passthrough): a worker must not pick up a stray
# ANTHROPIC_API_KEY and quietly go around the proxy.
ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "TERM", "TMPDIR", "USER", "SHELL")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start one worker, fixed once built: a changed worker is a new spec (`placed`)."""

    worker_id: str
    caste: str
    task: str
    model: str | None
    model_source: Source
    cwd: Path
    server_dir: Path  # the server's working directory: .aether/ is below it
    settings: WorkerSettings
    cli: ClaudeCli
    transcript_path: Path
    max_retries: int = 2
    api_timeout_ms: int = 120_000
    env_passthrough: list[str] = field(default_factory=list)
    output_schema: dict[str, Any] | None = None  # the CLI's --json-schema: the answer comes as structured_output
    resume: str | None = None  # a follow-up turn: the CLI session to continue
    agent: Agent | None = None  # the Claude Code agent the worker runs as
    context_window: int | None = None  # model_metadata's, for a model the CLI does not know
    provider: str | None = None  # model_metadata's: a deployment of another provider is flagged
    isolation: Isolation = "none"
    description: str | None = None  # a few words naming the worker
    gateway_url: str | None = None  # set for a proxied worker: it talks to the gateway, not the proxy
    cluster: RaySection | None = None  # set for a remote worker: the Ray cluster it runs on

    @property
    def proxied(self) -> bool:
        """Its requests go to a proxy, through the gateway, with a key of its own."""
        return bool(self.settings.endpoint)

    def placed(self, *, cwd: Path | None = None, gateway_url: str | None = None) -> WorkerSpec:
        """This worker where it runs: its directory (inside its worktree) and the gateway it talks to.

        A proxied worker is never placed without the gateway: its environment would carry the real token."""
        if self.proxied and gateway_url is None:
            raise AetherError(f"The {self.caste} worker goes through a proxy, and no gateway is there for it.")
        return replace(self, cwd=cwd or self.cwd, gateway_url=gateway_url)


def build_spec(
    catalog: CasteCatalog, request: WorkerShape, *, server_dir: Path, environ: Mapping[str, str]
) -> WorkerSpec:
    """The worker a spawn asks for: its model (and why), its settings with the spawn's own timeout and budget,
    its CLI and directory; placed by `WorkerSpec.placed` once its gateway key and worktree exist.

    `server_dir` is the server's working directory: the default `cwd`, and where `.aether/workers/` keeps
    transcripts. A shape with no task (a warm process's) is the caste's usual worker, its task still to come.
    Bad input raises here, before anything runs."""
    profile = catalog.profile
    task = request.task if isinstance(request, SpawnRequest) else ""
    entry = catalog.resolve(request.caste, task)
    chosen, source = entry.model, entry.source
    if request.model is not None:
        chosen, source = check_model_name(request.model), "explicit"
    settings = catalog.settings(entry.caste).model_copy(update=_spawn_settings(request))
    if settings.endpoint and chosen is None:
        # The gateway holds a proxied worker's requests to its model: with none, its key would allow any.
        raise AetherError(
            f"The {entry.caste} caste has no model ({entry.note or 'none is set'}), and a worker through the proxy "
            "needs one",
            f"Give it one: aether-mcp caste-models set {entry.caste}=MODEL (or model= for this spawn)",
        )
    if settings.max_tokens is not None and not settings.endpoint:
        raise AetherError(
            f"max_tokens is kept at the gateway, which only workers going through a proxy use, and the "
            f"{entry.caste} caste has none",
            "Give a max_budget_usd instead (the Claude Code CLI keeps that), or route the caste through a proxy",
        )
    if settings.max_budget_usd is not None and settings.endpoint:
        _check_prices(profile.model_metadata or {}, (chosen, *settings.fallback_models), entry.caste)
    if settings.runs_on == "ray":
        _check_remote(profile, settings)
    isolation = request.isolation or settings.isolation
    if check_base(request.base) is not None and isolation != "worktree":
        raise AetherError("base applies only with isolation 'worktree'.")
    metadata = (profile.model_metadata or {}).get(chosen) if chosen else None
    worker_id = new_worker_id(entry.caste)
    return WorkerSpec(
        worker_id=worker_id,
        caste=entry.caste,
        task=task,
        model=chosen,
        model_source=source,
        cwd=working_directory(request.cwd, server_dir, profile.workers.allowed_dirs),
        server_dir=server_dir,
        settings=settings,
        cli=find_cli(profile, environ),
        transcript_path=transcript_path(server_dir, worker_id),
        max_retries=profile.workers.max_retries,
        api_timeout_ms=profile.workers.api_timeout_ms,
        env_passthrough=profile.workers.env_passthrough,
        output_schema=request.output_schema,
        agent=catalog.agent(entry.caste),
        context_window=metadata.context_window if metadata else None,
        provider=metadata.provider if metadata else None,
        isolation=isolation,
        description=request.description,
        cluster=profile.workers.ray if settings.runs_on == "ray" else None,
    )


def _check_remote(profile: Profile, settings: WorkerSettings) -> None:
    """A remote worker needs a cluster, and a route through the gateway: its key is the one credential that may
    leave this machine."""
    if profile.workers.ray is None:
        raise AetherError(
            f"The {settings.caste} worker is to run on a Ray cluster, and the profile names none",
            "Set workers.ray.address (the head's host:port, or auto) in your profile, then run aether-mcp trust",
        )
    if not settings.endpoint:
        raise AetherError(
            f"The {settings.caste} worker is to run on a Ray cluster, and it does not go through a proxy: its "
            "credential would have to leave this machine",
            "Give the profile a proxy (or the caste an endpoint): a remote worker reaches it through the gateway "
            "with a key of its own",
        )


def _check_prices(metadata: Mapping[str, Any], models: Sequence[str | None], caste: str) -> None:
    """The gateway keeps a dollar budget by pricing each answer: every model the worker may use needs prices,
    or the budget could not be measured (and would quietly lapse)."""
    unpriced = [
        str(m)
        for m in models
        if m is None
        or getattr(metadata.get(m), "input_cost_per_mtok", None) is None
        or getattr(metadata.get(m), "output_cost_per_mtok", None) is None
    ]
    if unpriced:
        raise AetherError(
            f"max_budget_usd cannot be kept for the {caste} caste: model_metadata has no prices for "
            f"{', '.join(unpriced)}, so what its answers cost could not be measured",
            "Give each of its models input_cost_per_mtok and output_cost_per_mtok in model_metadata, "
            "or bound the worker with max_tokens instead",
        )


def _spawn_settings(request: WorkerShape) -> dict[str, Any]:
    """What one spawn sets over its caste's settings."""
    own = {
        "timeout_s": request.timeout_s,
        "max_budget_usd": request.max_budget_usd,
        "max_tokens": request.max_tokens,
        "runs_on": request.runs_on,
    }
    return {name: value for name, value in own.items() if value is not None}


def new_worker_id(caste: str) -> str:
    """A new worker's id, of the form `names.WORKER_ID` (the caste's name passed `names.CASTE_NAME`)."""
    return f"{caste.lower().replace('_', '-')}-{uuid.uuid4().hex[:8]}"


def transcript_path(server_dir: Path, worker_id: str) -> Path:
    return server_dir / STATE_DIR / "workers" / f"{worker_id}.jsonl"


def working_directory(cwd: str | None, server_dir: Path, allowed_dirs: Sequence[str] = ()) -> Path:
    """The directory a worker runs in: an existing absolute path, symlinks resolved, inside the project
    (the git work tree `server_dir` is in, else `server_dir` itself) or below one of the profile's
    `allowed_dirs`."""
    if cwd is None:
        return server_dir
    path = Path(cwd).expanduser()
    if not path.is_absolute():
        raise AetherError(f"cwd must be an absolute path, not '{cwd}'.")
    if not path.exists():
        raise AetherError(f"cwd '{cwd}' does not exist.")
    if not path.is_dir():
        raise AetherError(f"cwd '{cwd}' is not a directory.")
    resolved = path.resolve()
    roots = [project_root(server_dir), *(Path(d).expanduser().resolve() for d in allowed_dirs)]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise AetherError(
            f"cwd '{cwd}' is outside this project ({roots[0]})"
            + (f" and outside workers.allowed_dirs ({', '.join(allowed_dirs)})" if allowed_dirs else ""),
            "Give a directory inside the project, or list its parent in workers.allowed_dirs in your profile "
            "(then run aether-mcp trust)",
        )
    return resolved


def build_command(spec: WorkerSpec) -> list[str]:
    """The worker's argument list. No secret goes here: /proc/<pid>/cmdline is world-readable."""
    s = spec.settings
    command = [spec.cli.path, "-p", "--output-format", "stream-json", "--verbose"]
    if spec.model:
        command += ["--model", spec.model]
    if spec.agent is not None:
        # The agent's own definition, from a 0600 file of ours: the worker reads neither the project's settings
        # (so not its agents either) nor an agent file that changed after the spawn was checked.
        command += ["--agents", str(agents_path(spec)), "--agent", spec.agent.name]
    if s.role:
        command += ["--append-system-prompt", s.role]
    command += ["--permission-mode", s.permission_mode]
    command += ["--max-turns", str(s.max_turns)]
    if s.max_budget_usd is not None and not spec.proxied:  # through the gateway, it keeps the budget
        command += ["--max-budget-usd", f"{s.max_budget_usd:g}"]
    if s.fallback_models:
        # The CLI's own fallback: after its retries on an overloaded model it switches, and tries the main model
        # again on the next turn.
        command += ["--fallback-model", ",".join(s.fallback_models)]
    if s.allowed_tools:
        command += ["--allowedTools", ",".join(s.allowed_tools)]
    if s.disallowed_tools:
        command += ["--disallowedTools", ",".join(s.disallowed_tools)]
    if spec.output_schema is not None:
        command += ["--json-schema", json.dumps(spec.output_schema)]
    if spec.resume is not None:
        command += ["--resume", spec.resume]
    # Only the caste's own MCP servers, from a 0600 file (their env may hold secrets): a worker never
    # loads aether-mcp from the project's .mcp.json, so it cannot start a colony of its own.
    command += ["--strict-mcp-config", "--mcp-config", str(mcp_config_path(spec))]
    # Only the user's own Claude Code settings, and the routing on top of them: the settings of the
    # directory the worker runs in (a cloned repository's) can neither run hooks nor move its endpoint.
    command += ["--setting-sources", "user", "--settings", json.dumps({"env": routing_env(spec)})]
    return command


def routing_env(spec: WorkerSpec) -> dict[str, str]:
    """The variables that decide where a worker's requests go and which model they ask for. None is secret."""
    env = {}
    endpoint = spec.settings.endpoint
    if endpoint:
        env["ANTHROPIC_BASE_URL"] = spec.gateway_url or endpoint
        env["CLAUDE_CODE_MAX_RETRIES"] = str(spec.max_retries)
        env["API_TIMEOUT_MS"] = str(spec.api_timeout_ms)
    if spec.model:
        env["ANTHROPIC_MODEL"] = spec.model
        if spec.context_window:
            # Without it the CLI assumes 1M tokens for a model it does not know, and compacts too late.
            env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = str(spec.context_window)
        if endpoint:
            # Nothing inside the worker may fall back to a model the proxy does not route.
            for variable in (
                "ANTHROPIC_DEFAULT_OPUS_MODEL",
                "ANTHROPIC_DEFAULT_SONNET_MODEL",
                "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                "ANTHROPIC_SMALL_FAST_MODEL",
            ):
                env[variable] = spec.model
        # The worker's own sub-agents (an agent may use the Task tool) stay on its model.
        env["CLAUDE_CODE_SUBAGENT_MODEL"] = spec.model
    return env


def build_env(spec: WorkerSpec, environ: Mapping[str, str], key: str | None = None) -> dict[str, str]:
    """The worker's whole environment, built from an allowlist. A proxied worker's credential is `key`, its
    own at the gateway: the real token stays in the server, and without a key there is no environment."""
    keep = set(ENV_ALLOWLIST) | set(spec.env_passthrough)
    env = {k: v for k, v in environ.items() if k in keep or k.startswith("LC_")}
    for secret in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        if secret not in spec.env_passthrough:
            env.pop(secret, None)
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    if spec.proxied:
        if spec.gateway_url is None or key is None:
            raise AetherError(f"The {spec.caste} worker goes through a proxy, and has no gateway key to use.")
        env.pop("ANTHROPIC_API_KEY", None)
        env["ANTHROPIC_AUTH_TOKEN"] = key
    return env | routing_env(spec)


def mcp_config_text(spec: WorkerSpec) -> str:
    return json.dumps({"mcpServers": spec.settings.mcp_servers}, sort_keys=True)


def mcp_config_path(spec: WorkerSpec) -> Path:
    """Named by its content: warm and cold workers of one caste share the file, and their command lines match."""
    digest = hashlib.sha256(mcp_config_text(spec).encode()).hexdigest()[:16]
    return spec.server_dir / STATE_DIR / "workers" / f"mcp-{digest}.json"


def agents_text(spec: WorkerSpec) -> str:
    assert spec.agent is not None
    return json.dumps({spec.agent.name: spec.agent.definition()}, sort_keys=True)


def agents_path(spec: WorkerSpec) -> Path:
    """Named by its content, as the MCP config is."""
    digest = hashlib.sha256(agents_text(spec).encode()).hexdigest()[:16]
    return spec.server_dir / STATE_DIR / "workers" / f"agents-{digest}.json"


def write_worker_files(spec: WorkerSpec) -> None:
    """What the command line points to, written before the worker starts (0600, no link followed)."""
    _write_once(mcp_config_path(spec), spec.server_dir, mcp_config_text(spec).encode())
    if spec.agent is not None:
        _write_once(agents_path(spec), spec.server_dir, agents_text(spec).encode())


def _write_once(path: Path, server_dir: Path, data: bytes) -> None:
    """Make the content-named file `path`, unless it is there already holding `data`.

    Workers starting side by side share these files, and the CLI refuses a file that changes while it reads
    it: one that is there is left alone, and a new one appears whole (written aside, then linked in)."""
    try:
        if read_private(path, len(data) + 1) == data:
            return
    except FileNotFoundError:
        pass
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    write_private(temp, server_dir, data)
    try:
        os.link(temp, path)
    except FileExistsError:  # another spawn made it first, or it held something else: replace that
        if read_private(path, len(data) + 1) != data:
            replace_private(path, server_dir, data)
    finally:
        temp.unlink(missing_ok=True)
