"""Which profile settings can run a program or move a secret, and whether the user has trusted them.

Routing (castes, models, slots, overrides, task routing, metadata) is data:
any profile may set it. What can run code or send a secret somewhere (the
proxy and its token, a caste's own endpoint and token, `claude_cli`,
`env_passthrough`, `mcp_servers`, `allowed_dirs`, a Ray cluster and the castes sent to it (`ray`,
`runs_on`), and permissions wider than
a caste's shipped ones), and what shapes what a worker is told or how many
start (a caste's `role`, `warm_workers`), is honoured from a profile found in the working
directory (a cloned repository's, perhaps) only once the user has trusted
exactly those settings with `aether-mcp trust`, as direnv's `direnv allow`
does. A digest of them is kept in the user's config folder; aether-mcp's own
writes touch only `user_overrides`, so they keep the trust, and any other
change to those settings asks for it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import AetherError
from ..private_files import replace_private, user_config_dir, user_config_path
from .schema import Profile
from .worker_settings import widened_permissions

FILE_NAME = "trusted-profiles.json"
# Per caste (and in workers.defaults): the settings that reach a program or a secret, or tell a worker (which
# may have Bash) what to do.
CASTE_KEYS = ("endpoint", "auth_token", "mcp_servers", "role", "runs_on")
# In workers: the same, and how many processes start before anyone asks.
WORKER_KEYS = ("claude_cli", "env_passthrough", "allowed_dirs", "warm_workers", "ray")


class UntrustedProfileError(AetherError):
    """A profile from the working directory sets what can run code or move a secret, and is not trusted."""


def sensitive_settings(profile: Profile, data: Mapping[str, Any]) -> dict[str, Any]:
    """Each setting that can run a program or move a secret, by dotted name, with its value as written."""
    found: dict[str, Any] = {}
    proxy = data.get("proxy")
    if isinstance(proxy, dict):
        found |= {f"proxy.{key}": value for key, value in proxy.items()}
    workers = data.get("workers")
    workers = workers if isinstance(workers, dict) else {}
    found |= {f"workers.{key}": workers[key] for key in WORKER_KEYS if workers.get(key)}
    layers = {"workers.defaults": workers.get("defaults")}
    castes = workers.get("castes")
    if isinstance(castes, dict):
        layers |= {f"workers.castes.{name}": settings for name, settings in castes.items()}
    for where, layer in layers.items():
        if isinstance(layer, dict):
            found |= {f"{where}.{key}": layer[key] for key in CASTE_KEYS if layer.get(key) is not None}
    return found | widened_permissions(profile)


def digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


class TrustStore:
    """The digests of the sensitive settings the user has trusted, per profile file (0600, in their config folder)."""

    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder

    @property
    def path(self) -> Path:
        # Only a path: it is looked at on every profile look-up, and made only when something is trusted.
        return (self._folder or user_config_path()) / FILE_NAME

    def version(self) -> int:
        """Changes whenever the trust file does (its mtime in ns; 0 while there is none)."""
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return 0

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise AetherError(f"Cannot read {self.path}: {exc}", "Remove it, then trust your profiles again") from None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def trusts(self, profile_path: Path, settings: Mapping[str, Any]) -> bool:
        return self._read().get(str(profile_path.resolve())) == digest(settings)

    def trust(self, profile_path: Path, settings: Mapping[str, Any]) -> None:
        trusted = self._read()
        trusted[str(profile_path.resolve())] = digest(settings)
        folder = self._folder or user_config_dir()
        replace_private(folder / FILE_NAME, folder, (json.dumps(trusted, indent=2, sort_keys=True) + "\n").encode())


def untrusted_error(profile_path: Path, names: list[str]) -> UntrustedProfileError:
    shown = ", ".join(names[:8]) + (f" (and {len(names) - 8} more)" if len(names) > 8 else "")
    return UntrustedProfileError(
        f"{profile_path} sets {shown}, which can run programs or send secrets, and you have not trusted it. "
        "Nothing from those settings was run or sent",
        f"Review them, then run: aether-mcp trust {profile_path}",
    )
