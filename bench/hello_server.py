"""The baseline: a hello-world MCP server on the same `mcp` version, with one no-op tool."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("hello")


@server.tool()
def noop() -> str:
    """Do nothing."""
    return "ok"


if __name__ == "__main__":
    server.run("stdio")
