"""Warm workers: Claude Code processes started ahead of their task.

Most of a one-turn worker's time is the CLI starting. A CLI started with
`--input-format stream-json` starts, then waits for its task on stdin, so a
spawn that finds one ready skips that wait. A warm worker is used only by a
spawn whose command line, environment and working directory are exactly the
ones it was started with (same model, settings, token, cwd), is never shared
between two tasks, and is killed when it has waited too long. A proxied warm
worker holds a gateway key of its own, which passes to the worker that takes
it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import anyio
from anyio.abc import TaskGroup

from .process import kill_group, kill_group_now, start_process
from .spec import WorkerSpec, build_command, build_env

log = logging.getLogger("aether_mcp")

Key = tuple[tuple[str, ...], str, tuple[tuple[str, str], ...]]


def warm_key(spec: WorkerSpec, environ: Mapping[str, str]) -> Key:
    """Everything that shapes a worker before it reads its task, but its own gateway key."""
    spec = replace(spec, gateway_key="(each its own)") if spec.gateway_url is not None else spec
    return tuple(build_command(spec)), str(spec.cwd), tuple(sorted(build_env(spec, environ).items()))


@dataclass
class Warm:
    process: asyncio.subprocess.Process
    gateway_key: str | None


class WarmPool:
    def __init__(
        self,
        environ: Mapping[str, str],
        lease: Callable[[WorkerSpec], str | None],
        release: Callable[[str], object],
        idle_s: float = 300.0,
    ) -> None:
        self._environ = environ
        self._lease = lease  # a gateway key for a proxied spec; None for one that is not
        self._release = release
        self.idle_s = idle_s
        self._idle: dict[Key, list[Warm]] = {}
        self._filling: set[Key] = set()

    def take(self, spec: WorkerSpec) -> Warm | None:
        """A live warm process for exactly this spec, removed from the pool; None when there is none."""
        waiting = self._idle.get(warm_key(spec, self._environ), [])
        while waiting:
            warm = waiting.pop(0)
            if warm.process.returncode is None:
                return warm
            self._end_now(warm)  # it died waiting: whatever it started goes too
        return None

    def _end_now(self, warm: Warm) -> None:
        kill_group_now(warm.process.pid)
        if warm.gateway_key is not None:
            self._release(warm.gateway_key)

    async def fill(self, group: TaskGroup, spec: WorkerSpec, count: int) -> None:
        """Start warm processes for `spec` until `count` wait; each is reaped after `idle_s` unused."""
        key = warm_key(spec, self._environ)
        if key in self._filling:
            return
        self._filling.add(key)
        try:
            waiting = self._idle.setdefault(key, [])
            while len(waiting) < count:
                own = replace(spec, gateway_key=self._lease(spec)) if spec.gateway_url else spec
                try:
                    warm = Warm(await start_process(own, self._environ, warm=True), own.gateway_key)
                except BaseException:
                    if own.gateway_key is not None:
                        self._release(own.gateway_key)  # no process holds it: it must not stay valid
                    raise
                waiting.append(warm)
                group.start_soon(self._reap, key, warm)
        except Exception as exc:  # noqa: BLE001 (a pool that cannot fill is no reason to end the server)
            log.warning("warm workers for %s not started: %s: %s", spec.caste, type(exc).__name__, exc)
        finally:
            self._filling.discard(key)

    async def _reap(self, key: Key, warm: Warm) -> None:
        await anyio.sleep(self.idle_s)
        waiting = self._idle.get(key, [])
        if warm in waiting:
            waiting.remove(warm)
            await self._end(warm)

    async def _end(self, warm: Warm) -> None:
        await kill_group(warm.process)
        if warm.gateway_key is not None:
            self._release(warm.gateway_key)

    def kill_all_now(self) -> None:
        for waiting in self._idle.values():
            for warm in waiting:
                kill_group_now(warm.process.pid)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            for waiting in self._idle.values():
                while waiting:
                    await self._end(waiting.pop())
