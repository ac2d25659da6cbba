"""The ways in: the MCP server and its HTTP guards, the command line, the sub-agent hook. Thin, on the same calls."""
