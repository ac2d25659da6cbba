"""The MCP adapter: tools wired to the core, nothing else.

Built by a factory, never at import time, so tests and the CLI hand it the
profile store they want.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial, wraps
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from ..commands import doctor
from ..commands.doctor import RoutingReport
from ..errors import AetherError
from ..flat_schema import FlatRecord
from ..profile.store import CasteModels, ProfileStore, ResetResult, SetResult
from ..session.hook import wired
from ..workers.colony import Colony
from ..workers.proof import OUTPUT_PAGE
from ..workers.request import (
    BaseRef,
    BudgetTokens,
    BudgetUsd,
    CasteName,
    Description,
    FinishedWorker,
    FollowUpText,
    IsolationChoice,
    ModelChoice,
    OutputSchema,
    RunsOnChoice,
    TaskText,
    TimeoutSeconds,
    WorkingDir,
    follow_up_request,
    spawn_request,
)
from ..workers.result import WorkerLine, WorkerResult
from ..workers.spawn_log import recent_lines
from ..workers.worker import Worker
from . import control, handoff, http

log = logging.getLogger("aether_mcp")

ModelName = Annotated[
    str, Field(description="The model name as the proxy knows it, e.g. glm-5 or kimi-k2.5; or opus/sonnet/haiku.")
]


STDIO_OWNER = "stdio"  # a stdio server's one client: its parent process
LIST_PAGE = 20  # workers a listing shows unless asked for more: a parent's recent wave, in about 2 KB


class WorkerList(FlatRecord):
    workers: list[WorkerLine] = Field(description="Newest first; one page of them.")
    total: int = Field(
        description="How many workers there are to page through: this session's (finished ones are kept up to 200), "
        "or, for the project, those read so far."
    )
    next_offset: int | None = Field(description="Pass as offset for the next page; null: this is the last.")


INSTRUCTIONS = """\
aether-mcp decides which model each caste of Aether worker runs on. The castes
are the project's Claude Code agents (.claude/agents, e.g. aether-builder) and
the castes the profile names; other sub-agent types (general-purpose, Explore,
...) stay with the Task tool.
A Task (Agent) call for a caste is denied: aether-mcp's hook has started the
worker already, and the denial names the exact call that collects it
(mcp__aether__get_worker with its worker_id). Make that call; make the
collecting calls of several workers in one message, so they run side by side.
Without a Task call, start each worker with spawn_worker (the caste, the full
prompt as task) and wait=false, then collect them all with get_worker
(wait_s=900) in one message; start a worker that needs another's result only
after it. Each worker is its own Claude Code process running the caste's agent
on the caste's model, and its result shows which model served it
(routing_verified). get_caste_model shows the routing table, set_caste_model
moves a caste to another model (a user override in the profile),
reset_caste_model undoes it. Workers that write code side by side take
isolation="worktree"; continue_worker sends a finished worker a follow-up;
output_schema asks for a JSON answer."""


class _RejectUnknownArguments:
    """Middleware: an argument the tool does not take is an error, not silently dropped.

    A model that writes `modle` for `model`, or `timeout` for `timeout_s`, should hear so,
    rather than get a worker with the caste's model or the default timeout."""

    def __init__(self) -> None:
        self.server: MCPServer[ServerState] | None = None
        self._parameters: dict[str, list[str]] | None = None

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        params = ctx.params if isinstance(ctx.params, dict) else {}
        known = (await self._known()).get(str(params.get("name"))) if ctx.method == "tools/call" else None
        if known is not None:
            unknown = sorted(set(params.get("arguments") or {}) - set(known))
            if unknown:
                message = (
                    f"{params['name']} takes no argument {', '.join(repr(u) for u in unknown)}; "
                    f"its arguments are: {', '.join(known) or '(none)'}."
                )
                return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
        return await call_next(ctx)

    async def _known(self) -> dict[str, list[str]]:
        """Each tool's argument names, read once from the schemas the server publishes."""
        if self._parameters is None:
            assert self.server is not None
            tools = await self.server.list_tools()
            self._parameters = {t.name: list(t.input_schema.get("properties", {})) for t in tools}
        return self._parameters


