"""One conversation of a wrapped session, as the gateway sees it: a sub-agent, or a Claude Code session's own.

A `WireAgent` is made on the `SubagentStart` hook or at its first request,
holds the route its requests take (a `Lease`, re-aimed at its caste's model on
every request), and ends on `SubagentStop` or with the session. It is the one
owner of that state, and builds the record that the spawn log, `top` and
`workers` show, with mode `wire`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from ..profile.resolution import Source
from ..workers.preflight import Preflight
from ..workers.proof import RoutingVerdict, judge_requests, tally
from ..workers.result import LIVE, Status, WorkerLine, WorkerResult
from ..workers.wire import Lease, is_message

SESSION = "session"  # what a session's own conversation is called where a caste's name would be
UNATTRIBUTED = "unattributed"  # a sub-agent whose kind could not be known
# How it was told apart: by the hook, by its system prompt, as a session's own, or not at all.
Identified = Literal["hook", "prompt", "session", "parent", "none"]


@dataclass(frozen=True)
class Identity:
    """Who a conversation is in Claude Code's terms: its session, and (for a sub-agent) its ids and agent."""

    session_id: str
    agent_id: str | None = None
    parent_agent_id: str | None = None
    agent_type: str | None = None  # the agent's name (SubagentStart's agent_type, or matched by prompt)


class WireAgent:
    """A conversation's route, requests and life; `caste` None: not a caste, its requests pass on as asked."""

    def __init__(
        self,
        identity: Identity,
        caste: str | None,
        lease: Lease,
        cwd: Path,
        identified: Identified,
        *,
        began: Moment | None = None,
    ) -> None:
        self.identity = identity
        self.caste = caste
        self.lease = lease
        self.cwd = cwd
        self.identified = identified
        self.worker_id = _worker_id(self.kind, identity)
        self.model: str | None = None  # what its requests are sent on now (None: as they ask)
        self.model_source: Source = "asked"
        self.task = ""  # a caste's task, for task_routing (kept in memory only)
        self.task_head = ""  # its first lines, redacted: what `top` shows of it
        self.transcript_path: str | None = None
        self.turns = 0
        self.last_tool: str | None = None
        self._status: Status = "running"
        self._began = began or Moment.now()  # SubagentStart's, else its first request's
        self._stopped: Moment | None = None  # SubagentStop's, else the settling's
        self._duration_s: float | None = None
        self._error: str | None = None
        self._verdict: RoutingVerdict | None = None

    @property
    def kind(self) -> str:
        """What it is called in listings: its caste, its agent's name, the session's own, or unattributed."""
        if self.caste is not None:
            return self.caste
        if self.identity.agent_id is None:
            return SESSION
        return self.identity.agent_type or UNATTRIBUTED

    @property
    def live(self) -> bool:
        return self._status in LIVE

    def aim(self, model: str | None, source: Source) -> None:
        """From the next request on, its requests go upstream on `model` (None: on the model they ask for)."""
        self.model, self.model_source = model, source

    def stop(self) -> None:
        """Claude Code said it stopped (SubagentStop): its end is now, whenever it is judged."""
        self._stopped = self._stopped or Moment.now()

    def end(self, preflight: Preflight | None, provider: str | None, *, stopped: bool = True) -> None:
        """It ended (`stopped`: Claude Code said so; else the session ended first): judged from its requests."""
        if not self.live:
            return
        self._verdict = judge_requests(self.model, self.lease, preflight, provider, as_asked=self.caste is None)
        answers = [r for r in self.lease.records if r.status == 200 and r.refused is None and is_message(r.path)]
        answered = bool(answers)
        # Its last answer ended its turn: it had finished, whether or not its SubagentStop (which Claude Code
        # runs without waiting for it) came before the session ended.
        stopped = stopped or (answered and answers[-1].stop_reason == "end_turn")
        if self.lease.budget_exceeded:
            self._status, self._error = "budget_exceeded", self.lease.over_budget()
        elif not answered and self.lease.records:
            # Claude Code says nothing (no SubagentStop) of a sub-agent an API error ended.
            self._status, self._error = "failed", "None of its requests was answered; see routing_evidence."
        elif not stopped:
            self._status, self._error = "cancelled", "The session ended before this conversation did."
        else:
            self._status = "succeeded"
        self._stopped = self._stopped or Moment.now()
        self._duration_s = round(self._stopped.clock - self._began.clock, 3)

    def line(self) -> WorkerLine:
        return WorkerLine.of(self.record())

    def record(self) -> WorkerResult:
        """The conversation as the spawn log and the listings show it; while it runs, the wire's figures so far."""
        verdict = self._verdict
        wire = verdict.wire if verdict is not None and verdict.wire is not None else tally(self.lease, None, self.model)
        asked = Counter(r.asked_model for r in self.lease.records if r.asked_model is not None)
        # A conversation passed on as asked is shown on the model it asked for most (a session's own model).
        model = (
            self.model or next(iter(Counter(r.model for r in self.lease.records if r.model).most_common(1)), ("",))[0]
        )
        how = {
            "hook": f"told apart by Claude Code's SubagentStart hook ({self.identity.agent_type})",
            "prompt": f"told apart by its system prompt, which is the {self.identity.agent_type} agent's",
            "session": "a Claude Code session's own conversation",
            "parent": "an auxiliary conversation (compaction) of the conversation that started it",
            "none": "neither the SubagentStart hook nor its system prompt told which agent it is",
        }[self.identified]
        evidence = [how, *(verdict.evidence if verdict is not None else [])]
        return WorkerResult(
            worker_id=self.worker_id,
            caste=self.kind,
            mode="wire",
            agent_id=self.identity.agent_id,
            parent_agent_id=self.identity.parent_agent_id,
            description=self._description(),
            model=model or None,
            model_source=self.model_source,
            status=self._status,
            routing_verified=verdict.verified if verdict is not None else False,
            routing_evidence=evidence,
            routing_mismatches=verdict.mismatches if verdict is not None else [],
            requests_by_model=wire.by_model,
            requests_by_asked_model=dict(sorted(asked.items())),
            requests_by_deployment=wire.by_deployment,
            requests=wire.requests,
            tokens=wire.tokens,
            cost_usd=wire.cost_usd,
            served_by=wire.served_by,
            fallback_used=wire.fallback_used if self.caste is not None else [],
            session_id=self.identity.session_id or None,
            transcript_path=self.transcript_path,
            cwd=str(self.cwd),
            duration_s=self._duration_s,
            started_at=self._began.at,
            finished_at=self._stopped.at if not self.live and self._stopped else None,
            error=self._error,
        )

    def _description(self) -> str:
        """Where it ran and as what (never its task: the log keeps what ran and how, not what it was told)."""
        who = self.identity.agent_type or ("session" if self.identity.agent_id is None else UNATTRIBUTED)
        return f"wire: {who}"


def _worker_id(kind: str, identity: Identity) -> str:
    """A worker id (`<kind>-<8 hex>`) that names this conversation and no other: from its session and agent ids."""
    slug = re.sub(r"[^a-z0-9-]+", "-", kind.lower()).strip("-")[:40] or "agent"
    if not slug[0].isalpha():
        slug = "agent-" + slug
    digest = hashlib.sha256(f"{identity.session_id}\0{identity.agent_id or ''}".encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


@dataclass(frozen=True)
class Moment:
    """When something happened: on the wall clock (shown) and the monotonic one (durations)."""

    at: str
    clock: float

    @classmethod
    def now(cls) -> Moment:
        return cls(datetime.now(UTC).isoformat(timespec="seconds"), time.monotonic())
