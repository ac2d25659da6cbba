"""Routing at the wire: a Claude Code session run through `aether-mcp run`, its sub-agents on their castes' models."""