def _register(server: MCPServer[ServerState], func: Callable[..., Any], annotations: ToolAnnotations) -> None:
    """Register a tool whose description is its docstring, and whose own errors reach the model as tool errors."""
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(func):

        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except AetherError as exc:
                raise ToolError(str(exc)) from exc

    else:

        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except AetherError as exc:
                raise ToolError(str(exc)) from exc

    server.tool(description=inspect.cleandoc(func.__doc__ or ""), annotations=annotations)(wrapper)


@dataclass(frozen=True)
class ServerState:
    """What every tool reads from the server's lifespan: the profile store and the colony of workers."""

    store: ProfileStore
    colony: Colony
    routing: Literal["process", "wire"] = "process"  # wire: the session runs through `aether-mcp run`


Ctx = Context[ServerState]


def _reads(title: str, *, open_world: bool = False) -> ToolAnnotations:
    """A read-only tool's annotations: Claude Code runs several calls of it in one message side by side."""
    return ToolAnnotations(title=title, read_only_hint=True, idempotent_hint=True, open_world_hint=open_world)


def _acts(title: str, *, destructive: bool, idempotent: bool, open_world: bool) -> ToolAnnotations:
    return ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


async def get_caste_model(
    ctx: Ctx,
    caste: Annotated[str | None, Field(description="The caste to look up; omit it to list every caste.")] = None,
    task: Annotated[
        str | None,
        Field(description="Optional task description: used only for castes with no model of their own."),
    ] = None,
) -> CasteModels:
    """Show which model a caste's workers run on, and why (override, profile, slot, task or default).

    Omit `caste` to get the whole routing table. Use this before spawning
    workers, or when the user asks which model a caste uses."""
    # In the event loop, not a worker thread: a look-up is a stat() and a few dict reads (the file is
    # parsed only after it changed), and this call comes on every turn of the parent.
    state = _state(ctx)
    return state.store.caste_models(caste, task).model_copy(update={"routing": state.routing})


def set_caste_model(
    ctx: Ctx,
    caste: CasteName,
    model: ModelName,
    create: Annotated[
        bool, Field(description="Add the caste when the profile does not define it yet. Default: false.")
    ] = False,
) -> SetResult:
    """Put a caste's workers on another model, e.g. "put scouts on kimi-k2.5".

    Stored in the profile's user_overrides; the caste's own model stays in
    the file and reset_caste_model brings it back. Read `warnings`."""
    return _state(ctx).store.set_override(caste, model, create=create)


def reset_caste_model(ctx: Ctx, caste: CasteName) -> ResetResult:
    """Remove a caste's user override so it runs on the profile's own model again."""
    return _state(ctx).store.reset_override(caste)


async def check_routing(
    ctx: Ctx,
    caste: Annotated[str | None, Field(description="Check one caste only; omit it to check every caste.")] = None,
) -> RoutingReport:
    """Check that workers can be routed: the profile, the Claude Code CLI, the proxy (reachable, takes the
    token) and each caste's model (routed by the proxy). Each failed check says how to fix it.

    Call this before spawning a colony, or when a spawn was refused."""
    return await anyio.to_thread.run_sync(doctor.check_routing, _state(ctx).store, os.environ, caste)


async def spawn_worker(  # noqa: PLR0917 (the tool's parameters are its contract)
    caste: CasteName,
    ctx: Ctx,
    task: TaskText = "",
    cwd: WorkingDir = None,
    model: ModelChoice = None,
    wait: Annotated[
        bool, Field(description="True: return when the worker ends. False: return at once with its worker_id.")
    ] = True,
    timeout_s: TimeoutSeconds = None,
    isolation: IsolationChoice = None,
    runs_on: RunsOnChoice = None,
    base: BaseRef = None,
    output_schema: OutputSchema = None,
    max_budget_usd: BudgetUsd = None,
    max_tokens: BudgetTokens = None,
    description: Description = None,
    call_id: Annotated[
        str | None,
        Field(
            max_length=64,
            description="The id a denied sub-agent call named: the worker takes that call's prompt (then task "
            "may be omitted), description and worktree.",
        ),
    ] = None,
) -> WorkerResult:
    """Start a Claude Code worker of a caste on that caste's model, and report which model really served it.

    Use this instead of the Task tool for Aether castes: the worker runs as
    its own headless Claude Code process with the caste's model, tools and
    permissions. For several workers at once, spawn each with wait=false (it
    returns at once), then collect them with get_worker calls in one message:
    they run side by side. Check routing_verified and routing_evidence in the result.
    With isolation 'worktree' the result names its branch, commits and
    diffstat; merge the branch or drop it with discard_worker. A worker
    that spends its max_budget_usd or max_tokens ends as budget_exceeded."""
    options = {"task": task, "cwd": cwd, "isolation": isolation, "description": description}
    if call_id is not None:
        options = handoff.with_kept_call(call_id, caste, options)
    request = spawn_request(
        caste=caste,
        model=model,
        timeout_s=timeout_s,
        base=base,
        runs_on=runs_on,
        output_schema=output_schema,
        max_budget_usd=max_budget_usd,
        max_tokens=max_tokens,
        **options,
    )
    worker = await _state(ctx).colony.spawn(request, owner=_owner(ctx))
    return await _reply(ctx, worker, wait)


