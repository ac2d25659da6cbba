"""The colony as `aether-mcp top` shows it: every worker of a project, read from the files its servers write.

The running notes (`.aether/running/`) give the queued and running workers of every server, the spawn log the
finished ones, and the details (`.aether/details/`) one worker's requests at the wire. Nothing here talks to a
server: a `Board` rereads a file only when it changed (the log from where it was last read), and checks the
running workers' servers are alive every few seconds, so that a server that died shows its workers as
interrupted, not running. No Textual here: the board is plain data, tested as such.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AetherError
from ..private_files import read_regular
from ..workers.publish import read_details
from ..workers.result import LIVE
from ..workers.spawn_log import log_path, read_running, running_dir
from .costs import CostRow, cost_table, finite, moment

MAX_FINISHED = 200  # the finished workers shown, newest first (the log keeps them all)
LIVENESS_S = 2.0  # how often the running workers' servers are checked even when no file changed
TRANSCRIPT_TAIL_BYTES = 64 * 1024
LOG_TAIL_BYTES = 8 * 1024 * 1024  # where a long log is first read from: far more than MAX_FINISHED lines


@dataclass(frozen=True)
class Row:
    """One worker, as a line of the table."""

    worker_id: str
    caste: str
    description: str | None
    model: str | None
    status: str
    verified: bool
    served_by: tuple[str, ...]
    requests: int | None
    tokens: int | None
    cost_usd: float | None
    started: float | None  # seconds since the epoch
    finished: float | None
    duration_s: float | None
    server: str | None  # `<pid>/<start time>` of the server running it: where a cancel goes
    transcript: str | None
    wire: bool = False  # a wrapped session's conversation: Claude Code's own, stopped in that session
    node: str | None = None  # a remote worker's Ray node

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def elapsed(self, now: float) -> float | None:
        if self.status == "running" and self.started is not None:
            return max(0.0, now - self.started)
        return self.duration_s

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Row:
        return cls(
            worker_id=str(entry.get("worker_id")),
            caste=str(entry.get("caste")),
            description=_text(entry.get("description")),
            model=_text(entry.get("model")),
            status=str(entry.get("status")),
            verified=entry.get("routing_verified") is True,
            served_by=tuple(deployment(s) for s in _list(entry.get("served_by")) if isinstance(s, str)),
            requests=_number(entry.get("requests"), int),
            tokens=token_count(entry),
            cost_usd=_number(entry.get("cost_usd"), float),
            started=_epoch(entry.get("started_at")),
            finished=_epoch(entry.get("finished_at")),
            duration_s=_number(entry.get("duration_s"), float),
            server=_text(entry.get("server")),
            transcript=_text(entry.get("transcript_path")),
            wire=entry.get("mode") == "wire",
            node=_text(entry.get("node")),
        )


@dataclass
class Board:
    """What the servers of the project at `state_dir` have written, read again as it changes."""

    state_dir: Path
    rows: list[Row] = field(default_factory=list)
    _finished: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_FINISHED))
    _live: list[dict[str, Any]] = field(default_factory=list)
    _log_at: tuple[int, int] = (0, 0)  # the log's inode and how far it has been read
    _running_stamp: int | None = None
    _checked_at: float = 0.0

    def refresh(self) -> bool:
        """Read what changed; whether the rows did."""
        changed = self._read_log()
        stamp = _mtime(running_dir(self.state_dir))
        if stamp != self._running_stamp or time.monotonic() - self._checked_at > LIVENESS_S:
            self._running_stamp, self._checked_at = stamp, time.monotonic()
            live = read_running(self.state_dir)
            changed = changed or live != self._live
            self._live = live
        if changed:
            self.rows = self._rows()
        return changed

    def totals(self) -> list[CostRow]:
        """The finished workers shown (the most recent MAX_FINISHED), per caste and model, costliest first:
        `aether-mcp costs`'s sums, over them."""
        return cost_table(self._finished)

    def details(self, worker_id: str) -> dict[str, Any]:
        """One worker's details (its task's first lines, requests, evidence): empty when none were written."""
        return read_details(self.state_dir, worker_id) or {}

    def _read_log(self) -> bool:
        """The lines added since the last read, each read once and whole (a line being written waits)."""
        path = log_path(self.state_dir)
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        inode, offset = self._log_at
        if info.st_ino != inode or info.st_size < offset:  # new or rewritten: read again from its tail
            self._finished.clear()
            inode, offset = info.st_ino, 0
        elif info.st_size == offset:
            return False
        start = offset if offset or info.st_size <= LOG_TAIL_BYTES else info.st_size - LOG_TAIL_BYTES
        try:  # one read, to the size just seen: what follows it is the next read's
            added, _ = read_regular(path, info.st_size - start, start=start)
        except (OSError, AetherError):
            return False
        if start != offset:  # began inside a line: from the next whole one
            skipped = added.find(b"\n") + 1
            added, start = added[skipped:], start + skipped
        complete = added[: added.rfind(b"\n") + 1]
        self._log_at = (inode, start + len(complete))
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                self._finished.append(entry)
        return bool(complete)

    def _rows(self) -> list[Row]:
        finished = {str(e.get("worker_id")): e for e in self._finished}
        # One row a worker (its id is the table's key): a worker between its log line and the removal of its
        # note is shown finished, and of two notes naming one worker, one is shown.
        notes = {str(e.get("worker_id")): e for e in self._live}
        live = [Row.of(e) for worker_id, e in notes.items() if worker_id not in finished]
        live.sort(key=lambda r: (r.status != "running", -(r.started or 0)))
        return live + [Row.of(e) for e in reversed(finished.values())]


