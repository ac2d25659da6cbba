"""`aether-mcp run -- COMMAND...`: a session whose every model request passes through aether-mcp's gateway.

The command (`claude`, `aether build ...`, a script) runs with the terminal,
its arguments and its exit status as they are. What changes is its
environment: `ANTHROPIC_BASE_URL` names a gateway on loopback, and its
credential is a key that is valid for this session alone; the real tokens
stay in this process. The gateway sends each caste's sub-agent to its
caste's model (see `router`), the rest where it was going, and every
conversation leaves a record in the spawn log, with mode `wire`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup

from .. import procs
from ..errors import AetherError
from ..git import project_root
from ..private_files import read_regular
from ..profile.store import ProfileStore
from ..workers.gateway import Gateway
from ..workers.preflight import Preflight, ProxyChecker
from ..workers.publish import Publisher
from ..workers.spawn_log import append_entry, forget_running, log_path
from .agent import WireAgent
from .hook import KEY_VAR, URL_VAR
from .router import MainRoute, SessionRouter

log = logging.getLogger("aether_mcp")

# What would make Claude Code send its requests past the gateway, or with another credential than the key.
OVERRIDING_ENV = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY")
OVERRIDING_SETTINGS = ("apiKeyHelper",)
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
MAX_SETTINGS_BYTES = 1024 * 1024


def main_route(environ: Mapping[str, str], store: ProfileStore) -> MainRoute:
    """Where the session's own requests go: the endpoint and credentials the environment already has, else the
    profile's proxy. Chosen once, and said when the session starts."""
    base = environ.get("ANTHROPIC_BASE_URL")
    if base:
        if environ.get("ANTHROPIC_AUTH_TOKEN"):
            return MainRoute(base, environ["ANTHROPIC_AUTH_TOKEN"], "authorization", "ANTHROPIC_BASE_URL")
        return MainRoute(base, environ.get("ANTHROPIC_API_KEY") or None, "x-api-key", "ANTHROPIC_BASE_URL")
    profile, where = store.load_trusted()
    if profile.proxy is not None:
        token = profile.proxy.auth_token.get_secret_value() if profile.proxy.auth_token else None
        return MainRoute(profile.proxy.endpoint, token, "authorization", f"the proxy of {where.path}")
    if environ.get("ANTHROPIC_API_KEY"):
        return MainRoute("https://api.anthropic.com", environ["ANTHROPIC_API_KEY"], "x-api-key", "ANTHROPIC_API_KEY")
    raise AetherError(
        "The session's own requests have nowhere to go: ANTHROPIC_BASE_URL is not set, the profile has no proxy, "
        "and there is no ANTHROPIC_API_KEY (a Claude subscription's login cannot be passed through a gateway)",
        f"Set ANTHROPIC_BASE_URL (and its token) as Claude Code would use it, or give {where.path} a proxy",
    )


def settings_overrides(cwd: Path, environ: Mapping[str, str]) -> list[str]:
    """Each Claude Code setting that would send the session's requests past the gateway (its `env` sets the base
    URL or a credential, or an apiKeyHelper replaces the key): the file and the setting."""
    home = environ.get("HOME")
    root = project_root(cwd) or cwd
    files = [Path("/etc/claude-code/managed-settings.json")]
    files += [Path(home) / ".claude" / "settings.json"] if home else []
    files += [folder / ".claude" / name for folder in {cwd, root} for name in ("settings.json", "settings.local.json")]
    found = []
    for path in files:
        try:
            data = json.loads(read_regular(path, MAX_SETTINGS_BYTES)[0] or b"{}")
        except (OSError, ValueError):
            continue
        env = data.get("env") if isinstance(data, dict) else None
        found += [f"{path}: env {name}" for name in OVERRIDING_ENV if isinstance(env, dict) and name in env]
        found += [f"{path}: {name}" for name in OVERRIDING_SETTINGS if isinstance(data, dict) and name in data]
    return sorted(set(found))


