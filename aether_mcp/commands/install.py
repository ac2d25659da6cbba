"""`aether-mcp install` and `uninstall`: register the server and the sub-agent hook in a project, and take them out.

install adds two entries and nothing else: the server to the project's
`.mcp.json`, and the PreToolUse hook for the sub-agent tool to
`.claude/settings.local.json` (`--shared`: `.claude/settings.json`). Each goes
in as text (see `json_edit`), so the rest of each file keeps every byte;
uninstall takes out exactly that text. Aether's own files (its agents and
commands) are never touched, so `aether update` cannot undo either.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import AetherError
from ..hook_settings import (
    HOOK_WORDS,
    MATCHER,
    PROBE,
    WIRE_EVENTS,
    hook_command,
    is_hook_command,
    shared_hook_command,
    wire_hook_command,
)
from ..json_edit import fragment, insert_first, remove_inserted, value_start
from ..own_files import keep_out_of_git
from ..private_files import read_regular, replace_private
from ..profile.location import STATE_DIR

SERVER_NAME = "aether"
# The read-only tools install tells the parent to call (the hook's denial names get_worker): allowed by install.
READ_ONLY_TOOLS = ("get_worker", "list_workers", "get_caste_model")
SERVER_ENTRY: dict[str, Any] = {"type": "stdio", "command": "aether-mcp", "args": ["serve"], "env": {}}
HOOK_CHECK_S = 20.0
MAX_FILE_BYTES = 1024 * 1024
# Where each entry went, so uninstall takes it from that very place: `{"hooks": {"PreToolUse": [ENTRY]}}` is the
# same text whether install filled an empty PreToolUse or added all of it to `{}`.
RECORD = Path(STATE_DIR) / "installed.json"
CREATED = "created"


@dataclass(frozen=True)
class Entry:
    """One thing install adds: `value` under the objects named by `path`, as member `key` (or, with no key, as an
    element of the array at the end of `path`)."""

    file: Path
    path: tuple[str, ...]
    key: str | None
    value: Any

    @property
    def name(self) -> str:
        """How install's record names the entry: its file, where it goes, and (in an array) which it is."""
        which = self.key if self.key is not None else (self.value if isinstance(self.value, str) else "hook")
        return f"{self.file}#{'/'.join((*self.path, which))}"

    def present(self, data: Any) -> bool:
        for name in self.path:
            data = data.get(name) if isinstance(data, dict) else None
        if self.key is not None:
            return isinstance(data, dict) and self.key in data
        return isinstance(data, list) and any(self._is_ours(item) for item in data)

    def _is_ours(self, item: Any) -> bool:
        """An array's element is install's: the hook (whichever aether-mcp it runs), or this very value."""
        return _runs_our_hook(item, _hook_word(self.value)) if isinstance(self.value, dict) else item == self.value

    def take_out(self, data: dict[str, Any], added_from: int) -> None:
        """Remove the entry from parsed JSON, and the containers below `added_from` that held only it."""
        chain: list[Any] = [data]
        for name in self.path:
            chain.append(chain[-1][name])
        inner = chain[-1]
        if self.key is not None:
            del inner[self.key]
        else:
            inner[:] = [item for item in inner if not self._is_ours(item)]
        for depth in range(len(self.path), added_from, -1):
            if not chain[depth]:
                del chain[depth - 1][self.path[depth - 1]]

    def pieces(self) -> list[tuple[tuple[str, ...], str]]:
        """Each way install may have written it, outermost first: where it went, and the text that went there."""
        found = []
        for depth in range(len(self.path) + 1):
            rest = self.path[depth:]
            inner: Any = {self.key: self.value} if self.key is not None else [self.value]
            if not rest:
                piece = fragment(self.key, self.value)
            else:
                for name in reversed(rest[1:]):
                    inner = {name: inner}
                piece = fragment(rest[0], inner)
            found.append((self.path[:depth], piece))
        return found


