"""Tool definitions as clients send them (`{"type": "function", "function": {name, description, parameters}}`,
the same in the OpenAI and Ollama APIs), checked and turned into `Tool`s."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from faisca.errors import InvalidRequest
from faisca.limits import MAX_SCHEMA_CHARS, MAX_SCHEMA_DEPTH, MAX_TOOL_SCHEMAS_CHARS, MAX_TOOLS
from faisca.types import Tool

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def checked_schema(schema: Any, *, param: str, what: str) -> str:
    """The schema as JSON text, if it is a valid JSON Schema (checked against its meta-schema) within the limits:
    `MAX_SCHEMA_DEPTH` levels of objects and arrays, `MAX_SCHEMA_CHARS` characters as compact JSON."""
    if not isinstance(schema, Mapping):
        raise InvalidRequest(f"{param}: {what} must be a JSON Schema (an object).", param=param)
    if (depth := _depth(schema)) > MAX_SCHEMA_DEPTH:
        raise InvalidRequest(f"{param}: {what} nests {depth} levels of objects and arrays; at most "
                             f"{MAX_SCHEMA_DEPTH} are accepted.", param=param)
    text = json.dumps(schema, ensure_ascii=False)
    if len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False)) > MAX_SCHEMA_CHARS:
        raise InvalidRequest(f"{param}: {what} is over {MAX_SCHEMA_CHARS} characters as compact JSON.", param=param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"{param}: {what} is not a valid JSON Schema: {exc.message[:300]}", param=param) from exc
    return text


def _depth(value: Any) -> int:
    """Levels of objects and arrays in a JSON value (0 for a scalar); without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping | list):
            deepest = max(deepest, depth)
            if depth <= MAX_SCHEMA_DEPTH:  # past the limit, how much deeper does not matter
                stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, Mapping) else node))
    return deepest


def tools_from_definitions(definitions: Sequence[Any]) -> tuple[Tool, ...]:
    """Whether the model can call them is the request plan's check (`faisca.chat.plan`)."""
    if len(definitions) > MAX_TOOLS:
        raise InvalidRequest(f"tools: {len(definitions)} tools; at most {MAX_TOOLS} are accepted.", param="tools")
    tools = []
    for index, definition in enumerate(definitions):
        function = definition.get("function") if isinstance(definition, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"tools.{index}.function.name is required.", param=f"tools.{index}.function.name")
        name = function["name"]
        if not TOOL_NAME.fullmatch(name):
            raise InvalidRequest(f"tools.{index}.function.name: `{name[:80]}` must match ^[a-zA-Z0-9_-]{{1,64}}$.",
                                 param=f"tools.{index}.function.name")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise InvalidRequest(f"tools.{index}.function.description must be a string.",
                                 param=f"tools.{index}.function.description")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        tools.append(Tool(name, description, checked_schema(
            parameters, param=f"tools.{index}.function.parameters", what=f"the parameters of tool `{name}`")))
    if sum(len(tool.parameters_json) for tool in tools) > MAX_TOOL_SCHEMAS_CHARS:
        raise InvalidRequest(f"tools: the tools' parameters are over {MAX_TOOL_SCHEMAS_CHARS} characters together.",
                             param="tools")
    if len({tool.name for tool in tools}) != len(tools):
        raise InvalidRequest("tools: tool names must be unique.", param="tools")
    return tuple(tools)