def session_env(environ: Mapping[str, str], url: str, key: str) -> dict[str, str]:
    """The command's environment: the gateway and the session's key in place of the endpoint and credentials."""
    env = {k: v for k, v in environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")}
    env.update({"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": key, URL_VAR: url, KEY_VAR: key})
    return env


class WireSession:
    """One wrapped command: its gateway, its conversations' records, and the command itself."""

    def __init__(self, store: ProfileStore, main: MainRoute, environ: Mapping[str, str]) -> None:
        self.store = store
        self.environ = environ
        self.router = SessionRouter(store, main, on_start=self._started, on_end=self._ended)
        self.gateway = Gateway(self.router, control=self.router.control)
        self.publisher = Publisher(store.state_dir, store.cwd)
        self.checker = ProxyChecker()
        self.settled: list[WireAgent] = []
        self._settles: TaskGroup | None = None  # the judging of conversations that ended
        self._closing = False

    async def run(self, command: list[str], stderr: Any) -> int:
        failed: AetherError | None = None
        code = 0
        async with anyio.create_task_group() as group:
            url = self.gateway.bind()  # served once the command has started: its first request waits in the backlog
            group.start_soon(self.publisher.run)
            main = self.router.main
            print(
                f"aether-mcp: model requests go through the gateway at {url}: each caste's sub-agents to the "
                f"caste's model, the session's own to {main.upstream} (from {main.source}).",
                file=stderr,
                flush=True,
            )
            async with anyio.create_task_group() as settles:  # left only once every conversation is recorded
                self._settles = settles
                # Signals are taken before the command starts: one that came between would end this process
                # alone, and leave the command running with no gateway. They wait in the receiver until passed on.
                with anyio.open_signal_receiver(*FORWARDED) as signals:
                    try:
                        env = session_env(self.environ, url, self.router.key)
                        process = await anyio.open_process(command, stdin=None, stdout=None, stderr=None, env=env)
                    except OSError as exc:
                        failed = AetherError(f"Cannot run {command[0]}: {exc.strerror or exc}")
                    else:
                        group.start_soon(_forward_signals, signals, process)
                        self.gateway.start(group)
                        code = await process.wait()
                self._closing = True  # what is still open is settled here, as ended with the session
                for agent in self.router.end_all():
                    settles.start_soon(self._settle, agent, agent.identity.agent_id is None)
            await self.gateway.close()
            group.cancel_scope.cancel()
        if failed is not None:
            raise failed
        return code

    def _started(self, agent: WireAgent) -> None:
        agent.lease.on_change = lambda: self.publisher.touch(agent)
        self.publisher.publish(agent)

    def _ended(self, agent: WireAgent) -> None:
        """Claude Code said a sub-agent stopped: it is judged in the background (deployments are asked for)."""
        if self._settles is not None and not self._closing and agent.identity.agent_id is not None:
            self._settles.start_soon(self._settle, agent)

    async def _settle(self, agent: WireAgent, stopped: bool = True) -> None:
        """Judge a conversation that ended, and move its record from the live notes into the spawn log."""
        if not agent.live:
            return
        lease = agent.lease
        deployments = await anyio.to_thread.run_sync(self.checker.deployments, lease.upstream, lease.token)
        metadata = (self.store.load()[0].model_metadata or {}).get(agent.model or "")
        listed = f"lists {len(deployments)} deployment(s)" if deployments is not None else "lists no deployments"
        preflight = Preflight(True, f"the endpoint {lease.upstream} {listed} (GET /model/info)", deployments)
        agent.end(preflight, metadata.provider if metadata else None, stopped=stopped)
        self.publisher.publish(agent)
        state = self.store.state_dir
        try:
            append_entry(log_path(state), self.store.cwd, agent.record().log_entry())
            forget_running(state, agent.worker_id)
        except (AetherError, OSError) as exc:
            log.warning("the record of %s was not written: %s", agent.worker_id, exc)
        self.settled.append(agent)


async def _forward_signals(signals: Any, process: Process) -> None:
    """Signals sent to this process go on to the command. Ctrl-C at a terminal reaches the command by itself
    (it is in the terminal's foreground group): passed on as well, it would count twice."""
    interactive = os.isatty(sys.stdin.fileno()) if sys.stdin is not None else False
    async for signum in signals:
        if signum == signal.SIGINT and interactive:
            continue
        process.send_signal(signum)


def run_command(command: list[str], store: ProfileStore, environ: Mapping[str, str], stderr: Any) -> int:
    """Run `command` wrapped; its exit status (a command killed by a signal: this process ends the same way)."""
    if not command:
        raise AetherError("No command to run", "Name one after --: aether-mcp run -- claude")
    overriding = settings_overrides(store.cwd, environ)
    if overriding:
        raise AetherError(
            "Claude Code settings would send this session's requests past aether-mcp's gateway, so castes would "
            f"run unrouted: {'; '.join(overriding)}",
            "Move these into the shell's environment (aether-mcp run passes them on as the session's own endpoint "
            "and credentials), then run the command again",
        )
    store.load_trusted()  # the profile's tokens go to its endpoints only once the user trusts it
    main = main_route(environ, store)
    procs.keep_environment_private()  # this process holds the real tokens; the command's tools run as this user
    session = WireSession(store, main, environ)
    code = anyio.run(session.run, command, stderr)
    _summary(session, stderr)
    if code < 0:  # killed by a signal: end the same way, so that a shell sees what it would have seen
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's and SIGSTOP's cannot be set: they are default
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _summary(session: WireSession, stderr: Any) -> None:
    agents = [a for a in session.settled if a.identity.agent_id is not None]
    requests = sum(len(a.lease.records) for a in session.settled)
    verified = sum(1 for a in agents if a.record().routing_verified)
    if not requests:
        print(
            "aether-mcp: no model request of this session came through the gateway: nothing was asked, or the "
            "command does not start Claude Code",
            file=stderr,
        )
        return
    print(
        f"aether-mcp: {requests} model request(s) through the gateway; {len(agents)} sub-agent(s), {verified} "
        "verified on their castes' models. `aether-mcp workers` lists them.",
        file=stderr,
    )