async def continue_worker(  # noqa: PLR0917 (the tool's parameters are its contract)
    worker_id: FinishedWorker,
    message: FollowUpText,
    ctx: Ctx,
    wait: Annotated[
        bool, Field(description="True: return when the turn ends. False: return at once with its worker_id.")
    ] = True,
    timeout_s: TimeoutSeconds = None,
    output_schema: OutputSchema = None,
) -> WorkerResult:
    """Continue a finished worker's conversation with a follow-up, e.g. a watcher's findings back to the builder.

    The new turn runs on the same caste, model, directory or worktree and
    permissions, with its own routing proof; its result has a worker_id
    of its own, `continues` and `turn`."""
    request = follow_up_request(worker_id=worker_id, message=message, timeout_s=timeout_s, output_schema=output_schema)
    worker = await _state(ctx).colony.continue_worker(request, owner=_owner(ctx))
    return await _reply(ctx, worker, wait)


async def get_worker(
    worker_id: Annotated[str, Field(description="The worker_id spawn_worker returned.")],
    ctx: Ctx,
    wait_s: Annotated[
        float, Field(ge=0, le=3600, description="Wait up to this many seconds for the worker to finish.")
    ] = 0,
    offset: Annotated[int, Field(ge=0, description="Read the answer from this character on (see output_chars).")] = 0,
    limit: Annotated[int, Field(ge=1, le=100_000, description="At most this many characters of the answer.")] = (
        OUTPUT_PAGE
    ),
) -> WorkerResult:
    """A worker's status, and its full result once it has finished. Set wait_s to wait for it.

    Read-only: several get_worker calls in one message run side by side, so
    collect a wave of workers in one message.
    A long answer comes in pages: when output_chars is more than offset plus
    the output's length, call again with a larger offset."""
    worker = _state(ctx).colony.get(worker_id, _owner(ctx))
    if wait_s:
        with anyio.move_on_after(wait_s):
            await worker.done.wait()
    return worker.record(offset, limit)


async def discard_worker(
    worker_id: Annotated[str, Field(description="A finished worker of this session that has a worktree.")],
    ctx: Ctx,
) -> WorkerResult:
    """Remove a finished worker's git worktree and its branch, with whatever they hold.

    Use it after merging the branch, or to drop work you do not want."""
    return (await _state(ctx).colony.discard(worker_id, _owner(ctx))).record()


async def list_workers(
    ctx: Ctx,
    limit: Annotated[int, Field(ge=1, le=200, description="At most this many workers.")] = LIST_PAGE,
    offset: Annotated[int, Field(ge=0, le=10_000, description="Skip this many of the newest first.")] = 0,
    scope: Annotated[
        Literal["session", "project"],
        Field(
            description="session: the workers this session started. project: the project's recent workers of "
            "every session and server (running ones and the spawn log), each marked mine or not."
        ),
    ] = "session",
) -> WorkerList:
    """Workers, newest first: id, caste, description, model, status, verified, duration, worktree, turn and
    whether this session started it. By default this session's; scope "project" answers "what ran recently?"
    across sessions. A page at a time: see next_offset."""
    colony, owner = _state(ctx).colony, _owner(ctx)
    if scope == "project":
        every = await anyio.to_thread.run_sync(
            lambda: recent_lines(
                colony.state_dir, offset + limit + 1, lambda worker_id: _owns(colony, worker_id, owner)
            )
        )
    else:
        every = colony.list(owner)
    shown = every[offset : offset + limit]
    more = offset + len(shown) < len(every)
    return WorkerList(workers=shown, total=len(every), next_offset=offset + len(shown) if more else None)


