"""The castes of a project: the profile's castes and its Claude Code agents, as one list.

A caste and an agent are one when their names match without case, `-`/`_` or
an `aether-` prefix (`builder` is `aether-builder`). The profile's spelling of
a caste wins; an agent with no profile entry is the caste named like the agent
without its `aether-` prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..errors import UnknownCasteError
from .agents import Agent, AgentScan
from .names import caste_key, caste_name
from .resolution import CasteModel, resolve
from .schema import Profile
from .trust import untrusted_error
from .worker_settings import WorkerSettings, settings_for

MAX_REMEMBERED = 1024


class CasteCatalog:
    """Every caste a worker could be, each with its agent (if any), its model and its settings."""

    def __init__(
        self,
        profile: Profile,
        scan: AgentScan,
        environ: Mapping[str, str],
        untrusted: Callable[[Agent], list[str]] | None = None,
    ) -> None:
        self.profile = profile
        self.scan = scan
        self._untrusted = untrusted  # what in an agent waits for `aether-mcp trust`; None: routing only
        # What `inherit` means: the parent session's model, which the server started by it can see here.
        self.parent_model = environ.get("ANTHROPIC_MODEL") or None
        names: dict[str, str] = {}
        for name in profile.castes():
            names.setdefault(caste_key(name), name)
        for key, agent in sorted(scan.agents.items()):
            names.setdefault(key, caste_name(agent.name))
        self._names = names
        self._resolved: dict[tuple[str, str | None], CasteModel] = {}

    def names(self) -> list[str]:
        """The profile's castes in file order, then the agents' that it does not name, by name."""
        return list(self._names.values())

    def find(self, name: str) -> str:
        """The caste's own name for any spelling of it; an error listing the castes when there is none."""
        found = self._names.get(caste_key(name))
        if found is None:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownCasteError(f"Unknown caste '{name}'. Known castes: {known}.")
        return found

    def agent(self, caste: str) -> Agent | None:
        return self.scan.agents.get(caste_key(caste))

    def resolve(self, caste: str, task: str | None = None) -> CasteModel:
        """The caste's model and why; worked out once per catalog (a look-up comes on every turn of the parent)."""
        name = self.find(caste)
        known = self._resolved.get((name, task))
        if known is None:
            known = resolve(self.profile, name, task, agent=self.agent(name), parent_model=self.parent_model)
            if len(self._resolved) < MAX_REMEMBERED:  # tasks vary without end: only so many are kept
                self._resolved[(name, task)] = known
        return known.model_copy()

    def settings(self, caste: str) -> WorkerSettings:
        """What the caste's workers run with. An agent that sets what can run a program or let a worker do more
        than read is refused until the user trusts it."""
        name = self.find(caste)
        agent = self.agent(name)
        if agent is not None and self._untrusted is not None:
            waiting = self._untrusted(agent)
            if waiting:
                raise untrusted_error(agent.path, waiting)
        return settings_for(self.profile, name, agent)
