"""The one family of errors aether-mcp raises on purpose.

Every message names what went wrong and what to do about it; the MCP layer
turns these into tool errors the calling model can read, the CLI prints them
as ``Error: ...`` and exits 1.
"""


class AetherError(Exception):
    """Base class: an error whose message is meant for the user."""


class ProfileError(AetherError):
    """The profile file is missing, unreadable, malformed or invalid."""


class UnknownCasteError(AetherError):
    """A caste name that the profile does not define."""


class InvalidModelError(AetherError):
    """A model name that cannot be stored or passed on safely."""