def _owns(colony: Colony, worker_id: str, owner: str) -> bool:
    try:
        colony.get(worker_id, owner)
    except AetherError:
        return False
    return True


async def cancel_worker(
    worker_id: Annotated[str, Field(description="The worker_id of a queued or running worker.")],
    ctx: Ctx,
) -> WorkerResult:
    """Stop a queued or running worker; it is killed with every process it started."""
    worker = _state(ctx).colony.cancel(worker_id, _owner(ctx))
    with anyio.move_on_after(10):
        await worker.done.wait()
    return worker.record()


TOOLS: list[tuple[Callable[..., Any], ToolAnnotations]] = [
    (get_caste_model, _reads("Which model a caste uses")),
    (set_caste_model, _acts("Put a caste on a model", destructive=False, idempotent=True, open_world=False)),
    (reset_caste_model, _acts("Undo a caste's override", destructive=False, idempotent=True, open_world=False)),
    (check_routing, _reads("Is routing healthy?", open_world=True)),
    # Not read-only: a worker is a process that may change files (so Claude Code runs these calls one by one).
    (spawn_worker, _acts("Start a worker", destructive=True, idempotent=False, open_world=True)),
    (continue_worker, _acts("Send a worker a follow-up", destructive=True, idempotent=False, open_world=True)),
    (get_worker, _reads("A worker's status and result")),
    (discard_worker, _acts("Drop a worker's worktree", destructive=True, idempotent=False, open_world=False)),
    (list_workers, _reads("This session's workers")),
    (cancel_worker, _acts("Stop a worker", destructive=True, idempotent=True, open_world=False)),
]


