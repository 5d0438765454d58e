"""Grammar text, in llguidance's Lark dialect (the engine compiles it for its model's vocabulary): a JSON Schema's
(`json_grammar`, for `response_format`, tools and vLLM's `structured_outputs.json`), and for the rest of vLLM's
`structured_outputs`, the Lark that a regular expression or a list of choices means, written as vLLM's `guidance`
backend writes it, so that a request means the same on either server. A client's own grammar is used as it is, once
`check_grammar` has read it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from faisca.errors import InvalidRequest

# Generation guards: what a small model left free to write will not end by itself.
MAX_GENERATED_STRING_CHARS = 512
MAX_GENERATED_INTEGER = 10**15


def guarded_schema(schema: object) -> object:
    """The schema as it constrains generation: objects that list `properties` are closed to them (unless they say
    otherwise), as OpenAI's strict mode does; strings and integers without bounds get generous ones. Arguments that
    use only declared properties, strings up to 512 characters and integers up to 10^15 are unaffected."""
    if isinstance(schema, list):
        return [guarded_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    guarded = {key: guarded_schema(value) for key, value in schema.items()}
    if "properties" in guarded:
        guarded.setdefault("additionalProperties", False)
    kinds = guarded.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds and "enum" not in guarded and "const" not in guarded:
        guarded.setdefault("maxLength", MAX_GENERATED_STRING_CHARS)
    if "integer" in kinds:
        guarded.setdefault("maximum", MAX_GENERATED_INTEGER)
        guarded.setdefault("minimum", -MAX_GENERATED_INTEGER)
    return guarded


def json_grammar(schema: dict[str, object] | None) -> str:
    """A grammar for one JSON value valid against `schema` (any JSON object when None), compact whitespace."""
    guarded = guarded_schema(schema) if schema else {"type": "object"}
    return f"start: %json {json.dumps(compact_json_schema(guarded))}"  # type: ignore[arg-type]


def compact_json_schema(schema: dict[str, object]) -> dict[str, object]:
    """The schema, with llguidance told to produce JSON without free whitespace (else a small model may
    fill the answer with newlines)."""
    return {**schema, "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}


def check_grammar(grammar: str, *, param: str) -> None:
    """InvalidRequest naming `param` if `grammar` is not one llguidance can compile (syntax, unknown rules, bad
    regular expressions, unsupported schemas). Checked without a vocabulary when the request is read, where the field
    at fault is known; the engine compiles it for its model later."""
    import llguidance

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        llguidance.LLMatcher.grammar_from_lark(grammar))
    if is_error:
        raise InvalidRequest(f"{param}: cannot constrain the output: {messages[0][:300]}", param=param)


def regex_grammar(pattern: str) -> str:
    """Output that matches `pattern` whole. llguidance escapes it for Lark's `/.../` (its `/`s, its newlines)."""
    import llguidance

    return f"start: /{llguidance.regex_to_lark(pattern)}/"


def choice_grammar(choices: Sequence[str]) -> str:
    """Output that is exactly one of `choices`: a JSON string literal is a Lark one, whatever the text holds."""
    return "start: " + " | ".join(json.dumps(choice) for choice in choices)
