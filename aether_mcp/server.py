"""The MCP adapter: tools wired to the core, nothing else.

Built by a factory, never at import time, so tests and the CLI hand it the
profile store they want.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from . import api
from .errors import AetherError
from .store import ProfileStore, ResetResult, SetResult

log = logging.getLogger("aether_mcp")

P = ParamSpec("P")
R = TypeVar("R")

CasteName = Annotated[
    str,
    Field(description="A caste from the profile, e.g. builder, scout, watcher. Case and '-'/'_' do not matter."),
]
ModelName = Annotated[
    str, Field(description="The model name as the proxy knows it, e.g. glm-5 or kimi-k2.5; or opus/sonnet/haiku.")
]

INSTRUCTIONS = """\
aether-mcp decides which model each caste of Aether worker runs on.
Use get_caste_model to see the routing table, set_caste_model to move a caste
to another model (stored as a user override in the profile), and
reset_caste_model to return it to the profile's own model."""


def _tool(server: MCPServer[Any], annotations: ToolAnnotations) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a tool whose description is its docstring, and whose own errors reach the model as tool errors."""

    def register(func: Callable[P, R]) -> Callable[P, R]:
        @wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except AetherError as exc:
                raise ToolError(str(exc)) from exc

        server.tool(description=inspect.cleandoc(func.__doc__ or ""), annotations=annotations)(wrapper)
        return func

    return register


def build_server(store: ProfileStore) -> MCPServer[Any]:
    """An MCP server for one profile store."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        where = store.location
        log.info("aether-mcp serving profile %s (%s)", where.path, where.rule)
        yield

    server: MCPServer[Any] = MCPServer("aether", instructions=INSTRUCTIONS, lifespan=lifespan)

    @_tool(
        server,
        ToolAnnotations(
            title="Which model a caste uses", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    def get_caste_model(
        caste: Annotated[str | None, Field(description="The caste to look up; omit it to list every caste.")] = None,
        task: Annotated[
            str | None,
            Field(description="Optional task description: used only for castes with no model of their own."),
        ] = None,
    ) -> api.CasteModels:
        """Show which model a caste's workers run on, and why (override, profile, slot, task or default).

        Omit `caste` to get the whole routing table. Use this before spawning
        workers, or when the user asks which model a caste uses."""
        return api.get_caste_models(store, caste, task)

    @_tool(
        server,
        ToolAnnotations(
            title="Put a caste on a model",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
    def set_caste_model(
        caste: CasteName,
        model: ModelName,
        create: Annotated[
            bool, Field(description="Add the caste when the profile does not define it yet. Default: false.")
        ] = False,
    ) -> SetResult:
        """Put a caste's workers on another model, e.g. "put scouts on kimi-k2.5".

        Stored in the profile's user_overrides; the caste's own model stays in
        the file and reset_caste_model brings it back. Read `warnings`."""
        return store.set_override(caste, model, create=create)

    @_tool(
        server,
        ToolAnnotations(
            title="Undo a caste's override",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
    def reset_caste_model(caste: CasteName) -> ResetResult:
        """Remove a caste's user override so it runs on the profile's own model again."""
        return store.reset_override(caste)

    return server


def serve(
    store: ProfileStore, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765, log_level: str = "INFO"
) -> None:
    """Run the server until the client goes away. stdout is the protocol: logs go to stderr."""
    logging.basicConfig(level=log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = build_server(store)
    if transport == "streamable-http":
        server.run("streamable-http", host=host, port=port)
    else:
        server.run("stdio")
