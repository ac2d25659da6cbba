"""The Claude Code agents a worker in the project would see: every agent file is a caste.

Claude Code reads agents from the project's `.claude/agents/**/*.md` (the
directory a session starts in, then each parent up to the top of the git work
tree, nearest first) and from `~/.claude/agents/**/*.md`, the project's
winning. An agent's name is its frontmatter `name`, else the file's stem.

An agent file is data from the project, which may be a cloned repository, so
it is read with limits: no link is followed (a planted link would send a local
file to a model as a prompt), files and folders are bounded, and a file that
does not parse is read as far as it can be or reported with its path and
reason, never fatal to the others. Whatever in it can run a program or let a
worker do more than read (`hooks`, `mcpServers`, tools beyond reading, a
permission mode above `dontAsk`) is listed by `sensitive_settings`, for
`aether-mcp trust`.

No pydantic and no MCP here: the PreToolUse hook reads agents too, and must
answer in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .names import CASTE_NAME, MAX_MODEL_NAME, MODEL_NAME, caste_key

AGENTS_DIR = Path(".claude") / "agents"
MAX_AGENT_BYTES = 64 * 1024  # the prompt travels in a file the CLI reads; real Aether agents are under 16 KiB
MAX_AGENT_FILES = 256  # per agents folder
MAX_DEPTH = 4  # sub-folders below .claude/agents (Aether uses one: ant/)
_FRONTMATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.DOTALL | re.MULTILINE)
_SCALAR_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):[ \t]*(.*?)[ \t]*$")

# Frontmatter keys handed on to the CLI as the agent's definition, besides `tools` in the form read here (a
# mapping of names to true/false becomes a list). `model` goes as --model, `permissionMode`
# and `maxTurns` as flags (the profile may override them), `isolation` becomes aether-mcp's own worktree,
# and `background` would detach the worker from the process that proves its routing.
PASSED_ON = (
    "description",
    "disallowedTools",
    "color",
    "effort",
    "skills",
    "initialPrompt",
    "memory",
    "omitClaudeMd",
    "autoCompactWindow",
    "hooks",
    "mcpServers",
)
# The tools that only read: the shipped read-only castes get these. The web tools reach the network, so what a
# worker has read could leave with them: an agent file that declares them needs trust.
LOCAL_READ_TOOLS = ("Read", "Glob", "Grep")
NETWORK_TOOLS = ("WebSearch", "WebFetch")
READ_TOOLS = (*LOCAL_READ_TOOLS, *NETWORK_TOOLS)
# What a worker may use unasked without anyone's say-so: reading on this machine, and its own to-do list. Anything
# more an agent declares needs trust.
READ_ONLY_TOOLS = frozenset({*LOCAL_READ_TOOLS, "LS", "TodoWrite"})
# Permission modes that let a worker do nothing beyond its tools (in -p mode `default` asks, and nobody answers).
QUIET_MODES = ("plan", "dontAsk", "default")


@dataclass(frozen=True)
class Agent:
    """One agent file, read as far as it could be."""

    name: str
    path: Path
    prompt: str
    frontmatter: dict[str, Any]
    tools: list[str] | None  # None: the file names none, so the CLI gives every tool (and asks before using it)
    model: str | None  # the `model:` line as written: a slot (opus, sonnet, haiku, inherit) or a model name
    user_level: bool  # from ~/.claude/agents: the user's own, so trusted as their settings are
    problems: tuple[str, ...] = ()
    key: str = field(init=False)  # the caste it is: caste_key(name), worked out once

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", caste_key(self.name))

    def definition(self) -> dict[str, Any]:
        """The agent as the CLI's `--agents` takes it: its prompt and the frontmatter it applies itself."""
        found = {k: self.frontmatter[k] for k in PASSED_ON if self.frontmatter.get(k) is not None}
        if self.tools is not None:
            found["tools"] = self.tools
        found.setdefault("description", self.name)
        return {**found, "prompt": self.prompt}

    def sensitive_settings(self) -> dict[str, Any]:
        """What in this agent can run a program or let its worker do more than read, by frontmatter key."""
        # hooks and MCP servers run programs; memory gives the agent Write and Edit on a folder that outlives it.
        found = {k: self.frontmatter[k] for k in ("hooks", "mcpServers", "memory") if self.frontmatter.get(k)}
        # Declared tools are used unasked (a worker cannot answer a prompt); none declared means none unasked.
        if self.tools is not None and not set(self.tools) <= READ_ONLY_TOOLS:
            found["tools"] = self.tools
        mode = self.frontmatter.get("permissionMode")
        if mode is not None and not (isinstance(mode, str) and mode in QUIET_MODES):
            found["permissionMode"] = mode
        return found


@dataclass
class AgentScan:
    """The agents found, by caste key, and the files that could not be read as agents."""

    agents: dict[str, Agent] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def agent_dirs(cwd: Path, project_root: Path, home: Path | None) -> list[tuple[Path, bool]]:
    """The agents folders Claude Code reads for a session in `cwd`, nearest first, each with whether it is the
    user's own."""
    folders = []
    here = cwd
    while True:
        folders.append((here / AGENTS_DIR, False))
        if here == project_root or not here.is_relative_to(project_root) or here.parent == here:
            break
        here = here.parent
    if home is not None:
        folders.append((home / AGENTS_DIR, True))
    return folders


