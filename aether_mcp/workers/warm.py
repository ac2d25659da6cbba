"""Warm workers: Claude Code processes started ahead of their task.

Most of a one-turn worker's time is the CLI starting. A CLI started with
`--input-format stream-json` starts, then waits for its task on stdin, so a
spawn that finds one ready skips that wait. A warm worker is used only by a
spawn whose command line, environment and working directory are exactly the
ones it was started with (same model, settings, token, cwd), is never shared
between two tasks, and is killed when it has waited too long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import anyio
from anyio.abc import TaskGroup

from .process import kill_group, kill_group_now, start_process
from .spec import WorkerSpec, build_command, build_env

log = logging.getLogger("aether_mcp")

Key = tuple[tuple[str, ...], str, tuple[tuple[str, str], ...]]


def warm_key(spec: WorkerSpec, environ: Mapping[str, str]) -> Key:
    """Everything that shapes a worker before it reads its task."""
    return tuple(build_command(spec)), str(spec.cwd), tuple(sorted(build_env(spec, environ).items()))


class WarmPool:
    def __init__(self, environ: Mapping[str, str], idle_s: float = 300.0) -> None:
        self._environ = environ
        self.idle_s = idle_s
        self._idle: dict[Key, list[asyncio.subprocess.Process]] = {}
        self._filling: set[Key] = set()

    def take(self, spec: WorkerSpec) -> asyncio.subprocess.Process | None:
        """A live warm process for exactly this spec, removed from the pool; None when there is none."""
        waiting = self._idle.get(warm_key(spec, self._environ), [])
        while waiting:
            process = waiting.pop(0)
            if process.returncode is None:
                return process
            kill_group_now(process.pid)  # it died waiting: whatever it started goes too
        return None

    async def fill(self, group: TaskGroup, spec: WorkerSpec, count: int) -> None:
        """Start warm processes for `spec` until `count` wait; each is reaped after `idle_s` unused."""
        key = warm_key(spec, self._environ)
        if key in self._filling:
            return
        self._filling.add(key)
        try:
            waiting = self._idle.setdefault(key, [])
            while len(waiting) < count:
                process = await start_process(spec, self._environ, warm=True)
                waiting.append(process)
                group.start_soon(self._reap, key, process)
        except Exception as exc:  # noqa: BLE001 (a pool that cannot fill is no reason to end the server)
            log.warning("warm workers for %s not started: %s: %s", spec.caste, type(exc).__name__, exc)
        finally:
            self._filling.discard(key)

    async def _reap(self, key: Key, process: asyncio.subprocess.Process) -> None:
        await anyio.sleep(self.idle_s)
        waiting = self._idle.get(key, [])
        if process in waiting:
            waiting.remove(process)
            await kill_group(process)

    def kill_all_now(self) -> None:
        for waiting in self._idle.values():
            for process in waiting:
                kill_group_now(process.pid)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            for waiting in self._idle.values():
                while waiting:
                    await kill_group(waiting.pop())