def build_server(store: ProfileStore, *, take_handoffs: bool = False) -> MCPServer[ServerState]:
    """An MCP server for one profile store. With `take_handoffs` (a stdio server: its parent is a Claude Code
    session) it also starts the sub-agent calls that session's hook hands over."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        where = store.location
        log.info("aether-mcp serving profile %s (%s)", where.path, where.rule)
        async with Colony(store) as colony, anyio.create_task_group() as group:
            await group.start(control.serve, colony)  # `aether-mcp top` stops workers through it
            if take_handoffs:
                address = await group.start(handoff.serve, partial(_take_call, colony))
                log.info("taking the hook's sub-agent calls: %s", "yes" if address else "no (socket in use)")
            # Asked once: a server's session runs through `aether-mcp run` from its start to its end, or never.
            wrapped = await anyio.to_thread.run_sync(wired, os.environ)
            yield ServerState(store, colony, "wire" if wrapped else "process")
            group.cancel_scope.cancel()

    arguments = _RejectUnknownArguments()
    server: MCPServer[ServerState] = MCPServer(
        "aether", instructions=INSTRUCTIONS, lifespan=lifespan, middleware=[arguments]
    )
    arguments.server = server
    for func, hints in TOOLS:
        _register(server, func, hints)
    _add_prompts(server, store)
    return server


async def _take_call(colony: Colony, call: dict[str, Any]) -> tuple[handoff.Reply, Callable[[], object] | None]:
    """Start the worker of a sub-agent call the hook handed over, as this session's (stdio's) own."""
    try:
        worker = await colony.spawn(spawn_request(**handoff.from_call(call)), owner=STDIO_OWNER)
    except AetherError as exc:
        return {"error": str(exc)}, None
    result = worker.record()
    reply = {"worker_id": result.worker_id, "caste": result.caste, "model": result.model, "status": result.status}
    return reply, partial(colony.cancel, result.worker_id, STDIO_OWNER)


def _add_prompts(server: MCPServer[ServerState], store: ProfileStore) -> None:
    @server.prompt(name="colony", title="Turn a goal into a colony of workers")
    def colony(goal: str) -> str:
        """Plan which castes a goal needs and spawn them, each on its own model."""
        table = _routing_lines(store)
        return (
            f"Goal: {goal}\n\n"
            "Run this goal as an Aether colony. The castes and the models they run on:\n"
            f"{table}\n\n"
            "1. Decide which of these castes the goal needs (for example a scout to learn the ground, a "
            "route-setter or architect to plan, a builder to change code, a watcher to test and review).\n"
            "2. Write each worker's task in full: it sees nothing of this conversation, only its task.\n"
            "3. Start workers with the mcp__aether__spawn_worker tool, not the Task tool. Workers that do not "
            "depend on each other run side by side: spawn each with wait=false (it returns at once, naming in "
            "next_call the call that collects it), then make all those mcp__aether__get_worker calls in one "
            "message. Spawn a worker that needs another's result only after it.\n"
            "4. For every result, check routing_verified; if it is false, say so and show routing_evidence.\n"
            "5. Finish with what each worker found or changed, and a table of caste, model, verified."
        )

    @server.prompt(name="routing", title="Show the routing table")
    def routing() -> str:
        """Show which model each caste uses, and how to change it."""
        return (
            "Show the user this routing table of Aether castes and their models:\n"
            f"{_routing_lines(store)}\n\n"
            "Then explain briefly: set_caste_model moves a caste to another model (a user override in the "
            "profile), reset_caste_model undoes it, and check_routing tells whether the proxy routes each model. "
            "Offer to run check_routing."
        )


def _routing_lines(store: ProfileStore) -> str:
    try:
        table = store.caste_models()
    except AetherError as exc:
        return f"(the profile cannot be read: {exc})"
    lines = [
        f"- {c.caste}: {c.model or '(CLI default)'} ({c.source}{', override' if c.override else ''})"
        for c in table.castes
    ]
    return "\n".join(lines) + f"\n(profile: {table.path})"


def _state(ctx: Ctx) -> ServerState:
    return ctx.request_context.lifespan_context


def _owner(ctx: Ctx) -> str:
    """Who a worker belongs to: each person (a token of the HTTP server's token file) sees, reads and stops only
    their own workers, and within a person each MCP session only those it started.

    Over streamable HTTP the session is its own id (random, known only to its client); the sessionless requests
    of the 2026 protocol are the person's. A stdio server has one client, its parent process."""
    headers = getattr(ctx.request_context.request, "headers", None)
    if headers is None:
        return STDIO_OWNER
    person = headers.get(http.PERSON_HEADER.decode(), "")  # set by the bearer guard, never by the client
    session_id = headers.get("mcp-session-id")
    return f"{person}: session {session_id}" if session_id else f"{person}: sessionless"


def _progress(worker: Worker) -> str:
    """A waiting call's progress note: Claude Code shows the message on the running tool's row."""
    note = f"{worker.spec.caste} on {worker.spec.model or 'the CLI default model'}: {worker.status}"
    note += f", turn {worker.turns}" if worker.turns else ""
    return note + (f", last tool {worker.last_tool}" if worker.last_tool else "")


async def _reply(ctx: Ctx, worker: Worker, wait: bool) -> WorkerResult:
    """The worker's record at once, or, with `wait`, when it ends (with progress notes meanwhile)."""
    if not wait:
        return worker.record()
    try:
        sent = 0  # MCP progress must grow with each note: the count of notes, the news in the message
        while not worker.done.is_set():
            await worker.news()
            if not worker.done.is_set():
                sent += 1
                await ctx.report_progress(sent, None, _progress(worker))
    except anyio.get_cancelled_exc_class():
        _state(ctx).colony.cancel(worker.worker_id, _owner(ctx))
        raise
    return worker.record()


def serve(store: ProfileStore, log_level: str = "INFO") -> None:
    """Run the server on stdio until the client goes away. stdout is the protocol: logs go to stderr."""
    _log_to_stderr(log_level)
    build_server(store, take_handoffs=True).run("stdio")


def serve_http(
    store: ProfileStore,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    token_file: Path | None = None,
    allow_remote: bool = False,
    extra_hosts: tuple[str, ...] = (),
    log_level: str = "INFO",
) -> None:
    """Serve streamable HTTP: every request needs the bearer token, Host and Origin must name this server."""
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    from ..bounded_http import BoundedH11Protocol

    http.check_host(host, allow_remote)
    tokens, token_path = http.load_tokens(token_file)
    _log_to_stderr(log_level)
    hosts = http.allowed_hosts(host, port, list(extra_hosts))
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts],
    )
    app = build_server(store).streamable_http_app(
        streamable_http_path=http.PATH, transport_security=security, host=host
    )
    http.announce(host, port, token_path)
    uvicorn.run(
        http.bearer_guard(app, tokens),
        host=host,
        port=port,
        log_level=log_level.lower(),
        http=BoundedH11Protocol,  # a header timeout and a connection limit: no token is needed to open a socket
    )


def _log_to_stderr(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
