"""What each caste's workers may do, and the role each is told it plays.

A caste with a Claude Code agent file runs as that agent: its prompt, its
tools (which a worker, unable to answer a permission prompt, uses unasked),
its permission mode and turns. A caste without one gets the shipped settings
below. The shipped settings follow least privilege: castes that only read or plan
cannot edit files, and no worker is left waiting for a permission prompt that
nobody can answer (`dontAsk` denies what is not pre-approved). A profile's
`workers` section overrides them: `workers.defaults` for every caste, then
`workers.castes.<caste>` for one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

from .agents import QUIET_MODES, READ_ONLY_TOOLS, READ_TOOLS, Agent
from .names import caste_key
from .schema import Profile

EDIT_TOOLS = ["Edit", "Write", "NotebookEdit"]
# Workers are leaves: they must not start agents or colonies of their own.
NO_NESTING = ["Agent", "Task"]
GIT_WRITES = ["Bash(git *--output*)", "Bash(git *--ext-diff*)", "Bash(git *--textconv*)"]

_READ_ONLY: dict[str, Any] = {
    "permission_mode": "dontAsk",
    "allowed_tools": list(READ_TOOLS),
    "disallowed_tools": [*EDIT_TOOLS, "Bash", *NO_NESTING],
}

SHIPPED: dict[str, dict[str, Any]] = {
    "builder": {
        "permission_mode": "acceptEdits",
        "allowed_tools": [*READ_TOOLS, *EDIT_TOOLS, "Bash"],
        "disallowed_tools": NO_NESTING,
    },
    "watcher": {
        "permission_mode": "dontAsk",
        "allowed_tools": [*READ_TOOLS, "Bash"],
        "disallowed_tools": [*EDIT_TOOLS, *NO_NESTING],
    },
    "chaos": {
        "permission_mode": "dontAsk",
        "allowed_tools": [*READ_TOOLS, "Bash"],
        "disallowed_tools": [*EDIT_TOOLS, *NO_NESTING],
    },
    "chronicler": {
        "permission_mode": "dontAsk",
        "allowed_tools": [*READ_TOOLS, "Edit(**/*.md)", "Write(**/*.md)", "Edit(docs/**)", "Write(docs/**)"],
        "disallowed_tools": ["Bash", "NotebookEdit", *NO_NESTING],
    },
    "archaeologist": {
        **_READ_ONLY,
        "allowed_tools": [*READ_TOOLS, "Bash(git log:*)", "Bash(git show:*)", "Bash(git blame:*)", "Bash(git diff:*)"],
        # Reading history, never writing: `git log --output=FILE` writes anywhere, and --ext-diff and --textconv
        # run programs the repository's git config names. Redirects and `&&` chains are already refused.
        "disallowed_tools": [*EDIT_TOOLS, *NO_NESTING, *GIT_WRITES],
    },
}

ROLES = {
    "queen": "You coordinate the colony: break the goal into tasks and say which caste should take each.",
    "builder": "You write and change code to complete the task, then check that it works.",
    "watcher": "You test and review. Run the checks, read the change, and report what is wrong. Do not edit files.",
    "scout": "You research quickly: find the facts the task asks for and report them briefly. Do not edit files.",
    "colonizer": "You map a codebase: its layout, its main modules and how they connect. Do not edit files.",
    "architect": "You design: weigh the options and propose a structure with its trade-offs. Do not edit files.",
    "route_setter": "You plan: turn the goal into ordered, concrete steps with what each needs. Do not edit files.",
    "oracle": "You research deeply and answer with evidence and sources. Do not edit files.",
    "archaeologist": "You read the git history to explain how and why the code came to be. Do not edit files.",
    "chaos": "You hunt edge cases: find inputs and conditions that break the code, and show them. Do not edit files.",
    "chronicler": "You write documentation. Edit only Markdown and docs/ files.",
}

GENERIC_TIMEOUT_S = 900.0
GENERIC_MAX_TURNS = 50


class WorkerSettings(BaseModel):
    """A caste's settings with every default applied."""

    caste: str
    role: str
    permission_mode: str
    allowed_tools: list[str]
    disallowed_tools: list[str]
    max_turns: int
    timeout_s: float
    max_budget_usd: float | None
    mcp_servers: dict[str, dict[str, Any]]
    max_tokens: int | None = None
    fallback_models: list[str] = Field(default_factory=list)
    endpoint: str | None
    auth_token: SecretStr | None
    isolation: Literal["none", "worktree"] = "none"
    runs_on: Literal["local", "ray"] = "local"


