"""Where the profile is: --profiles, $AETHER_MODEL_PROFILES, .aether/, the working directory, then the package.

No pydantic here: the PreToolUse hook finds the profile too, and must answer fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

ENV_VAR = "AETHER_MODEL_PROFILES"
FILE_NAME = "model-profiles.yaml"
# aether-mcp's own folder under the working directory: a profile copied from the
# packaged default, the spawn log, the workers' transcripts.
STATE_DIR = ".aether"
Rule = Literal[
    "--profiles", "AETHER_MODEL_PROFILES", ".aether/model-profiles.yaml", "model-profiles.yaml", "packaged default"
]


@dataclass(frozen=True)
class Location:
    path: Path
    rule: Rule

    @property
    def packaged(self) -> bool:
        return self.rule == "packaged default"


def packaged_default() -> Path:
    return Path(str(resources.files("aether_mcp") / FILE_NAME))


def locate(explicit: Path | str | None, cwd: Path, environ: Mapping[str, str]) -> Location:
    """The profile in use: --profiles, $AETHER_MODEL_PROFILES, .aether/, the working directory, the package."""
    if explicit:
        return Location(absolute(explicit, cwd), "--profiles")
    if environ.get(ENV_VAR):
        return Location(absolute(environ[ENV_VAR], cwd), "AETHER_MODEL_PROFILES")
    for candidate, rule in ((cwd / STATE_DIR / FILE_NAME, ".aether/model-profiles.yaml"), (cwd / FILE_NAME, FILE_NAME)):
        if candidate.is_file():
            return Location(candidate, rule)  # type: ignore[arg-type]
    return Location(packaged_default(), "packaged default")


def absolute(path: Path | str, cwd: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else cwd / candidate
