"""Editing a JSON file by inserting text, so every byte that was there stays, and removing just that text again.

A user's `.mcp.json` and Claude Code settings are theirs: their order, their
indentation, their other servers and hooks. Re-serialising the whole file
would rewrite all of it. Here a fragment (`"aether": {...}`) goes in as the
first member of an object or the first element of an array, using the
whitespace that already follows the opening bracket; taking it out again gives
back the file as it was, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_decoder = json.JSONDecoder()


def fragment(key: str | None, value: Any) -> str:
    """`"key": value` (an object member), or `value` alone (an array element), on one line."""
    body = json.dumps(value)
    return body if key is None else f"{json.dumps(key)}: {body}"


def value_start(text: str, path: Sequence[str]) -> int | None:
    """Where the value at `path` (object keys from the top) begins in `text`; None when it is not there."""
    pos = _skip(text, 0)
    for key in path:
        if pos >= len(text) or text[pos] != "{":
            return None
        pos = _skip(text, pos + 1)
        while pos < len(text) and text[pos] != "}":
            name, pos = _decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos] != ":":
                raise ValueError(f"expected ':' at character {pos}")
            pos = _skip(text, pos + 1)
            if name == key:
                break
            _, pos = _decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos] == ",":
                pos = _skip(text, pos + 1)
        else:
            return None
    return pos


def insert_first(text: str, container: int, piece: str) -> str:
    """`piece` as the first member or element of the object or array whose bracket is at `container`."""
    after = container + 1
    first = _skip(text, after)
    if text[first] in "}]":  # empty: `{}` becomes `{piece}`
        return text[:after] + piece + text[after:]
    spacing = text[after:first]  # the file's own: `{\n    "a"` becomes `{\n    piece,\n    "a"`
    return text[:after] + spacing + piece + "," + text[after:]


def remove_inserted(text: str, piece: str, container: int | None = None) -> str | None:
    """`text` without a `piece` that `insert_first` put there (into the bracket at `container`, when known);
    None when it is not there in that shape."""
    at = text.find(piece)
    while at >= 0:
        edited = _remove_at(text, piece, at, container)
        if edited is not None:
            return edited
        at = text.find(piece, at + 1)
    return None


def _remove_at(text: str, piece: str, at: int, container: int | None) -> str | None:
    start = at
    while start > 0 and text[start - 1] in " \t\r\n":
        start -= 1
    if start == 0 or text[start - 1] not in "{[" or container not in (None, start - 1):
        return None
    end = at + len(piece)
    if text[end : end + 1] == ",":
        return text[:start] + text[end + 1 :]  # the spacing that was copied goes with it
    if start == at and text[_skip(text, end)] in "}]":
        return text[:at] + text[end:]
    return None


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
