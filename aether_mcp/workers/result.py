"""A worker's record, as the MCP tools, the command line and the spawn log all show it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..flat_schema import FlatRecord
from ..profile.resolution import Source


class _Logged:
    """Marks a field the spawn log keeps: enough to answer "which model did it use?", not the output."""


LOGGED = _Logged()

Status = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "budget_exceeded"]
LIVE: tuple[Status, ...] = ("queued", "running")

MismatchCode = Literal[
    "proxy_unconfirmed",  # the preflight: the proxy did not say it routes the model
    "never_answered",  # the stream: no answer came from the backend
    "no_model",  # nothing was assigned to hold the worker to
    "other_model",  # the stream names another model
    "no_requests",  # the gateway saw no request: the worker went elsewhere
    "unanswered",  # no request was answered
    "refused",  # the gateway refused a request
    "answer_names_other",  # the answer's body names another model
    "unlisted_deployment",  # a deployment the proxy does not list answered
    "deployment_serves_other",  # the deployment that answered serves another model
    "provider_differs",  # the deployment is another provider's than model_metadata says
]


class Mismatch(BaseModel):
    """One thing that contradicts the assigned model: a code to act on, the values, and the same in words."""

    model_config = ConfigDict(frozen=True)

    code: MismatchCode
    asked: str | None = Field(default=None, description="The model that was asked for, when one was.")
    seen: str | None = Field(
        default=None, description="What contradicts it: a model, a deployment, a provider, a route or HTTP statuses."
    )
    message: str = Field(description="The same, in words.")


class WorkerResult(FlatRecord):
    """One worker: what it was asked, what ran it, and what its stream proves."""

    worker_id: Annotated[str, LOGGED] = Field(
        description="Pass to get_worker, continue_worker, cancel_worker or discard_worker."
    )
    caste: Annotated[str, LOGGED]
    mode: Annotated[Literal["process", "wire"], LOGGED] = Field(
        default="process",
        description="process: its own Claude Code process, started by aether-mcp; wire: a Claude Code sub-agent "
        "(or session) of a session run through `aether-mcp run`, routed at the gateway.",
    )
    agent_id: Annotated[str | None, LOGGED] = Field(
        default=None, description="wire: Claude Code's id of the sub-agent (null: a session's own conversation)."
    )
    parent_agent_id: Annotated[str | None, LOGGED] = Field(
        default=None, description="wire: the sub-agent that started this one, when it is nested."
    )
    description: Annotated[str | None, LOGGED] = Field(
        default=None, description="What the worker is for, in a few words (a sub-agent call's description)."
    )
    model: Annotated[str | None, LOGGED] = Field(
        description="The model the worker was started on (null: the CLI's own default)."
    )
    model_source: Annotated[Source, LOGGED] = Field(
        description="Why that model: override, profile, slot, task, default or explicit."
    )
    status: Annotated[Status, LOGGED]
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
    models_reported: Annotated[list[str], LOGGED] = Field(
        default_factory=list, description="Every model the worker's own stream named (init, answers, modelUsage)."
    )
    routing_verified: Annotated[bool, LOGGED] = Field(
        default=False, description="True only when the evidence shows the assigned model."
    )
    routing_evidence: list[str] = Field(default_factory=list, description="What was checked and what it showed.")
    routing_mismatches: Annotated[list[Mismatch], LOGGED] = Field(
        default_factory=list, description="What contradicts the assigned model, each with a code; empty when verified."
    )
    requests_by_model: Annotated[dict[str, int], LOGGED] = Field(
        default_factory=dict, description="Requests the gateway saw, by the model each went upstream with."
    )
    requests_by_asked_model: Annotated[dict[str, int], LOGGED] = Field(
        default_factory=dict,
        description="wire: requests whose body named another model than the one the gateway sent, by that model.",
    )
    requests_by_deployment: dict[str, int] = Field(
        default_factory=dict, description="Requests the gateway saw, by the proxy deployment that answered each."
    )
    duration_s: Annotated[float | None, LOGGED] = None
    num_turns: int | None = None
    usage: Annotated[dict[str, int] | None, LOGGED] = None
    requests: Annotated[int | None, LOGGED] = Field(
        default=None, description="Requests the worker made through the gateway."
    )
    tokens: Annotated[dict[str, int] | None, LOGGED] = Field(
        default=None, description="Tokens the gateway counted, by kind: input, output, cache_read, cache_write."
    )
    cost_usd: Annotated[float | None, LOGGED] = Field(
        default=None,
        description="What the worker cost: from the proxy's cost header or model_metadata prices; null: unknown.",
    )
    served_by: Annotated[list[str], LOGGED] = Field(
        default_factory=list, description="The proxy's deployments that answered it."
    )
    fallback_used: Annotated[list[str], LOGGED] = Field(
        default_factory=list, description="Declared fallback models that served some of its requests."
    )
    session_id: Annotated[str | None, LOGGED] = Field(
        default=None, description="The Claude Code session its conversation is in."
    )
    transcript_path: Annotated[str | None, LOGGED] = None
    cli: str | None = Field(
        default=None, description="The Claude Code CLI that ran the worker, and which rule chose it."
    )
    warm: bool = Field(default=False, description="True when a pre-started (warm) Claude Code process took the task.")
    cwd: Annotated[str, LOGGED]
    node: Annotated[str | None, LOGGED] = Field(
        default=None, description="A remote worker's Ray node: its name and the start of its id (null: local)."
    )
    worktree: str | None = Field(
        default=None, description="With isolation 'worktree': the worker's own git worktree (null once removed)."
    )
    branch: Annotated[str | None, LOGGED] = Field(
        default=None, description="The worktree's branch, aether/<worker_id>."
    )
    base: str | None = Field(default=None, description="The commit the worktree started from.")
    commits: Annotated[list[str], LOGGED] = Field(
        default_factory=list, description="Commits the worker made: '<sha> <subject>'."
    )
    diffstat: str | None = Field(default=None, description="git diff --stat of the worktree against the base.")
    continues: Annotated[str | None, LOGGED] = Field(
        default=None, description="The worker whose conversation this turn continues."
    )
    turn: Annotated[int, LOGGED] = Field(default=1, description="1 for a spawn; each continue_worker adds one.")
    started_at: Annotated[str | None, LOGGED] = None
    finished_at: Annotated[str | None, LOGGED] = None
    error: str | None = Field(default=None, description="What went wrong and how to fix it; null on success.")
    next_call: str | None = Field(
        default=None,
        description="While the worker runs: the exact call that collects it (the tool, then its arguments).",
    )

    def log_entry(self) -> dict[str, Any]:
        """What the spawn log keeps of this result: its fields marked LOGGED."""
        return self.model_dump(mode="json", include=LOGGED_FIELDS)


class WorkerLine(BaseModel):
    worker_id: str
    caste: str
    description: str | None = None
    model: str | None
    status: Status | Literal["interrupted"]
    routing_verified: bool
    duration_s: float | None
    worktree: str | None = None
    turn: int = 1
    mine: bool = Field(default=True, description="Started by this session (false: by another session or server).")

    @classmethod
    def of(cls, result: WorkerResult) -> WorkerLine:
        return cls.model_validate(result.model_dump(include=set(cls.model_fields)))


LOGGED_FIELDS = {name for name, info in WorkerResult.model_fields.items() if LOGGED in info.metadata}