# path -> (mtime_ns, size, inode), and the agent or its problem: a file is parsed again only when it changes.
_parsed: dict[str, tuple[tuple[int, int, int], Agent | str]] = {}


def scan_agents(folders: Sequence[tuple[Path, bool]]) -> AgentScan:
    """Every agent in `folders`, the first folder's winning where two share a name.

    Runs on every routing look-up, so it works on strings and directory entries: a stat per file, no parsing
    of a file that did not change."""
    scan = AgentScan()
    for folder, user_level in folders:
        for path, info in _agent_files(str(folder), scan.problems):
            signature = (info.st_mtime_ns, info.st_size, info.st_ino)
            cached = _parsed.get(path)
            if cached is None or cached[0] != signature:
                cached = (signature, _read_agent(Path(path), info.st_size, user_level))
                _parsed[path] = cached
            found = cached[1]
            if isinstance(found, str):
                scan.problems.append(f"{path}: {found}")
                continue
            if found.problems:
                scan.problems += [f"{path}: {p}" for p in found.problems]
            scan.agents.setdefault(found.key, found)
    return scan


def _agent_files(folder: str, problems: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    """The `.md` files below `folder` (each folder's own first, by name), with no link followed, within bounds."""
    try:
        for part in (os.path.dirname(folder), folder):  # `.claude` and `.claude/agents`: neither may be a link
            if stat.S_ISLNK(os.lstat(part).st_mode):
                problems.append(f"{part}: a symbolic link; agents behind links are not read")
                return
    except OSError:
        return
    for count, (path, info) in enumerate(_walk(folder, 0, problems), start=1):
        if count > MAX_AGENT_FILES:
            problems.append(f"{folder}: more than {MAX_AGENT_FILES} agent files; the rest are not read")
            return
        yield path, info


def _walk(folder: str, depth: int, problems: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return
    below = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            below.append(entry.path)
        elif entry.name.endswith(".md"):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                yield entry.path, info
            else:
                problems.append(f"{entry.path}: not a regular file (a link?); not read")
    if depth < MAX_DEPTH:
        for path in below:
            yield from _walk(path, depth + 1, problems)


def _read_agent(path: Path, size: int, user_level: bool) -> Agent | str:
    """The agent in `path`, or why there is none."""
    if size > MAX_AGENT_BYTES:
        return f"{size:,} bytes; an agent file may be at most {MAX_AGENT_BYTES:,}"
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as handle:
            text = handle.read(MAX_AGENT_BYTES + 1).decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start})"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    match = _FRONTMATTER.match(text)
    if match is None:
        return "no frontmatter (a '---' block with name and description); Claude Code does not load it either"
    prompt = text[match.end() :].strip()
    frontmatter, problems = _frontmatter(match.group(1))
    name = frontmatter.get("name")
    if not isinstance(name, str) or not name.strip():
        name = path.stem
    name = name.strip()
    if not CASTE_NAME.fullmatch(name):
        return f"the name {name[:80]!r} cannot be a caste: start with a letter, then letters, digits, '-' or '_'"
    tools = _tool_list(frontmatter.get("tools"), "tools", problems)
    if "disallowedTools" in frontmatter:
        frontmatter["disallowedTools"] = _tool_list(frontmatter["disallowedTools"], "disallowedTools", problems)
    model = frontmatter.get("model")
    if model is not None and not (
        isinstance(model, str) and len(model.strip()) <= MAX_MODEL_NAME and MODEL_NAME.fullmatch(model.strip())
    ):
        problems.append(f"model {str(model)[:80]!r} is not a model name; the caste is routed as if it had none")
        model = None
    return Agent(
        name=name,
        path=path,
        prompt=prompt,
        frontmatter=frontmatter,
        tools=tools,
        model=model.strip() if isinstance(model, str) else None,
        user_level=user_level,
        problems=tuple(problems),
    )


def _frontmatter(block: str) -> tuple[dict[str, Any], list[str]]:
    """The frontmatter as YAML; when that fails, its plain `key: value` lines, with the reason."""
    import yaml  # with the first agent file read, not with the server's start

    from ..safe_yaml import AliasBomb, load  # (PyYAML, like the line above)

    try:
        data = load(block)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        where += f": {exc.problem}" if isinstance(exc, AliasBomb) else ""
        lines = {}
        for line in block.splitlines():
            found = _SCALAR_LINE.match(line)
            if found and found.group(2) and not found.group(2).startswith(("[", "{", "|", ">")):
                lines[found.group(1)] = found.group(2).strip("'\"")
        keep = {k: v for k, v in lines.items() if k in ("name", "description", "model")}
        return keep, [f"frontmatter is not valid YAML{where}; read its name, description and model only"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, ["frontmatter is not a mapping; read as an agent with none"]
    return {str(k): v for k, v in data.items()}, []


def _tool_list(value: Any, key: str, problems: list[str]) -> list[str] | None:
    """Tools as Claude Code writes them: `Read, Grep`, a list, or a mapping of names to true/false."""
    if value is None:
        return None
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, list):
        names = [item for item in value if isinstance(item, str)]
        if len(names) != len(value):
            problems.append(f"{key}: entries that are not names were left out")
    elif isinstance(value, Mapping):
        names = [str(name) for name, on in value.items() if on is True]
    else:
        problems.append(f"{key}: neither a list nor a mapping; read as none")
        return None
    return [name for name in names if name]