@dataclass(frozen=True)
class Change:
    file: str
    done: str  # added, created, already there, removed, deleted, not there


def hook_entry(shared: bool, word: str = HOOK_WORDS[1]) -> dict[str, Any]:
    """A hook's settings entry. In the user's own settings it runs this installation by its absolute path;
    in the shared ones (a file the team commits) it runs the aether-mcp each user has on PATH. The sub-agent
    call's hook matches the sub-agent tools; the wire hooks take every sub-agent."""
    if shared:
        command = shared_hook_command(word)
    else:
        command = hook_command() if word == HOOK_WORDS[1] else wire_hook_command(word)
    found: dict[str, Any] = {"matcher": MATCHER} if word == HOOK_WORDS[1] else {}
    hook: dict[str, Any] = {"type": "command", "command": command}
    if word == WIRE_EVENTS["SubagentStop"]:
        hook["async"] = True  # it only records: Claude Code goes on without waiting for it (SubagentStart must wait)
    return {**found, "hooks": [hook]}


def _hook_word(entry: dict[str, Any]) -> str:
    """Which of aether-mcp's hooks an entry of install's runs: the last word of its command."""
    return str(entry["hooks"][0]["command"]).rsplit(" ", 1)[-1]


def entries(project: Path, shared: bool) -> list[Entry]:
    """What install adds: the server, the hook, the user's consent to the project's server (Claude Code's
    first-start question would otherwise decline it on Enter), and the read-only tools the parent is told to
    call, allowed (each wave's get_worker calls would otherwise ask)."""
    settings = project / ".claude" / ("settings.json" if shared else "settings.local.json")
    return [
        Entry(project / ".mcp.json", ("mcpServers",), SERVER_NAME, SERVER_ENTRY),
        Entry(settings, ("hooks", "PreToolUse"), None, hook_entry(shared)),
        # A session run through `aether-mcp run` learns each sub-agent's caste from these; elsewhere they do nothing.
        *(Entry(settings, ("hooks", event), None, hook_entry(shared, word)) for event, word in WIRE_EVENTS.items()),
        Entry(settings, ("enabledMcpjsonServers",), None, SERVER_NAME),
        *(Entry(settings, ("permissions", "allow"), None, f"mcp__{SERVER_NAME}__{tool}") for tool in READ_ONLY_TOOLS),
    ]


def install(project: Path, shared: bool = False) -> list[Change]:
    """Add each entry where it is missing. Every file is read and checked before any is written, and the hook's
    command is run first: a hook that cannot run would let every caste run unrouted, in silence."""
    command = hook_entry(shared)["hooks"][0]["command"]
    problem = hook_problem(command, project, None)
    if problem is not None:
        raise AetherError(
            f"The hook command `{command}` does not work: {problem}; nothing was changed",
            "Put aether-mcp on PATH (or install without --shared, which names it by its path), then run install again"
            if shared
            else "Reinstall aether-mcp, then run install again",
        )
    record = _record(project)
    planned: dict[Path, tuple[str | None, str]] = {}  # file -> (its new text, or None: unchanged; what was done)
    for file, group in _by_file(entries(project, shared)):
        text = _read(file, project)
        done = "already there"
        if text is None:
            record[str(file)] = CREATED
            text, done = "{}\n", "created"
        for entry in group:
            if not entry.present(_parse(file, text)):
                where, text = _insert(entry, text)
                record[entry.name] = list(where)
                done = "created" if done == "created" else "added"
        planned[file] = (text if done != "already there" else None, done)
    if any(done != "already there" for _, done in planned.values()):
        replace_private(project / RECORD, project, json.dumps(record, indent=2).encode())
        keep_out_of_git(project / STATE_DIR, project)
    for file, (new_text, _) in planned.items():
        if new_text is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(file, new_text)
    return [Change(str(file), done) for file, (_, done) in planned.items()]