def transcript_tail(path: str | None, lines: int = 12) -> list[str]:
    """The last `lines` things a worker's transcript shows (what it said, the tools it called, its result),
    as the transcript holds them: redacted when they were written."""
    if path is None:
        return []
    try:
        data, _ = read_regular(Path(path), TRANSCRIPT_TAIL_BYTES + 1, start=None)
    except (OSError, AetherError):
        return []
    lines_read = data.splitlines()
    if len(data) > TRANSCRIPT_TAIL_BYTES:  # began inside a line: from the next whole one
        lines_read = lines_read[1:]
    said: list[str] = []
    for line in lines_read:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            said += _said(event)
    return said[-lines:]


def _said(event: dict[str, Any]) -> list[str]:
    if event.get("type") == "result":
        return [f"result: {_one_line(event.get('result'))}"]
    message = event.get("message")
    content = message.get("content") if event.get("type") == "assistant" and isinstance(message, dict) else None
    found = []
    for block in _list(content):
        if isinstance(block, dict) and block.get("type") == "text":
            found.append(_one_line(block.get("text")))
        elif isinstance(block, dict) and block.get("type") == "tool_use":
            found.append(f"→ {block.get('name')} {_one_line(json.dumps(block.get('input')))}")
    return found


def deployment(served: str) -> str:
    """A deployment's id from the evidence's words ("deployment <id> (<model> at <address>)")."""
    words = served.split()
    return words[1] if len(words) > 1 and words[0] == "deployment" else served


def token_count(entry: dict[str, Any]) -> int | None:
    """What the gateway counted, by kind; else what the worker's own stream reported."""
    counted, usage = entry.get("tokens"), entry.get("usage")
    if isinstance(counted, dict):
        return sum(v for v in counted.values() if isinstance(v, int))
    if isinstance(usage, dict):
        return sum(v for k, v in usage.items() if isinstance(v, int) and k.endswith("tokens"))
    return None


def _one_line(value: object, limit: int = 200) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: object, kind: type[int] | type[float]) -> Any:
    number = finite(value)
    return kind(number) if number is not None else None


def _epoch(value: object) -> float | None:
    when = moment(value)
    return when.timestamp() if when is not None else None


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime_ns
    except OSError:
        return None
