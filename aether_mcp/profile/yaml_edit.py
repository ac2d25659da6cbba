"""Edit the `user_overrides` section of a profile's text, and nothing else.

A general round-trip dump re-flows what it did not need to touch (Aether's
own files use multi-line flow mappings that no dumper reproduces), so the
edits here are surgical: they locate the section with the YAML composer's
marks and splice text in or out. Every byte outside the edited lines stays as
it was, which is what makes `set` followed by `reset` give back the original
file. The result is re-parsed and compared before anyone writes it.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import ProfileError
from .parsing import parse_yaml

SECTION = "user_overrides"


def set_override(text: str, caste: str, model: str) -> str:
    """`text` with `user_overrides[caste] = model`, the section created at the end if missing."""
    root = _compose(text)
    entry = _item(root, SECTION)
    if entry is None:
        indent = " " * _nested_indent(root)
        edited = _append_lines(text, [f"{SECTION}:", f"{indent}{_scalar(caste)}: {_scalar(model)}"], len(text))
    else:
        key, value = entry
        if isinstance(value, yaml.MappingNode) and not value.flow_style:
            edited = _set_in_block(text, value, caste, model)
        else:
            overrides = dict(_current(value))
            overrides[caste] = model
            edited = _replace_flow(text, key, value, overrides)
    return _verified(text, edited, {**_overrides_of(text), caste: model})


def remove_override(text: str, caste: str) -> str:
    """`text` without `user_overrides[caste]`; an emptied block section is dropped."""
    root = _compose(text)
    entry = _item(root, SECTION)
    remaining = dict(_overrides_of(text))
    if entry is None or caste not in remaining:
        return text
    del remaining[caste]
    key, value = entry
    if isinstance(value, yaml.MappingNode) and not value.flow_style:
        if remaining:
            item_key, item_value = next((k, v) for k, v in value.value if k.value == caste)
            start, end = _line_start(text, item_key), _line_end(text, item_value)
        else:
            last_value = value.value[-1][1]
            start, end = _line_start(text, key), _line_end(text, last_value)
        if end == len(text) and not text.endswith("\n") and start > 0:
            start -= 1  # the file has no final newline: the line before the removed ones becomes the last
        edited = text[:start] + text[end:]
    else:
        # A flow section (`user_overrides: {}`) is the user's own choice of
        # style; it stays, even empty, with any comment beside it.
        edited = _replace_flow(text, key, value, remaining)
    return _verified(text, edited, remaining)


def _compose(text: str) -> yaml.Node | None:
    # The pure-Python composer: its marks count characters, which slicing needs.
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:  # parse_yaml has already reported it; this is a backstop
        raise ProfileError(f"the profile is not valid YAML: {exc}") from None


def _item(mapping: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(mapping, yaml.MappingNode):
        return None
    return next(((k, v) for k, v in mapping.value if k.value == key), None)


def _current(value: yaml.Node) -> list[tuple[str, str]]:
    if isinstance(value, yaml.MappingNode):
        return [(k.value, v.value) for k, v in value.value]
    return []


def _overrides_of(text: str) -> dict[str, Any]:
    data, _ = parse_yaml(text, "profile")
    return dict(data.get(SECTION) or {})


def _nested_indent(root: yaml.Node | None) -> int:
    """The file's own indentation, read off its first nested block mapping."""
    if isinstance(root, yaml.MappingNode):
        for _, value in root.value:
            if isinstance(value, yaml.MappingNode) and not value.flow_style and value.value:
                return int(value.value[0][0].start_mark.column) or 2
    return 2


def _set_in_block(text: str, section: yaml.MappingNode, caste: str, model: str) -> str:
    existing = next(((k, v) for k, v in section.value if k.value == caste), None)
    if existing is not None:
        value = existing[1]
        return text[: value.start_mark.index] + _scalar(model) + text[value.end_mark.index :]
    column = section.value[0][0].start_mark.column
    at = _line_end(text, section.value[-1][1])
    return _append_lines(text, [f"{' ' * column}{_scalar(caste)}: {_scalar(model)}"], at)


def _append_lines(text: str, lines: list[str], at: int) -> str:
    """`text` with `lines` inserted at `at`, the start of a line or the very end.

    A file without a final newline keeps that shape: the lines go after a
    newline, and the last of them gets none, so removing them again gives back
    every byte."""
    block = "\n".join(lines)
    if at < len(text) or text.endswith("\n") or not text:
        return text[:at] + block + "\n" + text[at:]
    return text + "\n" + block


def _replace_flow(text: str, key: yaml.Node, value: yaml.Node, overrides: dict[str, str]) -> str:
    rendered = "{" + ", ".join(f"{_scalar(k, flow=True)}: {_scalar(v, flow=True)}" for k, v in overrides.items()) + "}"
    start, end = value.start_mark.index, value.end_mark.index
    if start == end:  # `user_overrides:` with no value at all: write after the colon
        colon = text.index(":", key.end_mark.index)
        return text[: colon + 1] + " " + rendered + text[colon + 1 :]
    return text[:start] + rendered + text[end:]


def _line_start(text: str, node: yaml.Node) -> int:
    return text.rfind("\n", 0, node.start_mark.index) + 1


def _line_end(text: str, node: yaml.Node) -> int:
    """Just past the newline that ends the line where `node` ends (comments on it included)."""
    newline = text.find("\n", node.end_mark.index)
    return len(text) if newline < 0 else newline + 1


def _scalar(value: str, flow: bool = False) -> str:
    """`value` as a YAML scalar: plain when it reads back unchanged, else single-quoted."""
    probe = "{k: %s}" if flow else "k: %s"
    try:
        if yaml.safe_load(probe % value) == {"k": value}:
            return value
    except yaml.YAMLError:
        pass
    return "'" + value.replace("'", "''") + "'"


def _verified(before: str, after: str, overrides: dict[str, Any]) -> str:
    """Refuse an edit that changed anything but the overrides, or did not make them right."""
    if not _only_overrides_differ(before, after, overrides):
        raise ProfileError(
            "the profile's layout is one aether-mcp cannot edit safely; the file was not changed. "
            f"Edit the '{SECTION}' section by hand."
        )
    return after


def _only_overrides_differ(before: str, after: str, overrides: dict[str, Any]) -> bool:
    old, _ = parse_yaml(before, "profile")
    try:
        new, _ = parse_yaml(after, "profile")
    except ProfileError:  # the splice broke the YAML
        return False
    got = new.pop(SECTION, None) or {}
    old.pop(SECTION, None)
    return old == new and got == overrides
