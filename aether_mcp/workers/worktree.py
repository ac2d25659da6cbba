"""A git worktree of its own for a worker: a branch, a folder, what it committed, and cleaning up after it.

Built on git itself rather than the CLI's --worktree: each worktree is made by
the server before its worker starts, from a base the server resolved to one
commit, on a branch named after the worker, so parallel workers can neither
share a tree nor commit to each other's branches. Worktree creation is
serialised within the server: git locks its refs, but two `worktree add` calls
at once can still trip over each other.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from .. import procs
from ..errors import AetherError
from ..git import find_repository, git
from ..private_files import private_dir
from ..profile.location import STATE_DIR

BRANCH_PREFIX = "aether/"
LOCK_REASON = "aether-mcp: its worker is running"  # then: "(server <pid>/<start>)", to tell a stale lock
# A base names a commit or a branch: no option (leading '-'), no space or control character.
_BASE = re.compile(r"[A-Za-z0-9_./@^~{}:+-]{1,200}")
_lock = threading.Lock()


@dataclass(frozen=True)
class Worktree:
    repo: Path  # the main work tree
    path: Path
    branch: str
    base: str  # the commit it started from


@dataclass(frozen=True)
class WorktreeReport:
    commits: list[str]  # "<short sha> <subject>", oldest first
    diffstat: str
    changed: bool  # commits, or changes not committed yet


def repository_root(folder: Path) -> Path:
    """The top of the git work tree `folder` is in; an error that says so outside git."""
    found = find_repository(folder)
    if found is None:
        raise AetherError(
            f"isolation 'worktree' needs a git repository, and {folder} is not in one",
            "Run git init there, or spawn without isolation",
        )
    return found


def check_base(base: str | None) -> str | None:
    """Refuse a base that git could read as an option, or that no commit or branch could be called."""
    if base is not None and (base.startswith("-") or not _BASE.fullmatch(base)):
        raise AetherError(f"base {base!r} is not a commit or branch name.")
    return base


def create(repo: Path, server_dir: Path, worker_id: str, base: str | None) -> Worktree:
    """A new worktree for `worker_id` on branch aether/<worker_id>, from `base` (default: HEAD)."""
    check_base(base)
    try:
        commit = git(repo, "rev-parse", "--verify", "--quiet", f"{base or 'HEAD'}^{{commit}}")
    except AetherError:
        raise AetherError(
            f"base '{base or 'HEAD'}' names no commit in {repo}",
            "Give a branch, a tag or a commit that exists (a new repository needs a first commit)",
        ) from None
    folder = private_dir(server_dir / STATE_DIR / "worktrees", server_dir)
    worktree = Worktree(repo, folder / worker_id, BRANCH_PREFIX + worker_id, commit)
    with _lock:
        git(repo, "worktree", "add", "--quiet", "-b", worktree.branch, str(worktree.path), commit)
        git(repo, "worktree", "lock", "--reason", _lock_reason(), str(worktree.path))
    return worktree


def restore(worktree: Worktree) -> None:
    """Put back a worktree that was removed because it had no changes (its branch went with it)."""
    with _lock:
        if not worktree.path.exists():
            git(worktree.repo, "worktree", "add", "--quiet", "-B", worktree.branch, str(worktree.path), worktree.base)
        git(worktree.repo, "worktree", "lock", "--reason", _lock_reason(), str(worktree.path))


def create_for(cwd: Path, server_dir: Path, worker_id: str, base: str | None) -> tuple[Worktree, Path]:
    """A fresh worktree for a worker that was to work in `cwd`, and the same place inside that worktree."""
    repo = repository_root(cwd)
    tree = create(repo, server_dir, worker_id, base)
    return tree, (tree.path / cwd.relative_to(repo) if cwd.is_relative_to(repo) else tree.path)


@dataclass(frozen=True)
class TreeOutcome:
    """What a finished worker left in its worktree, and whether the tree is gone."""

    commits: list[str]
    diffstat: str | None
    removed: bool  # untouched, and no other turn used it: removed with its branch
    error: str | None = None  # the tree could not be read: it stays as it is, for the user to look at


def conclude(tree: Worktree, *, in_use: bool) -> TreeOutcome:
    """Read what a finished worker left in `tree`; an untouched tree no other turn is `in_use` goes, with its
    branch, and one that holds work is unlocked for `workers clean`."""
    try:
        found = report(tree)
        removed = not found.changed and not in_use
        if removed:
            remove(tree)
        else:
            unlock(tree)
    except AetherError as exc:
        return TreeOutcome([], None, removed=False, error=f"Its worktree could not be read: {exc}")
    return TreeOutcome(found.commits, found.diffstat or None, removed=removed)


def unlock(worktree: Worktree) -> None:
    """The worker is done with it: `aether-mcp workers clean` may now consider it."""
    with _lock:
        git(worktree.repo, "worktree", "unlock", str(worktree.path))


def report(worktree: Worktree) -> WorktreeReport:
    """What the worker did in its worktree, against its base."""
    log = git(worktree.path, "log", "--reverse", "--format=%h %s", f"{worktree.base}..HEAD")
    untracked = git(worktree.path, "ls-files", "--others", "--exclude-standard").splitlines()
    # Committed and not yet committed changes to tracked files alike, against the base; new files apart.
    diffstat = git(worktree.path, "diff", "--stat", worktree.base)
    if untracked:
        diffstat += f"\n {len(untracked)} untracked file(s): {', '.join(untracked[:10])}"
    commits = log.splitlines() if log else []
    return WorktreeReport(commits, diffstat.strip(), bool(commits or untracked or diffstat))


def remove(worktree: Worktree) -> None:
    """Remove the worktree and its branch, whatever they hold."""
    with _lock:
        if worktree.path.exists():  # forced twice: also when it is locked, or holds changes
            git(worktree.repo, "worktree", "remove", "--force", "--force", str(worktree.path))
        branches = git(worktree.repo, "branch", "--list", worktree.branch)
        if branches:
            git(worktree.repo, "branch", "--quiet", "-D", worktree.branch)


def clean(repo: Path, everything: bool) -> tuple[list[str], list[str]]:
    """Remove aether's worktrees whose branch is merged into HEAD and that hold no uncommitted work (with
    `everything`, all of them), and their branches; and the branches of locks left by a server that is gone
    (stale: unlocked here). A worktree whose worker still runs (locked by a live server) stays."""
    merged = set(git(repo, "branch", "--format=%(refname:short)", "--merged", "HEAD").splitlines())
    removed, stale = [], []
    for path, branch, locked in _aether_worktrees(repo):
        if locked is not None and _stale(locked):
            git(repo, "worktree", "unlock", str(path))
            stale.append(branch)
        elif locked is not None:
            continue
        if everything or (branch in merged and not git(path, "status", "--porcelain")):
            remove(Worktree(repo, path, branch, ""))
            removed.append(branch)
    return removed, stale


def _lock_reason() -> str:
    return f"{LOCK_REASON} (server {procs.identity()})"


def _stale(reason: str) -> bool:
    """A lock of aether-mcp's whose server is gone: its worker cannot be running."""
    found = re.fullmatch(re.escape(LOCK_REASON) + r" \(server (\d+/\S+)\)", reason)
    return found is not None and not procs.alive(found.group(1))


def _aether_worktrees(repo: Path) -> list[tuple[Path, str, str | None]]:
    """(path, branch, lock reason or None) of each worktree on an aether/ branch, from git's porcelain listing."""
    found = []
    for record in git(repo, "worktree", "list", "--porcelain").split("\n\n"):
        fields = dict(line.partition(" ")[::2] for line in record.splitlines())
        branch = fields.get("branch", "").removeprefix("refs/heads/")
        if branch.startswith(BRANCH_PREFIX) and "worktree" in fields:
            found.append((Path(fields["worktree"]), branch, fields.get("locked")))
    return found


def land(worktree: Worktree, bundle: Path) -> None:
    """Bring a remote worker's commits (a bundle of its branch) into its worktree, as if it had made them there:
    only a fast-forward from its base is taken."""
    git(worktree.path, "fetch", "--quiet", "--no-tags", str(bundle), f"refs/heads/{worktree.branch}")
    git(worktree.path, "merge", "--ff-only", "--quiet", "FETCH_HEAD")
