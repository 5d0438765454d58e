"""Grammar text for vLLM's `structured_outputs`: the Lark (llguidance's dialect) that a regular expression or a list
of choices means, written as vLLM's `guidance` backend writes it, so that a request means the same on either server.
(A JSON Schema's grammar is `json_grammar`'s, as for `response_format`; a client's own grammar is used as it is.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence


def regex_grammar(pattern: str) -> str:
    """Output that matches `pattern` whole. llguidance escapes it for Lark's `/.../` (its `/`s, its newlines)."""
    import llguidance

    return f"start: /{llguidance.regex_to_lark(pattern)}/"


def choice_grammar(choices: Sequence[str]) -> str:
    """Output that is exactly one of `choices`: a JSON string literal is a Lark one, whatever the text holds."""
    return "start: " + " | ".join(json.dumps(choice) for choice in choices)
