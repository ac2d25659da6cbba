"""What a spawn takes: one definition, with its bounds, for the MCP tool and the command line alike.

Each argument is an `Annotated` alias whose description is what the calling
model (or `aether-mcp spawn --help`) reads and whose constraints are its
bounds; `SpawnRequest` is made of them, the `spawn_worker` tool's parameters
are the same aliases, and the CLI's options are made from the request's
fields. Whatever fails a bound is an `AetherError` before anything runs.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import AetherError

MAX_TASK_BYTES = 1024 * 1024
# A day: longer than any worker should run, short enough that a typo (1e300) is caught.
MAX_TIMEOUT_S = 86_400.0
MAX_BUDGET_USD = 10_000
MAX_TOKENS = 1_000_000_000
MAX_SCHEMA_BYTES = 64 * 1024
MAX_DESCRIPTION_CHARS = 200

Isolation = Literal["none", "worktree"]
Checked = TypeVar("Checked", bound=BaseModel)

CasteName = Annotated[
    str,
    Field(
        description="A caste: one the profile names or a Claude Code agent of the project, e.g. builder or "
        "aether-builder, scout, watcher. Case, '-'/'_' and an 'aether-' prefix do not matter.",
    ),
]
Description = Annotated[
    str | None,
    Field(
        max_length=MAX_DESCRIPTION_CHARS,
        description="A few words naming the worker in listings and the live view (a sub-agent call's description).",
    ),
]
TaskText = Annotated[str, Field(description="What the worker should do, in full: it sees nothing else.")]
FinishedWorker = Annotated[str, Field(max_length=200, description="A finished worker of this session.")]
FollowUpText = Annotated[str, Field(description="The next message in that worker's conversation.")]
WorkingDir = Annotated[
    str | None,
    Field(description="Absolute path of an existing directory to work in. Default: the server's."),
]
ModelChoice = Annotated[
    str | None,
    Field(description="A model for this one worker instead of the caste's (source: explicit)."),
]
TimeoutSeconds = Annotated[
    float | None,
    Field(description="Kill the worker after this many seconds. Default: the caste's setting."),
]
IsolationChoice = Annotated[
    Isolation | None,
    Field(
        description="worktree: the worker works in a fresh git worktree on a branch of its own "
        "(aether/<worker_id>), so parallel workers cannot write over each other. Default: the caste's setting."
    ),
]
RunsOnChoice = Annotated[
    Literal["local", "ray"] | None,
    Field(
        description="ray: run the worker on a node of the Ray cluster the profile names (workers.ray); its "
        "worktree commits come back as its branch. Default: the caste's setting (local).",
    ),
]
BaseRef = Annotated[
    str | None,
    Field(max_length=200, description="With isolation 'worktree': the commit or branch to start from (HEAD)."),
]
OutputSchema = Annotated[
    dict[str, Any] | None,
    Field(
        description="A JSON Schema object the answer must fit: the result then carries structured_output, "
        "validated; an answer that does not fit is a failed worker."
    ),
]
BudgetUsd = Annotated[
    float | None,
    Field(
        gt=0,
        le=MAX_BUDGET_USD,
        description="Stop the worker once it has spent this many US dollars (at the gateway).",
    ),
]
BudgetTokens = Annotated[
    int | None,
    Field(gt=0, le=MAX_TOKENS, description="Stop the worker once its requests have used this many tokens."),
]


class TurnOptions(BaseModel):
    """What a spawn and a follow-up alike may set for one turn: its timeout and the answer's schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: TimeoutSeconds = None
    output_schema: OutputSchema = None

    # The checks raise AetherError, which pydantic passes on as it is: its message is the one the caller reads,
    # naming the fix.
    @field_validator("timeout_s")
    @classmethod
    def _timeout_fits(cls, timeout_s: float | None) -> float | None:
        return check_timeout(timeout_s)

    @field_validator("output_schema")
    @classmethod
    def _schema_is_usable(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if schema is None else check_output_schema(schema)


class WorkerShape(TurnOptions):
    """What shapes a worker before its task: its caste, and what this spawn sets over the caste's settings.

    A warm process is started from the shape of its caste's usual worker; a spawn adds the task."""

    caste: CasteName
    cwd: WorkingDir = None
    model: ModelChoice = None
    isolation: IsolationChoice = None
    runs_on: RunsOnChoice = None
    base: BaseRef = None
    max_budget_usd: BudgetUsd = None
    max_tokens: BudgetTokens = None
    description: Description = None


class SpawnRequest(WorkerShape):
    """One worker asked for: its shape and its task."""

    task: TaskText

    @field_validator("task")
    @classmethod
    def _task_fits(cls, task: str) -> str:
        return check_task(task)


class FollowUpRequest(TurnOptions):
    """A follow-up turn in a finished worker's conversation: the message, and what this turn sets anew."""

    worker_id: FinishedWorker
    message: FollowUpText

    @field_validator("message")
    @classmethod
    def _message_fits(cls, message: str) -> str:
        return check_task(message)


def spawn_request(**values: Any) -> SpawnRequest:
    """A checked request; a value out of bounds is an AetherError that names the argument and the bound."""
    return _checked(SpawnRequest, "The spawn cannot start", values)


def follow_up_request(**values: Any) -> FollowUpRequest:
    """A checked follow-up, bounded as a spawn is."""
    return _checked(FollowUpRequest, "The follow-up cannot start", values)


def _checked(kind: type[Checked], refusal: str, values: dict[str, Any]) -> Checked:
    try:
        return kind(**values)
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise AetherError(f"{refusal}: {problems}.") from None


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "the request"
    return f"{where}: {'no such argument' if error['type'] == 'extra_forbidden' else error['msg']}"


def check_task(task: str) -> str:
    """A task (or a follow-up's message) that says something and fits in the bound."""
    if not task.strip():
        raise AetherError("The task is empty: say what the worker should do.")
    size = len(task.encode())
    if size > MAX_TASK_BYTES:
        raise AetherError(
            f"The task is {size:,} bytes; a task may be at most {MAX_TASK_BYTES:,}.",
            "Put the material in a file in the worker's directory and name the file in the task",
        )
    return task


def check_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and not 0 < timeout_s <= MAX_TIMEOUT_S:  # NaN fails this too
        raise AetherError(f"The timeout must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds, not {timeout_s}.")
    return timeout_s


def check_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Refuse an output_schema that is too large to pass on or is not a JSON Schema."""
    import jsonschema  # on first use: the server starts without it

    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise AetherError(f"output_schema is {size:,} bytes of JSON; at most {MAX_SCHEMA_BYTES:,} are allowed.")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise AetherError(f"output_schema is not a valid JSON Schema: {exc.message}") from None
    outside = next((ref for ref in _refs(schema) if not ref.startswith("#")), None)
    if outside is not None:
        # A reference out of the schema would make the server fetch a URL or read a file.
        raise AetherError(f"output_schema refers outside itself ({outside!r}); write the definition in $defs.")
    return schema


def _refs(node: Any) -> list[str]:
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    if not isinstance(node, dict):
        return []
    own = [str(node[k]) for k in ("$ref", "$dynamicRef") if k in node]
    return own + [ref for value in node.values() for ref in _refs(value)]
