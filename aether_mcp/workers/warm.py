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
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from ..errors import AetherError, UnknownCasteError
from ..profile.catalog import CasteCatalog
from ..profile.schema import ModelMetadata
from .leases import Leases
from .process import kill_group, kill_group_now, start_process
from .request import SpawnRequest
from .spec import WorkerSpec, build_command, build_env, build_spec

if TYPE_CHECKING:
    from .gateway import Lease

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
    """The warm processes of one colony, per caste as `workers.warm_workers` asks, topped up as they are taken."""

    def __init__(
        self,
        environ: Mapping[str, str],
        leases: Leases,
        metadata: Callable[[], dict[str, ModelMetadata]],
        idle_s: float = 300.0,
    ) -> None:
        self._environ = environ
        self._leases = leases
        self._metadata = metadata  # the profile's model_metadata: the prices a warm worker's lease measures by
        self.idle_s = idle_s
        self.counts: dict[str, int] = {}  # warm workers wanted per caste
        self._idle: dict[Key, list[Warm]] = {}
        self._filling: set[Key] = set()

    async def prestart(self, group: TaskGroup, catalog: CasteCatalog, home: Path) -> None:
        """Fill the pool for each caste the profile asks for, so even the first spawn is warm."""
        try:
            self.idle_s = catalog.profile.workers.warm_idle_s
            self.counts = warm_counts(catalog)
            specs = []
            for caste in self.counts:
                # A warm worker has no task until it is taken: the empty one is never checked or sent.
                request = SpawnRequest.model_construct(caste=caste, task="")
                spec = build_spec(catalog, request, home=home, environ=self._environ)
                if spec.settings.endpoint:
                    spec = spec.placed(gateway_url=await self._leases.url(group))
                specs.append(spec)
        except AetherError as exc:  # a spawn will report the same problem when it happens
            log.warning("no warm workers: %s", exc)
            return
        for spec in specs:
            group.start_soon(self.fill, group, spec, self.counts[spec.caste])

    def waiting(self) -> int:
        """How many warm processes wait for a task now."""
        return sum(1 for idle in self._idle.values() for warm in idle if warm.process.returncode is None)

    def take(self, spec: WorkerSpec, lease: Lease | None) -> tuple[Warm | None, WorkerSpec]:
        """A live warm process for exactly this spec, removed from the pool, and the spec it now runs:
        a proxied warm process holds a key of its own, which from now on carries the worker's `lease`."""
        waiting = self._idle.get(warm_key(spec, self._environ), [])
        while waiting:
            warm = waiting.pop(0)
            if warm.process.returncode is not None:
                self._end_now(warm)  # it died waiting: whatever it started goes too
                continue
            if warm.gateway_key is not None and lease is not None:
                self._leases.release(spec.gateway_key)
                self._leases.adopt(warm.gateway_key, lease)
                spec = replace(spec, gateway_key=warm.gateway_key)
            return warm, spec
        return None, spec

    def refill(self, group: TaskGroup, spec: WorkerSpec, *, taken: bool, usual: bool) -> None:
        """Top the caste's warm workers up: after a take, or when its usual worker found none.

        A spawn with its own model, directory or answer schema, or a follow-up, is not the caste's usual
        worker: nothing is pre-started for it."""
        count = self.counts.get(spec.caste, 0)
        if count and (taken or usual):
            group.start_soon(self.fill, group, spec, count)

    def _end_now(self, warm: Warm) -> None:
        kill_group_now(warm.process.pid)
        self._leases.release(warm.gateway_key)

    async def fill(self, group: TaskGroup, spec: WorkerSpec, count: int) -> None:
        """Start warm processes for `spec` until `count` wait; each is reaped after `idle_s` unused."""
        key = warm_key(spec, self._environ)
        if key in self._filling:
            return
        self._filling.add(key)
        try:
            waiting = self._idle.setdefault(key, [])
            while len(waiting) < count:
                own = spec
                if spec.gateway_url:
                    own = replace(spec, gateway_key=self._leases.lease(spec, self._metadata())[0])
                try:
                    warm = Warm(await start_process(own, self._environ, warm=True), own.gateway_key)
                except BaseException:
                    self._leases.release(own.gateway_key)  # no process holds it: it must not stay valid
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
        self._leases.release(warm.gateway_key)

    def kill_all_now(self) -> None:
        for waiting in self._idle.values():
            for warm in waiting:
                kill_group_now(warm.process.pid)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            for waiting in self._idle.values():
                while waiting:
                    await self._end(waiting.pop())


def warm_counts(catalog: CasteCatalog) -> dict[str, int]:
    """Warm workers wanted per caste, keyed by the caste's own name."""
    counts = {}
    for name, count in catalog.profile.workers.warm_workers.items():
        try:
            if count:
                counts[catalog.find(name)] = count
        except UnknownCasteError:  # a typo there must not stop spawns: the caste just gets no warm workers
            log.warning("workers.warm_workers names no caste: %s", name)
    return counts
