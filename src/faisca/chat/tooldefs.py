"""Tool definitions as clients send them (`{"type": "function", "function": {name, description, parameters}}`,
the same in the OpenAI and Ollama APIs), checked and turned into `Tool`s."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from faisca.errors import InvalidRequest
from faisca.types import Tool

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def checked_schema(schema: Any, *, param: str, what: str) -> str:
    """The schema as JSON text, if it is a valid JSON Schema (checked against its meta-schema)."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"{param}: {what} is not a valid JSON Schema: {exc.message}", param=param) from exc
    return json.dumps(schema, ensure_ascii=False)


def tools_from_definitions(definitions: Sequence[Mapping[str, Any]]) -> tuple[Tool, ...]:
    """Whether the model can call them is the request plan's check (`faisca.chat.plan`)."""
    tools = []
    for index, definition in enumerate(definitions):
        function = definition.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"tools.{index}.function.name is required.", param=f"tools.{index}.function.name")
        name = function["name"]
        if not TOOL_NAME.fullmatch(name):
            raise InvalidRequest(f"tools.{index}.function.name: `{name}` must match ^[a-zA-Z0-9_-]{{1,64}}$.",
                                 param=f"tools.{index}.function.name")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        tools.append(Tool(name, function.get("description") or "", checked_schema(
            parameters, param=f"tools.{index}.function.parameters", what=f"the parameters of tool `{name}`")))
    if len({tool.name for tool in tools}) != len(tools):
        raise InvalidRequest("tools: tool names must be unique.", param="tools")
    return tuple(tools)
