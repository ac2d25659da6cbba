"""The one family of errors aether-mcp raises on purpose.

Every message names what went wrong and what to do about it; the MCP layer
turns these into tool errors the calling model can read, the CLI prints them
as ``Error: ...`` and exits 1.
"""


class AetherError(Exception):
    """Base class: an error whose message is meant for the user.

    `fix`, when given apart, is what to do; the message says both, and a
    report with a column of its own for fixes (doctor) shows each once."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(sentences(problem, fix) if fix else problem)


class ProfileError(AetherError):
    """The profile file is missing, unreadable, malformed or invalid."""


class UnknownCasteError(AetherError):
    """A caste name that the profile does not define."""


class InvalidModelError(AetherError):
    """A model name that cannot be stored or passed on safely."""


def sentences(*parts: str | None) -> str:
    """Join sentences with one space, each ending in exactly one full stop.

    A part may quote another program's message, which brings its own full stop
    (or none): "Invalid API key." and "Check the token" give "Invalid API key. Check the token.",
    never "key.. Check"."""
    done = []
    for part in parts:
        text = (part or "").strip().rstrip(".").rstrip()
        if text:
            done.append(text if text.endswith(("!", "?")) else text + ".")
    return " ".join(done)
