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
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from ..errors import AetherError, UnknownCasteError
from ..profile.catalog import CasteCatalog
from ..profile.schema import ModelMetadata
from .leases import Leases, lease_for
from .process import kill_group, kill_group_now, start_process
from .request import WorkerShape
from .spec import WorkerSpec, build_command, build_env, build_spec
from .wire import Key

log = logging.getLogger("aether_mcp")

WarmIdentity = tuple[tuple[str, ...], str, tuple[tuple[str, str], ...]]
EACH_ITS_OWN = "(each its own key)"  # stands for the gateway key in a warm process's identity
# Warm workers in all, whatever the profile asks: each is a whole Claude Code CLI (about 200 MB resident).
MAX_WARM_WORKERS = 8


def warm_key(spec: WorkerSpec, environ: Mapping[str, str]) -> WarmIdentity:
    """Everything that shapes a worker before it reads its task, but its own gateway key."""
    key = EACH_ITS_OWN if spec.proxied else None
    return tuple(build_command(spec)), str(spec.cwd), tuple(sorted(build_env(spec, environ, key).items()))


@dataclass
class Warm:
    """A CLI started ahead of its task, with its own key at the gateway (a proxied one's). A worker that takes
    it takes both; otherwise `end` or `end_now`, its one ending, kills it and releases the key."""

    key: Key | None
    process: asyncio.subprocess.Process | None = None

    async def end(self) -> None:
        if self.process is not None:
            await kill_group(self.process)
        self._release()

    def end_now(self) -> None:
        if self.process is not None:
            kill_group_now(self.process.pid)
        self._release()

    def _release(self) -> None:
        if self.key is not None:
            self.key.release()


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
        self._idle: dict[WarmIdentity, list[Warm]] = {}
        self._filling: set[WarmIdentity] = set()

    async def prestart(self, group: TaskGroup, catalog: CasteCatalog, server_dir: Path) -> None:
        """Fill the pool for each caste the profile asks for, so even the first spawn is warm."""
        try:
            self.idle_s = catalog.profile.workers.warm_idle_s
            self.counts = warm_counts(catalog)
            specs = []
            for caste in self.counts:
                # The caste's usual worker, its task still to come.
                spec = build_spec(catalog, WorkerShape(caste=caste), server_dir=server_dir, environ=self._environ)
                if spec.proxied:
                    spec = spec.placed(gateway_url=self._leases.start_gateway(group))
                specs.append(spec)
        except AetherError as exc:  # a spawn will report the same problem when it happens
            log.warning("no warm workers: %s", exc)
            return
        for spec in specs:
            group.start_soon(self.fill, group, spec, self.counts[spec.caste])

    def waiting(self) -> int:
        """How many warm processes wait for a task now."""
        return sum(1 for idle in self._idle.values() for warm in idle if _alive(warm))

    def take(self, spec: WorkerSpec) -> Warm | None:
        """A live warm process for exactly this spec, removed from the pool: the worker that takes it takes its
        process and its key."""
        waiting = self._idle.get(warm_key(spec, self._environ), [])
        while waiting:
            warm = waiting.pop(0)
            if not _alive(warm):
                warm.end_now()  # it died waiting: whatever it started goes too
                continue
            return warm
        return None

    def refill(self, group: TaskGroup, spec: WorkerSpec, *, taken: bool, usual: bool) -> None:
        """Top the caste's warm workers up: after a take, or when its usual worker found none.

        A spawn with its own model, directory or answer schema, or a follow-up, is not the caste's usual
        worker: nothing is pre-started for it."""
        count = self.counts.get(spec.caste, 0)
        if count and (taken or usual):
            group.start_soon(self.fill, group, spec, count)

    async def fill(self, group: TaskGroup, spec: WorkerSpec, count: int) -> None:
        """Start warm processes for `spec` until `count` wait; each is reaped after `idle_s` unused."""
        key = warm_key(spec, self._environ)
        if key in self._filling:
            return
        self._filling.add(key)
        try:
            waiting = self._idle.setdefault(key, [])
            while len(waiting) < count:
                warm = Warm(self._leases.issue(lease_for(spec, self._metadata())) if spec.proxied else None)
                try:
                    warm.process = await start_process(spec, self._environ, warm.key.value if warm.key else None, True)
                except BaseException:
                    warm.end_now()  # no process holds its key: it must not stay valid
                    raise
                waiting.append(warm)
                group.start_soon(self._reap, key, warm)
        except Exception as exc:  # noqa: BLE001 (a pool that cannot fill is no reason to end the server)
            log.warning("warm workers for %s not started: %s: %s", spec.caste, type(exc).__name__, exc)
        finally:
            self._filling.discard(key)

    async def _reap(self, key: WarmIdentity, warm: Warm) -> None:
        await anyio.sleep(self.idle_s)
        waiting = self._idle.get(key, [])
        if warm in waiting:
            waiting.remove(warm)
            await warm.end()

    def kill_all_now(self) -> None:
        for waiting in self._idle.values():
            for warm in waiting:
                if warm.process is not None:
                    kill_group_now(warm.process.pid)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            for waiting in self._idle.values():
                while waiting:
                    await waiting.pop().end()


def _alive(warm: Warm) -> bool:
    return warm.process is not None and warm.process.returncode is None


def warm_counts(catalog: CasteCatalog) -> dict[str, int]:
    """Warm workers wanted per caste, keyed by the caste's own name; MAX_WARM_WORKERS in all, the first castes
    listed first. A caste whose workers run on a Ray cluster has none here."""
    counts: dict[str, int] = {}
    room = MAX_WARM_WORKERS
    for name, count in catalog.profile.workers.warm_workers.items():
        try:
            caste = catalog.find(name)
        except UnknownCasteError:  # a typo there must not stop spawns: the caste just gets no warm workers
            log.warning("workers.warm_workers names no caste: %s", name)
            continue
        if catalog.settings(caste).runs_on == "ray":
            continue
        if count and room:
            counts[caste] = min(count, room)
            room -= counts[caste]
        elif count:
            log.warning("workers.warm_workers: no warm worker for %s, past the %d in all", caste, MAX_WARM_WORKERS)
    return counts
