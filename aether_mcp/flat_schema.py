"""Result records whose JSON schema is flat: no `$ref`, and `type: [X, "null"]` for an optional field.

An MCP client validates every structured result against the tool's output
schema, and jsonschema resolves each `$ref` and tries each `anyOf` arm again
on every call. The same constraints written flat validate in about half the
time, which matters for a look-up the parent session makes on most turns.
The records themselves do not change: only the schema they publish.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

NULL = {"type": "null"}


class FlatRecord(BaseModel):
    """A pydantic model that publishes its JSON schema with every reference written out."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # Made once per record: several tools share a result type, and a server builds them all as it starts.
        flat = _made.get(cls)
        if flat is None:
            schema = handler.resolve_ref_schema(handler(core_schema))
            flat = _made[cls] = _flatten(schema, lambda ref: handler.resolve_ref_schema({"$ref": ref}))
        return copy.deepcopy(flat)


_made: dict[type[FlatRecord], JsonSchemaValue] = {}


def _flatten(node: Any, resolve: Callable[[str], dict[str, Any]]) -> Any:
    """`node` with each `$ref` replaced by what it names, and `anyOf [X, null]` as `type: [X, null]`."""
    if isinstance(node, list):
        return [_flatten(item, resolve) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        node = {**resolve(node["$ref"]), **{k: v for k, v in node.items() if k != "$ref"}}
    node = {key: _flatten(value, resolve) for key, value in node.items()}
    arms = node.get("anyOf")
    if isinstance(arms, list) and len(arms) == 2 and NULL in arms:
        other = arms[0] if arms[1] == NULL else arms[1]
        # An enum or const arm would need null in its list too: left as anyOf.
        if isinstance(other.get("type"), str) and not {"enum", "const"} & other.keys():
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**other, **rest, "type": [other["type"], "null"]}
    return node