def agent_exposure(profile: Profile, agent: Agent) -> dict[str, Any]:
    """What an agent's prompt could do beyond reading, as its worker would run: the agent's own settings that
    need trust, and what the profile's workers section adds to them (its tools, its permission mode). When there
    is any, the prompt belongs to it: trusting the settings trusts them for that prompt, not for any other a
    later pull writes."""
    found = agent.sensitive_settings()
    merged = settings_for(profile, agent.name, agent)
    if not set(merged.allowed_tools) <= READ_ONLY_TOOLS:
        found["tools"] = merged.allowed_tools
    if merged.permission_mode not in QUIET_MODES:
        found["permissionMode"] = merged.permission_mode
    if found:
        found["prompt"] = agent.prompt
    return found


def settings_for(profile: Profile, caste: str, agent: Agent | None = None) -> WorkerSettings:
    """The agent's settings (else the shipped ones) for the caste, then the profile's defaults, then its entry
    for the caste."""
    key = caste_key(caste)
    merged: dict[str, Any] = _agent_settings(agent) if agent is not None else dict(SHIPPED.get(key, _READ_ONLY))
    layers = [profile.workers.defaults]
    layers += [s for name, s in profile.workers.castes.items() if caste_key(name) == key]
    for layer in layers:
        merged.update(layer.model_dump(exclude_none=True))
    proxy = profile.proxy
    endpoint = merged.get("endpoint") or (proxy.endpoint if proxy else None)
    token = merged.get("auth_token") if "endpoint" in merged else (proxy.auth_token if proxy else None)
    return WorkerSettings(
        caste=caste,
        role=merged.get("role") or _role(key, caste, agent),
        permission_mode=merged["permission_mode"],
        allowed_tools=merged.get("allowed_tools", []),
        disallowed_tools=merged.get("disallowed_tools", []),
        max_turns=merged.get("max_turns", GENERIC_MAX_TURNS),
        timeout_s=merged.get("timeout_s", GENERIC_TIMEOUT_S),
        max_budget_usd=merged.get("max_budget_usd"),
        max_tokens=merged.get("max_tokens"),
        fallback_models=merged.get("fallback_models", []),
        mcp_servers=merged.get("mcp_servers", {}),
        endpoint=endpoint,
        auth_token=SecretStr(token) if isinstance(token, str) else token,
        isolation=merged.get("isolation") or "none",
        runs_on=merged.get("runs_on") or "local",
    )


# Tools that never ask for permission. Claude Code 2.1.332 leaves Grep and Glob out of a session that has Bash
# (Bash brings its own search); naming them in --allowedTools would bring them back, 4 KB on every request.
ASK_NOTHING = ("Grep", "Glob")


def _agent_settings(agent: Agent) -> dict[str, Any]:
    """What the agent file says of permissions, turns and isolation; the CLI applies the rest of it."""
    front = agent.frontmatter
    mode = front.get("permissionMode")
    turns = front.get("maxTurns")
    found: dict[str, Any] = {
        "permission_mode": mode if isinstance(mode, str) and mode in MODE_RANK else "dontAsk",
        "allowed_tools": [tool for tool in agent.tools or [] if tool not in ASK_NOTHING],
        "disallowed_tools": front.get("disallowedTools") or [],
        "isolation": "worktree" if front.get("isolation") == "worktree" else "none",
    }
    if isinstance(turns, int) and not isinstance(turns, bool) and turns >= 1:
        found["max_turns"] = turns
    return found


def _role(key: str, caste: str, agent: Agent | None) -> str:
    """The line appended to the system prompt: none for an agent, whose own prompt is the system prompt."""
    if agent is not None:
        return ""
    return ROLES.get(key, f"You are a {caste} worker in an Aether colony.")


# How much a permission mode lets a worker do unasked, least first.
MODE_RANK = {"plan": 0, "dontAsk": 1, "default": 2, "acceptEdits": 3, "bypassPermissions": 4}


def widened_permissions(profile: Profile) -> dict[str, Any]:
    """The profile's permission settings that let a caste do more than its shipped settings, by dotted name.

    `workers.defaults` applies to every caste, so it is measured against the read-only castes."""
    layers = [("workers.defaults", _READ_ONLY, profile.workers.defaults)]
    layers += [
        (f"workers.castes.{name}", SHIPPED.get(caste_key(name), _READ_ONLY), settings)
        for name, settings in profile.workers.castes.items()
    ]
    widened: dict[str, Any] = {}
    for where, shipped, layer in layers:
        mode = layer.permission_mode
        if mode is not None and MODE_RANK[mode] > MODE_RANK[shipped["permission_mode"]]:
            widened[f"{where}.permission_mode"] = mode
        allowed = layer.allowed_tools
        if allowed is not None and not set(allowed) <= set(shipped["allowed_tools"]):
            widened[f"{where}.allowed_tools"] = allowed
        disallowed = layer.disallowed_tools
        if disallowed is not None and not set(shipped["disallowed_tools"]) <= set(disallowed):
            widened[f"{where}.disallowed_tools"] = disallowed
    return widened
