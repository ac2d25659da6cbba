"""Would a wrapped session route a caste's sub-agent? doctor's end-to-end check of `aether-mcp run`.

It starts a session's router and gateway as `aether-mcp run` does (with no
command), runs the project's installed SubagentStart hook as Claude Code
would, for a sub-agent of the caste, and asks the router where that
sub-agent's first request would go. Nothing is sent upstream.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import anyio

from ..profile.store import ProfileStore
from ..workers.gateway import Gateway
from .hook import KEY_VAR, URL_VAR
from .router import MainRoute, SessionRouter

PROBE_AGENT = "aether-mcp-doctor-probe"
HOOK_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Route:
    """Where the probe's sub-agent would go, and how it was told apart; `problem` when it would not be routed."""

    problem: str | None
    detail: str


def probe_route(store: ProfileStore, main: MainRoute, hook: str, agent: str, environ: Mapping[str, str]) -> Route:
    """Run `hook` (the SubagentStart command install wrote) for a sub-agent of `agent` against a session's
    gateway, then route that sub-agent's first request."""
    return anyio.run(_probe, store, main, hook, agent, environ)


async def _probe(store: ProfileStore, main: MainRoute, hook: str, agent: str, environ: Mapping[str, str]) -> Route:
    router = SessionRouter(store, main, on_start=lambda _: None, on_end=lambda _: None)
    gateway = Gateway(router, control=router.control)
    async with anyio.create_task_group() as group:
        url = gateway.start(group)
        event = {"session_id": "doctor", "agent_id": PROBE_AGENT, "agent_type": agent, "hook_event_name": "start"}
        try:
            done = await anyio.run_process(
                ["/bin/sh", "-c", hook],
                input=json.dumps(event).encode(),
                env={**environ, URL_VAR: url, KEY_VAR: router.key},
                cwd=store.cwd,
                check=False,
            )
        except OSError as exc:
            done = subprocess.CompletedProcess(hook, -1, b"", str(exc).encode())
        await gateway.close()
        group.cancel_scope.cancel()
    said = done.stderr.decode(errors="replace").strip()
    headers = {"authorization": f"Bearer {router.key}", "x-claude-code-session-id": "doctor"}
    lease = router.route({**headers, "x-claude-code-agent-id": PROBE_AGENT}, {"model": "asked"})
    probed = next(iter(router.live()), None)
    if lease is None or probed is None or probed.identified != "hook":
        return Route(f"the SubagentStart hook did not tell the gateway of the sub-agent ({said or 'no word'})", hook)
    if probed.caste is None:
        return Route(f"{agent} is no caste, so its sub-agents would pass on the model they ask for", hook)
    model = lease.send_model or "the model it asks for (the caste has none)"
    return Route(
        None, f"a sub-agent of {agent}, told apart by the SubagentStart hook, would go to {model} at {lease.upstream}"
    )
