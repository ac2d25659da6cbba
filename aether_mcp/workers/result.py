"""A worker's record, as the MCP tools, the command line and the spawn log all show it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..flat_schema import FlatRecord
from ..profile.resolution import Source

Status = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]


class WorkerResult(FlatRecord):
    """One worker: what it was asked, what ran it, and what its stream proves."""

    worker_id: str = Field(description="Pass to get_worker or cancel_worker.")
    caste: str
    model: str | None = Field(description="The model the worker was started on (null: the CLI's own default).")
    model_source: Source = Field(description="Why that model: override, profile, slot, task, default or explicit.")
    status: Status
    output: str | None = Field(default=None, description="The worker's final answer (capped; see transcript_path).")
    models_reported: list[str] = Field(
        default_factory=list, description="Every model the worker's own stream named (init, answers, modelUsage)."
    )
    routing_verified: bool = Field(default=False, description="True only when the evidence shows the assigned model.")
    routing_evidence: list[str] = Field(default_factory=list, description="What was checked and what it showed.")
    duration_s: float | None = None
    num_turns: int | None = None
    usage: dict[str, int] | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    transcript_path: str | None = None
    cli: str | None = Field(
        default=None, description="The Claude Code CLI that ran the worker, and which rule chose it."
    )
    warm: bool = Field(default=False, description="True when a pre-started (warm) Claude Code process took the task.")
    cwd: str
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
