"""Which conversation a wrapped session's request belongs to, and where it goes: routing at the wire.

Every request of a session run through `aether-mcp run` carries the session's
key. A sub-agent's requests also carry Claude Code's `x-claude-code-agent-id`,
which the `SubagentStart` hook has told the router (with the agent's name)
before the first of them. A request whose agent id no hook told, or that has
none (a `claude -p --agent NAME` session started inside the wrapped command),
is told apart by its system prompt, which holds its agent file's body. What is
neither a caste's sub-agent nor a caste's session passes on the model it asks
for, to the session's own endpoint, and is recorded all the same.

A caste's requests go to the model its caste resolves to at that moment (the
profile is read again when it changes, so `set_caste_model` applies from the
next request), at its endpoint with its token.
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import AetherError
from ..profile.catalog import CasteCatalog
from ..profile.store import ProfileStore
from ..workers.leases import prices
from ..workers.publish import task_head
from ..workers.secrets import redact
from ..workers.wire import Lease, Prices, presented_key
from .agent import Identified, Identity, Moment, WireAgent

MAX_ENDED = 1024  # ended conversations remembered, so a late request of one is still its own
MAX_LIVE = 4096  # conversations at once: past this, a new agent id is refused (a session never has so many)
MIN_PROMPT = 40  # characters: an agent body shorter than this is too common to tell an agent by
MAX_TASK = 4000  # characters of a sub-agent's task kept for task_routing


@dataclass(frozen=True)
class MainRoute:
    """Where a session's own requests (and what is no caste's) go: the endpoint and credentials it already had."""

    upstream: str
    token: str | None
    credential: str | None  # "x-api-key" or "authorization"; None: as the request sends its key
    source: str  # where it came from, in words


@dataclass(frozen=True)
class _Aim:
    """A caste's route as the profile says now."""

    model: str | None
    source: Any
    upstream: str
    token: str | None
    credential: str | None
    max_tokens: int | None
    max_budget_usd: float | None
    context_window: int | None


