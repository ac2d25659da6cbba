"""Text for a terminal that came from files, workers or proxies: its control characters shown, never obeyed.

A caste, a model, a status or a tool name read from `.aether/`, an agent file or
a proxy's answer may hold escape sequences: `ESC [2K` erases the line a user is
reading, `\\r` writes over it, OSC 52 sets the clipboard and OSC 0 the window's
title, and bidirectional overrides reorder what is shown. Each such character
is written out as its escape (`\\x1b`), so the person sees that it was there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# C0 but tab and newline, DEL, C1, and Unicode's bidirectional controls and line separators.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """`text` with every control character written out as its escape."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


class ShownStream:
    """A text stream whose writes are `shown`; everything else (its buffer, fileno, isatty) is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(shown(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def shown_output(stream_name: str = "stdout") -> Iterator[None]:
    """While inside, what is printed to `sys.<stream_name>` is `shown`."""
    import sys

    original = getattr(sys, stream_name)
    setattr(sys, stream_name, ShownStream(original))
    try:
        yield
    finally:
        setattr(sys, stream_name, original)
