"""The ways in: the MCP server, the command line, doctor and the demo. Thin, and sharing the same core calls."""