def uninstall(project: Path, shared: bool = False) -> list[Change]:
    """Take out exactly what install added; a file install created and nobody changed is deleted."""
    record = _record(project)
    planned: dict[Path, tuple[str | None, str]] = {}
    for file, group in _by_file(entries(project, shared)):
        text = _read(file, project)
        done = "not there"
        # The last added first: each is taken out of the text as it stood right after it went in.
        for entry in reversed(group) if text is not None else []:
            if text is not None and entry.present(_parse(file, text)):
                where = record.get(entry.name, record.get(str(file)))  # an older record names the file alone
                recorded = where if isinstance(where, list) else [] if where == CREATED else None
                text, how = _remove(entry, text, recorded)
                done = how if done in ("not there", "removed") else done
        if done != "not there" and record.get(str(file)) == CREATED and text == "{}\n":
            done, text = "deleted", ""  # install made it, and nothing else is in it
        planned[file] = (text if done != "not there" else None, done)
    for file, (new_text, _) in planned.items():
        if new_text == "":
            file.unlink()
        elif new_text is not None:
            write_atomic(file, new_text)
    (project / RECORD).unlink(missing_ok=True)  # nothing of install's is left to find
    return [Change(str(file), done) for file, (_, done) in planned.items()]


def _by_file(found: list[Entry]) -> list[tuple[Path, list[Entry]]]:
    """The entries of each file, the files in the order their first entry comes."""
    files: dict[Path, list[Entry]] = {}
    for entry in found:
        files.setdefault(entry.file, []).append(entry)
    return list(files.items())


def command_on_path() -> bool:
    """Claude Code starts the server and the hook by the name `aether-mcp`, so it must be on PATH."""
    return shutil.which(SERVER_ENTRY["command"]) is not None


def _insert(entry: Entry, text: str) -> tuple[tuple[str, ...], str]:
    """The entry as the first member (or element) of the innermost container the file already has: where it
    went, and the new text."""
    for where, piece in reversed(entry.pieces()):
        at = value_start(text, where)
        wanted = "[" if where == entry.path and entry.key is None else "{"
        if at is not None and text[at] == wanted:
            return where, insert_first(text, at, piece)
        if at is not None:
            raise AetherError(
                f"{entry.file}: {'.'.join(where) or 'the file'} is not a JSON {'array' if wanted == '[' else 'object'}",
                "Fix it by hand, then run aether-mcp install again",
            )
    raise AetherError(f"{entry.file} is not a JSON object", "Fix it by hand, then run aether-mcp install again")


def _remove(entry: Entry, text: str, recorded: list[str] | None) -> tuple[str, str]:
    """The text without the entry, and how it was taken out. First the text install put there, from where it
    put it (without a record, the outermost place first: an inner piece is part of an outer one). A file that has
    been rewritten since (Claude Code writes its settings back whole) loses the entry as JSON instead, with the
    containers install added, and is written back in Claude Code's own layout."""
    for where, piece in entry.pieces():
        if recorded is not None and list(where) != recorded:
            continue
        container = value_start(text, where) if recorded is not None else None
        edited = remove_inserted(text, piece, container)
        if edited is not None and not entry.present(_parse(entry.file, edited)):
            return edited, "removed"
    data = _parse(entry.file, text)
    entry.take_out(data, len(recorded) if recorded is not None else len(entry.path))
    return json.dumps(data, indent=2) + "\n", "removed (the file had been rewritten, so it was written back whole)"


def _record(project: Path) -> dict[str, list[str] | str]:
    """Where install put each entry, by file (CREATED: it made the file); empty when unknown. Read as every file
    install reads: no link, no device or FIFO, at most MAX_FILE_BYTES."""
    try:
        data = json.loads(_read(project / RECORD, project) or "")
    except (AetherError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [str(n) for n in v] if isinstance(v, list) else CREATED for k, v in data.items() if v}


