"""YAML from files aether-mcp did not write (profiles, agent files): safe tags only, and bounded.

Anchors and aliases are fine; an alias bomb ("billion laughs") is a small file
that stands for an enormous tree, and is refused before anything walks it.
Standard library and PyYAML only: the hook reads profiles and agent files too.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_EXPANDED_NODES = 100_000


class AliasBomb(yaml.constructor.ConstructorError):
    """A document that would expand past MAX_EXPANDED_NODES."""


class TooDeep(yaml.constructor.ConstructorError):
    """A document nested too deep to walk (libyaml parses it; walking it would exhaust Python's stack)."""


def loader_class() -> type[Any]:
    """PyYAML's safe loader, in C where it is built."""
    return yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader


def load(text: str, loader: type[Any] | None = None) -> Any:
    """The document in `text`; a yaml.YAMLError when it is not YAML, expands past MAX_EXPANDED_NODES, or is
    nested too deep to walk."""
    reader = (loader or loader_class())(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None
        check_size(node)
        return reader.construct_document(node)
    except RecursionError:
        raise TooDeep(None, None, "it is nested too deep to read; write it flatter", None) from None
    finally:
        reader.dispose()


def check_size(node: yaml.Node) -> None:
    if expanded_size(node, {}) > MAX_EXPANDED_NODES:
        raise AliasBomb(
            None,
            None,
            f"it expands to more than {MAX_EXPANDED_NODES:,} YAML nodes through its aliases (an alias bomb?); "
            "write the values out instead",
            node.start_mark,
        )


def expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes the tree would have with every alias written out (capped just past the limit)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_EXPANDED_NODES + 1  # a cycle counts as too big
    total = 1
    if isinstance(node.value, list):
        for item in node.value:
            for child in item if isinstance(item, tuple) else (item,):
                total += expanded_size(child, sizes)
                if total > MAX_EXPANDED_NODES:
                    return total
    sizes[id(node)] = total
    return total
