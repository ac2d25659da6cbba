"""Reading a profile's text: safe YAML with limits, `${VAR}` expansion, and errors that name the key and line."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ..errors import ProfileError
from .schema import Profile

if TYPE_CHECKING:
    import yaml

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand `${VAR}` and `${VAR:-default}` as a shell would (empty counts as unset for `:-`)."""
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name, "")
        return found if found or default is None else default

    return _ENV_REF.sub(substitute, value)


@cache
def _strict_loader() -> type[Any]:
    """A safe loader that refuses duplicate keys instead of keeping the last one.

    Built on first use: YAML is needed to read a profile, not to start the server."""
    import yaml

    from ..safe_yaml import loader_class  # PyYAML, like the line above

    base = loader_class()

    class StrictLoader(base):  # type: ignore[misc,valid-type]
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            return mapping

    return StrictLoader


MAX_PROFILE_BYTES = 1024 * 1024


def parse_yaml(text: str, path: Path | str) -> tuple[dict[str, Any], yaml.Node | None]:
    """Parse the profile text into plain data and its node tree (for line numbers)."""
    import yaml  # with the first profile read, not with the server's start

    from ..safe_yaml import MAX_EXPANDED_NODES, expanded_size  # (PyYAML too)

    if len(text) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path} is {len(text):,} characters; a profile may be at most {MAX_PROFILE_BYTES:,}.")
    try:
        loader = _strict_loader()(text)
        try:
            node = loader.get_single_node()
            if node is not None and expanded_size(node, {}) > MAX_EXPANDED_NODES:
                raise ProfileError(
                    f"{path} expands to more than {MAX_EXPANDED_NODES:,} YAML nodes through its aliases "
                    "(an alias bomb?); write the values out instead."
                )
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path} is not valid YAML: {_one_line(exc)}", "Fix the file; it was not changed") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: the profile must be a mapping of sections, not {type(data).__name__}.")
    return data, node


def parse_profile(text: str, path: Path | str, environ: Mapping[str, str] | None = None) -> Profile:
    """Validate profile text; errors name the file, the key and its line."""
    return read_profile(text, path, environ)[0]


def read_profile(
    text: str, path: Path | str, environ: Mapping[str, str] | None = None
) -> tuple[Profile, dict[str, Any]]:
    """The validated profile, and the plain data it was read from (no `${VAR}` expanded: what trust is given to)."""
    data, node = parse_yaml(text, path)
    expanded = dict(data)
    if isinstance(data.get("proxy"), dict):
        expanded["proxy"] = _expanded(data["proxy"], environ)
    workers = data.get("workers")
    if isinstance(workers, dict):
        expanded["workers"] = dict(workers)
        if isinstance(workers.get("defaults"), dict):
            expanded["workers"]["defaults"] = _expanded(workers["defaults"], environ)
        if isinstance(workers.get("castes"), dict):
            castes = workers["castes"].items()
            expanded["workers"]["castes"] = {k: _expanded(v, environ) if isinstance(v, dict) else v for k, v in castes}
    try:
        return Profile.model_validate(expanded), data
    except ValidationError as exc:
        problems = [_describe(error, node) for error in exc.errors()[:5]]
        more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise ProfileError(f"{path} is not a valid profile: {'; '.join(problems)}{more}.") from None


def _expanded(section: dict[str, Any], environ: Mapping[str, str] | None) -> dict[str, Any]:
    """Expand `${VAR}` in a section's token, and nowhere else: a variable in a URL or a path would send or
    show its value (`endpoint: http://host/${AWS_SECRET_ACCESS_KEY}`)."""
    return {k: expand_env(v, environ) if k == "auth_token" and isinstance(v, str) else v for k, v in section.items()}


def _describe(error: ErrorDetails, root: yaml.Node | None) -> str:
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden":
        message = "unknown key (misspelt?)"
    else:
        message = error["msg"][0].lower() + error["msg"][1:]
    line = _line_of(root, loc)
    where = f" (line {line})" if line else ""
    return f"{'.'.join(loc)}{where}: {message}"


def _line_of(node: yaml.Node | None, loc: list[str]) -> int | None:
    """The 1-based line of the node at `loc`, following the path as far as it goes."""
    import yaml  # with the first profile read, not with the server's start

    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            break
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if str(k.value) == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        else:
            if not part.isdigit() or int(part) >= len(node.value):
                break
            node = node.value[int(part)]
            line = node.start_mark.line + 1
    return line


def _one_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"
