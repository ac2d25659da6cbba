"""Running git: one call, its output, and git's own words when it fails; the work tree a folder is in."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .errors import AetherError


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` and return its output; a failure is an AetherError with git's own words."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            encoding="utf-8",
            errors="replace",  # file names are bytes: one that is not UTF-8 must not break the report
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AetherError(f"git {args[0]} could not run: {exc}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise AetherError(f"git {args[0]} failed: {said[-1] if said else f'exit {done.returncode}'}")
    return done.stdout.strip()


def find_repository(folder: Path) -> Path | None:
    """The top of the git work tree `folder` is in, as git sees it (a repository another user owns is none)."""
    try:
        return Path(git(folder, "rev-parse", "--show-toplevel"))
    except AetherError:
        return None


def project_root(folder: Path) -> Path:
    """The top of the git work tree `folder` is in, as git itself sees it; `folder` itself outside git.

    Git's own rules, not a search for a `.git` entry: git refuses a repository another user owns, so a
    `/tmp/.git` someone planted does not make all of /tmp one project."""
    return find_repository(folder) or folder