def _read(path: Path, project: Path) -> str | None:
    """The text of `path`, below `project`; None when it is missing. Install writes only the project's own files:
    no link below the project is followed (one to ~/.claude or a private file would be written there, or copied
    here), and only a regular file of at most MAX_FILE_BYTES is read (never a device or a FIFO)."""
    _refuse_links(path, project)
    try:
        data, _ = read_regular(path, MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AetherError(f"Cannot read {path}: {exc.strerror}", "Fix or move it, then run the command again") from None
    if len(data) > MAX_FILE_BYTES:
        raise AetherError(f"{path} is over {MAX_FILE_BYTES:,} bytes; aether-mcp edits files of at most that.")
    try:
        return data.decode("utf-8")  # bytes as they are: CRLF stays CRLF
    except UnicodeDecodeError as exc:
        raise AetherError(f"Cannot read {path}: {exc}", "Fix or move it, then run aether-mcp install again") from None


def _refuse_links(path: Path, project: Path) -> None:
    """An AetherError naming the first symbolic link between `project` and `path`, if there is one."""
    place = project
    for part in path.relative_to(project).parts:
        place = place / part
        try:
            if stat.S_ISLNK(os.lstat(place).st_mode):
                raise AetherError(
                    f"{place} is a symbolic link; install writes only the project's own files and follows no link, "
                    "so nothing was changed",
                    "Make it a plain file or folder of the project, then run the command again",
                )
        except FileNotFoundError:
            return


def _parse(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AetherError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); nothing was changed",
            "Fix it, then run the command again",
        ) from None


def _runs_our_hook(item: Any, word: str) -> bool:
    hooks = item.get("hooks") if isinstance(item, dict) else None
    return isinstance(hooks, list) and any(
        isinstance(h, dict) and is_hook_command(str(h.get("command")), word) for h in hooks
    )


def installed_hooks(project: Path, event: str = "PreToolUse", word: str = HOOK_WORDS[1]) -> list[tuple[Path, str]]:
    """Each command of aether-mcp's hook `word` under `event` in the project's Claude Code settings, with the
    file it is in."""
    found = []
    for name in ("settings.local.json", "settings.json"):
        path = project / ".claude" / name
        try:
            data = json.loads(_read(path, project) or "{}")
        except (AetherError, json.JSONDecodeError):
            continue
        entries = data.get("hooks", {}).get(event) if isinstance(data.get("hooks"), dict) else None
        for item in entries if isinstance(entries, list) else []:
            hooks = item.get("hooks") if isinstance(item, dict) else None
            for hook in hooks if isinstance(hooks, list) else []:
                if isinstance(hook, dict) and is_hook_command(str(hook.get("command")), word):
                    found.append((path, str(hook["command"])))
    return found


def hook_problem(command: str, project: Path, caste: str | None) -> str | None:
    """Why `command` does not work as the hook, run as Claude Code runs it (a shell, the event on stdin); None
    when it answers as it should: nothing for a plain tool, a denial for a caste's sub-agent call."""
    probes: list[tuple[dict[str, Any], bool]] = [({"tool_name": "Read", "tool_input": {}}, False)]
    if caste is not None:
        probes.append(({"tool_name": "Agent", "tool_input": {"subagent_type": caste, "prompt": "probe"}}, True))
    for event, denies in probes:
        try:
            done = subprocess.run(
                ["/bin/sh", "-c", command],
                input=json.dumps({**event, "cwd": str(project), PROBE: True}),
                capture_output=True,
                text=True,
                cwd=project,
                # as in a session not run through `aether-mcp run` (where the hook steps aside for every call)
                env={k: v for k, v in os.environ.items() if not k.startswith("AETHER_MCP_WIRE")},
                timeout=HOOK_CHECK_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"it could not run: {exc}"
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        if done.returncode != 0:
            return f"it exits with status {done.returncode}: {said}"
        if denies != ('"permissionDecision": "deny"' in done.stdout):
            return f"it does not {'deny' if denies else 'pass'} a {event['tool_name']} call as it should ({said})"
    return None
