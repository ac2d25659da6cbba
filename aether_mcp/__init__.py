"""aether-mcp: run each Aether caste on its own model, and prove it."""

__version__ = "0.1.0"
