"""Where the profile lives, reading it once per change, and the three things done with it: look up, set, reset.

Several Claude Code sessions may share one profile, so every write happens
under a file lock, re-reads the file it is about to change, and replaces it
atomically. A file that does not parse is never overwritten.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..atomic import write_atomic
from ..errors import ProfileError, UnknownCasteError
from ..flat_schema import FlatRecord
from ..git import project_root
from .agents import Agent, AgentScan, agent_dirs, scan_agents
from .catalog import CasteCatalog
from .location import FILE_NAME, STATE_DIR, Location, absolute, locate
from .names import SLOT_NAMES
from .parsing import MAX_PROFILE_BYTES, parse_profile, read_profile
from .resolution import CasteModel
from .schema import Profile, check_model_name, check_new_caste_name
from .trust import TrustStore, sensitive_settings, untrusted_error
from .worker_settings import agent_exposure


class CasteModels(FlatRecord):
    castes: list[CasteModel] = Field(
        description="One entry per caste asked for: the profile's in file order, then the agents' it does not name."
    )
    path: str = Field(description="The profile file in use.")
    rule: str = Field(description="Which rule chose that file (--profiles, AETHER_MODEL_PROFILES, ...).")
    proxy_endpoint: str | None = Field(
        description="The proxy workers talk to; null when they use the CLI's own backend."
    )
    agent_problems: list[str] = Field(
        default_factory=list, description="Agent files that could not be read in full: path and reason."
    )
    routing: Literal["process", "wire"] = Field(
        default="process",
        description="How this session's castes run. process: a caste's sub-agent call is handed to spawn_worker, "
        "which runs it as a Claude Code process of its own on the caste's model. wire: the session runs through "
        "`aether-mcp run`, whose gateway sends each caste's own sub-agents (the Agent tool, as usual) to the "
        "caste's model.",
    )


class SetResult(FlatRecord):
    caste: str = Field(description="The caste, as the profile spells it.")
    model: str | None = Field(description="The model now in effect for the caste (null: the CLI's default).")
    slot: str | None = Field(default=None, description="The model slot stored, when the model given was one.")
    previous: str | None = Field(description="The model in effect before the change (null: the CLI's default).")
    path: str = Field(description="The profile file that was written.")
    created: bool = Field(default=False, description="True when this write created the profile file.")
    warnings: list[str] = Field(default_factory=list, description="Things worth checking; the change was made.")


class ResetResult(FlatRecord):
    caste: str = Field(description="The caste, as the profile spells it.")
    model: str | None = Field(description="The model now in effect (null: the CLI's own default).")
    had_override: bool = Field(description="False when there was no override to remove (nothing was written).")
    path: str = Field(description="The profile file.")


@dataclass(frozen=True)
class _Parsed:
    """A parsed profile and the stat of the file it came from: parsed again only when the file changes."""

    path: Path
    signature: tuple[int, int, int, int]  # mtime_ns, size, inode; the trust file's mtime_ns
    profile: Profile
    untrusted: list[str]  # the settings that can run code or move a secret, and are not trusted


class TrustResult(FlatRecord):
    path: str = Field(description="The profile or agent file now trusted.")
    settings: list[str] = Field(description="The settings trusted: each can run a program or receive a secret.")


# Rules that find a profile in the working directory, which may be anyone's (a cloned repository).
NEEDS_TRUST = (".aether/model-profiles.yaml", "model-profiles.yaml")


class ProfileStore:
    """One profile file: cached reads keyed on the file's stat, locked atomic writes."""

    def __init__(
        self,
        explicit: Path | str | None = None,
        cwd: Path | None = None,
        environ: Mapping[str, str] | None = None,
        trust: TrustStore | None = None,
    ) -> None:
        self._explicit = explicit
        self.cwd = (cwd or Path.cwd()).resolve()
        self._environ = os.environ if environ is None else environ
        self._cache: _Parsed | None = None
        self._guard = threading.Lock()
        self._trust = trust or TrustStore()
        self._agent_folders: list[tuple[Path, bool]] | None = None
        self._catalog_cache: tuple[object, CasteCatalog] | None = None

    @property
    def location(self) -> Location:
        return locate(self._explicit, self.cwd, self._environ)

    @property
    def state_dir(self) -> Path:
        """Where the spawn log and the workers' transcripts go."""
        return self.cwd / STATE_DIR

    def load(self) -> tuple[Profile, Location]:
        """The current profile, re-parsed only when the file changed since the last read.

        For routing only: what runs a worker or talks to a proxy takes `load_trusted`."""
        parsed, where = self._parsed()
        return parsed.profile, where

    def load_trusted(self) -> tuple[Profile, Location]:
        """The current profile, when every setting in it that can run code or move a secret is trusted."""
        parsed, where = self._parsed()
        if parsed.untrusted:
            raise untrusted_error(where.path, parsed.untrusted)
        return parsed.profile, where

    def untrusted(self) -> list[str]:
        """The settings of the current profile that wait for `aether-mcp trust`."""
        return self._parsed()[0].untrusted

    def trust(self, path: Path | str | None = None) -> TrustResult:
        """Trust the settings in `path` (default: the profile in use) that can run code or move a secret.

        `path` may be one of the project's agent files: then its tools, permission mode, hooks and MCP servers."""
        target = absolute(path, self.cwd) if path else self.location.path
        agent = next((a for a in self.agents().agents.values() if a.path.resolve() == target.resolve()), None)
        if agent is not None:
            exposure = self.exposure(agent)
            self._trust.trust(agent.path, exposure)
            return TrustResult(path=str(agent.path), settings=sorted(exposure))
        profile, data = read_profile(_read(target), target, self._environ)
        settings = sensitive_settings(profile, data)
        self._trust.trust(target, settings)
        self._cache = None
        return TrustResult(path=str(target), settings=sorted(settings))

    def trust_project(self) -> list[TrustResult]:
        """Trust the profile in use (unless it is the packaged one) and every project agent that waits for trust."""
        results = [] if self.location.packaged else [self.trust()]
        return results + [self.trust(agent.path) for agent in self.untrusted_agents()]

    def untrusted_agents(self) -> list[Agent]:
        """The project's agents whose tools, permission mode, hooks or MCP servers wait for `aether-mcp trust`.

        The user's own agents (~/.claude/agents) are trusted as their own settings are."""
        return [agent for agent in self.agents().agents.values() if self.waiting(agent)]

    def exposure(self, agent: Agent) -> dict[str, Any]:
        """What `agent`'s prompt could do beyond reading, with the profile in use (see `agent_exposure`)."""
        return agent_exposure(self.load()[0], agent)

    def waiting(self, agent: Agent) -> list[str]:
        """What in `agent` can run a program or widen a worker's permissions and is not trusted."""
        settings = self.exposure(agent)
        if agent.user_level or not settings or self._trust.trusts(agent.path, settings):
            return []
        return sorted(name for name in settings if name != "prompt")  # the prompt is what they are trusted for

    def agents(self) -> AgentScan:
        """The Claude Code agents a worker in this project would see (each file parsed again only when it changed)."""
        if self._agent_folders is None:  # the working directory, its work tree and HOME stay put: found once
            home = self._environ.get("HOME")
            self._agent_folders = agent_dirs(self.cwd, project_root(self.cwd), Path(home) if home else None)
        return scan_agents(self._agent_folders)

    def catalog(self, *, trusted: bool = False) -> CasteCatalog:
        """Every caste: the profile's and the agents'. `trusted`: for running workers, so the profile must be
        trusted, and an agent's settings are given to a worker only once trusted."""
        profile, _ = self.load_trusted() if trusted else self.load()
        return self._catalog(profile, trusted)

    def _catalog(self, profile: Profile, trusted: bool) -> CasteCatalog:
        """The catalog, built again only when the profile or an agent file changed (this runs on every look-up)."""
        scan = self.agents()
        key = (id(profile), tuple(map(id, scan.agents.values())), tuple(scan.problems), trusted)
        if self._catalog_cache is None or self._catalog_cache[0] != key:
            catalog = CasteCatalog(profile, scan, self._environ, self.waiting if trusted else None)
            self._catalog_cache = (key, catalog)
        return self._catalog_cache[1]

    def _parsed(self) -> tuple[_Parsed, Location]:
        where = self.location
        try:
            stat = where.path.stat()
        except FileNotFoundError:
            raise ProfileError(f"Profile not found: {where.path} (chosen by {where.rule}).") from None
        # The trust file counts too: `aether-mcp trust` run beside a live server takes effect at once.
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino, self._trust.version())
        cached = self._cache
        if cached is not None and cached.path == where.path and cached.signature == signature:
            return cached, where
        profile, data = read_profile(_read(where.path), where.path, self._environ)
        untrusted: list[str] = []
        if where.rule in NEEDS_TRUST:
            settings = sensitive_settings(profile, data)
            if settings and not self._trust.trusts(where.path, settings):
                untrusted = sorted(settings)
        self._cache = _Parsed(where.path, signature, profile, untrusted)
        return self._cache, where

    def caste_models(self, caste: str | None = None, task: str | None = None) -> CasteModels:
        """The routing table: one caste, or every caste, with the model each uses and why."""
        profile, where = self.load()
        catalog = self._catalog(profile, trusted=False)
        names = [catalog.find(caste)] if caste is not None else catalog.names()
        return CasteModels(
            castes=[catalog.resolve(name, task) for name in names],
            path=str(where.path),
            rule=where.rule,
            proxy_endpoint=profile.proxy.endpoint if profile.proxy else None,
            agent_problems=catalog.scan.problems,
        )

    def set_override(self, caste: str, model: str, create: bool = False) -> SetResult:
        """Store `model` for `caste` in user_overrides; the caste's own entry stays."""
        from .yaml_edit import set_override  # writers only: a look-up never loads the YAML editor

        check_model_name(model)
        _caste_to_write(self.catalog(), caste, create)  # bad input is refused before anything is created or locked
        target, created = self._writable()
        scan = self.agents()
        with self._locked(target):
            text = _read(target)
            catalog = CasteCatalog(parse_profile(text, target, self._environ), scan, self._environ)
            name = _caste_to_write(catalog, caste, create)
            previous = catalog.resolve(name).model if name in catalog.names() else None
            edited = set_override(text, name, model)
            write_atomic(target, edited)
        now = CasteCatalog(parse_profile(edited, target, self._environ), scan, self._environ).resolve(name)
        profile = catalog.profile
        warnings = []
        if created:
            warnings.append(f"Created {target} from the packaged default profile.")
        is_slot = model in SLOT_NAMES or model in (profile.model_slots or {})
        if not is_slot and profile.model_metadata is not None and model not in profile.model_metadata:
            listed = ", ".join(profile.model_metadata) or "(none)"
            warnings.append(f"Model '{model}' is not in model_metadata (known: {listed}); check the proxy routes it.")
        return SetResult(
            caste=name,
            model=now.model,
            slot=now.slot,
            previous=previous,
            path=str(target),
            created=created,
            warnings=warnings,
        )

    def reset_override(self, caste: str) -> ResetResult:
        """Remove the caste's user_overrides entry, so its profile model applies again."""
        from .yaml_edit import remove_override  # writers only: a look-up never loads the YAML editor

        catalog, where = self.catalog(), self.location
        name = catalog.find(caste)
        if name not in (catalog.profile.user_overrides or {}):  # nothing to remove: nothing is locked or written
            return ResetResult(caste=name, model=catalog.resolve(name).model, had_override=False, path=str(where.path))
        with self._locked(where.path):
            text = _read(where.path)
            catalog = CasteCatalog(parse_profile(text, where.path, self._environ), catalog.scan, self._environ)
            name = catalog.find(caste)
            had = name in (catalog.profile.user_overrides or {})
            if had:
                edited = remove_override(text, name)
                write_atomic(where.path, edited)
                catalog = CasteCatalog(parse_profile(edited, where.path, self._environ), catalog.scan, self._environ)
        return ResetResult(caste=name, model=catalog.resolve(name).model, had_override=had, path=str(where.path))

    def _writable(self) -> tuple[Path, bool]:
        """The file to write; the packaged default is copied to .aether/ first, never written itself."""
        where = self.location
        if not where.packaged:
            return where.path, False
        target = self.state_dir / FILE_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(target):
            if target.exists():
                return target, False
            text = _read(where.path)
            write_atomic(target, text)
            # The packaged default's settings were trusted where they came from: so they are in the copy.
            profile, data = read_profile(text, target, self._environ)
            self._trust.trust(target, sensitive_settings(profile, data))
        return target, True

    def _locked(self, path: Path) -> _FileLock:
        return _FileLock(path, self._guard)


def _caste_to_write(catalog: CasteCatalog, caste: str, create: bool) -> str:
    """The caste's name (the profile's spelling, else its agent's); a new, well-formed name only with `create`."""
    try:
        return catalog.find(caste)
    except UnknownCasteError:
        if not create:
            raise
        return check_new_caste_name(caste)


class _FileLock:
    """Serialise writers: across processes with a lock file, across threads with a mutex."""

    def __init__(self, path: Path, guard: threading.Lock) -> None:
        from filelock import FileLock  # writers only: a look-up never loads it

        self._guard = guard
        self._lock = FileLock(str(path.with_name(f".{path.name}.lock")), timeout=30)

    def __enter__(self) -> None:
        self._guard.acquire()
        try:
            self._lock.acquire()
        except BaseException:
            self._guard.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        self._guard.release()


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{path} is {size:,} bytes; a profile may be at most {MAX_PROFILE_BYTES:,}.")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"Profile not found: {path}.") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path} is not UTF-8 text (byte {exc.start})", "Fix or replace the file") from None
    except OSError as exc:
        raise ProfileError(f"Cannot read {path}: {exc.strerror}.") from None
