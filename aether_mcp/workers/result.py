"""A worker's record, as the MCP tools, the command line and the spawn log all show it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..flat_schema import FlatRecord
from ..profile.resolution import Source

Status = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "budget_exceeded"]


class WorkerResult(FlatRecord):
    """One worker: what it was asked, what ran it, and what its stream proves."""

    worker_id: str = Field(description="Pass to get_worker, continue_worker, cancel_worker or discard_worker.")
    caste: str
    model: str | None = Field(description="The model the worker was started on (null: the CLI's own default).")
    model_source: Source = Field(description="Why that model: override, profile, slot, task, default or explicit.")
    status: Status
    output: str | None = Field(
        default=None, description="The worker's final answer, or the page of it asked for (see output_chars)."
    )
    output_offset: int = Field(default=0, description="Where in the whole answer this output starts.")
    output_chars: int | None = Field(
        default=None, description="The whole answer's length: get_worker with offset reads past this page."
    )
    structured_output: Any = Field(
        default=None, description="With output_schema: the answer as JSON, validated against the schema."
    )
    models_reported: list[str] = Field(
        default_factory=list, description="Every model the worker's own stream named (init, answers, modelUsage)."
    )
    routing_verified: bool = Field(default=False, description="True only when the evidence shows the assigned model.")
    routing_evidence: list[str] = Field(default_factory=list, description="What was checked and what it showed.")
    duration_s: float | None = None
    num_turns: int | None = None
    usage: dict[str, int] | None = None
    requests: int | None = Field(default=None, description="Requests the worker made through the gateway.")
    tokens: dict[str, int] | None = Field(
        default=None, description="Tokens the gateway counted, by kind: input, output, cache_read, cache_write."
    )
    cost_usd: float | None = Field(
        default=None,
        description="What the worker cost: from the proxy's cost header or model_metadata prices; null: unknown.",
    )
    served_by: list[str] = Field(default_factory=list, description="The proxy's deployments that answered it.")
    fallback_used: list[str] = Field(
        default_factory=list, description="Declared fallback models that served some of its requests."
    )
    session_id: str | None = None
    transcript_path: str | None = None
    cli: str | None = Field(
        default=None, description="The Claude Code CLI that ran the worker, and which rule chose it."
    )
    warm: bool = Field(default=False, description="True when a pre-started (warm) Claude Code process took the task.")
    cwd: str
    worktree: str | None = Field(
        default=None, description="With isolation 'worktree': the worker's own git worktree (null once removed)."
    )
    branch: str | None = Field(default=None, description="The worktree's branch, aether/<worker_id>.")
    base: str | None = Field(default=None, description="The commit the worktree started from.")
    commits: list[str] = Field(default_factory=list, description="Commits the worker made: '<sha> <subject>'.")
    diffstat: str | None = Field(default=None, description="git diff --stat of the worktree against the base.")
    continues: str | None = Field(default=None, description="The worker whose conversation this turn continues.")
    turn: int = Field(default=1, description="1 for a spawn; each continue_worker adds one.")
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = Field(default=None, description="What went wrong and how to fix it; null on success.")


class WorkerLine(BaseModel):
    worker_id: str
    caste: str
    model: str | None
    status: Status
    routing_verified: bool
    duration_s: float | None
    worktree: str | None = None
    turn: int = 1