class SessionRouter:
    """The session's key, its conversations by agent id, and each one's route."""

    def __init__(
        self,
        store: ProfileStore,
        main: MainRoute,
        *,
        on_start: Callable[[WireAgent], object],
        on_end: Callable[[WireAgent], object],
    ) -> None:
        self.key = "aether-session-" + secrets.token_urlsafe(24)
        self.main = main
        self._store = store
        self._on_start, self._on_end = on_start, on_end
        self._agents: dict[tuple[str, str | None], WireAgent] = {}  # (session id, agent id) -> its conversation
        self._ended: OrderedDict[tuple[str, str | None], WireAgent] = OrderedDict()
        # agent id -> what SubagentStart said, and when, until its first request
        self._told: dict[str, tuple[Identity, Moment]] = {}
        self._catalog: CasteCatalog | None = None
        self._aims: dict[tuple[int, str, str | None], _Aim] = {}
        self._prices: dict[str, Prices] = {}
        # What a task shown in `top` must not hold: the tokens this session passes on, and its key.
        self._secrets = [v for v in (main.token, self.key, *_profile_tokens(store)) if v]
        self._current_catalog()  # a profile or agents that cannot be read stop the session before it starts

    # --- the gateway's questions --------------------------------------------------------------------------

    def route(self, headers: Mapping[str, str], fields: Mapping[str, Any] | None) -> Lease | None:
        if not secrets.compare_digest(presented_key(headers).encode(), self.key.encode()):
            return None
        catalog = self._current_catalog()  # read once a request: the profile and agents as they are now
        agent = self._conversation(headers, fields, catalog)
        if agent is None:
            return None
        self._aim(agent, catalog)
        return agent.lease

    def control(
        self, method: str, path: str, headers: Mapping[str, str], fields: Mapping[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        """The hooks' calls: `session` (is this the session, and whose), `subagent-start`, `subagent-stop`."""
        if not secrets.compare_digest(presented_key(headers).encode(), self.key.encode()):
            return 401, {"error": "not this session's key"}
        event = fields or {}
        name = path.removeprefix("/aether-mcp/")
        if (method, name) == ("GET", "session"):
            return 200, {"pid": os.getpid()}
        agent_id, session_id = _text(event.get("agent_id")), _text(event.get("session_id")) or ""
        if method != "POST" or name not in ("subagent-start", "subagent-stop") or agent_id is None:
            return 400, {"error": f"{method} {path}: not a call this session takes"}
        if name == "subagent-start":
            identity = Identity(session_id, agent_id, None, _text(event.get("agent_type")))
            if len(self._told) < MAX_LIVE:
                self._told[agent_id] = (identity, Moment.now())
            return 200, {}
        agent = self._agents.get((session_id, agent_id))
        if agent is not None:
            agent.transcript_path = _text(event.get("agent_transcript_path"))
            agent.stop()
            self._finish(agent)
        self._told.pop(agent_id, None)
        return 200, {}

    # --- conversations ------------------------------------------------------------------------------------

    def live(self) -> list[WireAgent]:
        return list(self._agents.values())

    def end_all(self) -> list[WireAgent]:
        """The session ended: every conversation still open ends with it."""
        ended = list(self._agents.values())
        for agent in ended:
            self._finish(agent)
        return ended

    def _finish(self, agent: WireAgent) -> None:
        key = (agent.identity.session_id, agent.identity.agent_id)
        self._agents.pop(key, None)
        self._ended[key] = agent
        while len(self._ended) > MAX_ENDED:
            self._ended.popitem(last=False)
        self._on_end(agent)

    def _conversation(
        self, headers: Mapping[str, str], fields: Mapping[str, Any] | None, catalog: CasteCatalog
    ) -> WireAgent | None:
        session_id = headers.get("x-claude-code-session-id", "")[:200]
        agent_id = headers.get("x-claude-code-agent-id") or None
        key = (session_id, agent_id[:200] if agent_id else None)
        found = self._agents.get(key) or self._ended.get(key)
        if found is not None:
            return found
        if len(self._agents) >= MAX_LIVE:
            return None
        parent_id = headers.get("x-claude-code-parent-agent-id") or None
        told, began = self._told.pop(agent_id, (None, None)) if agent_id else (None, None)
        identified: Identified
        agent_type: str | None
        if told is not None and told.agent_type:
            agent_type, identified = told.agent_type, "hook"
        else:
            agent_type = _agent_by_prompt(catalog, fields)
            identified = "prompt" if agent_type else ("session" if agent_id is None else "none")
        caste = _caste_of(catalog, agent_type)
        if caste is None and agent_id is not None and agent_type is None:
            # An auxiliary conversation (a compaction fork names no agent): it follows the one it belongs to.
            parent = self._agents.get((session_id, parent_id)) if parent_id else self._agents.get((session_id, None))
            if parent is not None:
                caste, agent_type, identified = parent.caste, parent.identity.agent_type, "parent"
        identity = Identity(session_id, key[1], parent_id, agent_type)
        lease = Lease(worker_id="", caste=caste or "", upstream=self.main.upstream, token=None, models=None)
        agent = WireAgent(identity, caste, lease, self._store.cwd, identified, began=began)
        lease.worker_id = agent.worker_id
        agent.task = _task(fields) if caste is not None else ""
        agent.task_head = task_head(redact(_task(fields), self._secrets) or "")
        self._agents[key] = agent
        self._on_start(agent)
        return agent

    # --- routes -------------------------------------------------------------------------------------------

    def _current_catalog(self) -> CasteCatalog:
        """The profile and agents as they are now; the last good ones while a change cannot be read."""
        try:
            catalog = self._store.catalog()
            untrusted = self._store.untrusted()
        except AetherError:
            if self._catalog is None:
                raise
            return self._catalog
        if untrusted:  # a change that waits for `aether-mcp trust` does not take effect before it
            if self._catalog is None:
                raise AetherError(f"The profile has settings that wait for trust: {', '.join(untrusted)}")
            return self._catalog
        if catalog is not self._catalog:
            self._catalog, self._aims = catalog, {}
            metadata = catalog.profile.model_metadata or {}
            self._prices = {name: prices(meta) for name, meta in metadata.items()}
        return catalog

    def _aim(self, agent: WireAgent, catalog: CasteCatalog) -> None:
        lease = agent.lease
        lease.prices = self._prices  # model_metadata's, for a cost the proxy does not tell
        if agent.caste is None:
            lease.send_model, lease.models = None, None
            lease.upstream, lease.token, lease.credential = self.main.upstream, self.main.token, self.main.credential
            return
        task = agent.task or None
        cache_key = (id(catalog), agent.caste, task)
        aim = self._aims.get(cache_key)
        if aim is None:
            entry = catalog.resolve(agent.caste, task)
            settings = catalog.settings(entry.caste)
            own = settings.endpoint is not None
            aim = _Aim(
                model=entry.model,
                source=entry.source,
                upstream=settings.endpoint or self.main.upstream,
                token=(settings.auth_token.get_secret_value() if settings.auth_token else None)
                if own
                else self.main.token,
                credential=None if own else self.main.credential,
                max_tokens=settings.max_tokens,
                max_budget_usd=settings.max_budget_usd,
                context_window=entry.metadata.context_window if entry.metadata else None,
            )
            if len(self._aims) < 4096:
                self._aims[cache_key] = aim
        agent.aim(aim.model, aim.source)
        lease.send_model = aim.model
        lease.models = (aim.model,) if aim.model else None
        lease.upstream, lease.token, lease.credential = aim.upstream, aim.token, aim.credential
        lease.max_tokens, lease.max_budget_usd = aim.max_tokens, aim.max_budget_usd
        lease.context_window = aim.context_window


def _profile_tokens(store: ProfileStore) -> list[str]:
    profile, _ = store.load()
    layers = [profile.proxy, profile.workers.defaults, *profile.workers.castes.values()]
    return [layer.auth_token.get_secret_value() for layer in layers if layer is not None and layer.auth_token]


def _caste_of(catalog: CasteCatalog, agent_type: str | None) -> str | None:
    """The caste an agent's name is, or None when it is no caste (general-purpose, say)."""
    if not agent_type:
        return None
    try:
        return catalog.find(agent_type)
    except AetherError:
        return None


def _agent_by_prompt(catalog: CasteCatalog, fields: Mapping[str, Any] | None) -> str | None:
    """The agent whose file's body the request's system prompt holds (the longest, if several do)."""
    system = _system_text(fields)
    if not system:
        return None
    found = [
        agent
        for agent in catalog.scan.agents.values()
        if len(body := agent.prompt.strip()) >= MIN_PROMPT and body in system
    ]
    return max(found, key=lambda agent: len(agent.prompt.strip())).name if found else None


def _system_text(fields: Mapping[str, Any] | None) -> str:
    system = fields.get("system") if fields is not None else None
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    return ""


def _task(fields: Mapping[str, Any] | None) -> str:
    """A sub-agent's task: the last text of its first message (where Claude Code puts the Agent call's prompt)."""
    messages = fields.get("messages") if fields is not None else None
    first = messages[0] if isinstance(messages, list) and messages else None
    content = first.get("content") if isinstance(first, dict) else None
    if isinstance(content, str):
        return content[:MAX_TASK]
    blocks = content if isinstance(content, list) else []
    texts = [str(b["text"]) for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return texts[-1][:MAX_TASK] if texts else ""


def _text(value: object) -> str | None:
    return value[:200] if isinstance(value, str) and value else None
