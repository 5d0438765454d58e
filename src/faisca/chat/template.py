"""Render chat messages into a prompt with a model's Jinja chat template, the way Hugging Face does.

Same environment as `transformers` (sandboxed, `trim_blocks`, `lstrip_blocks`, loop controls), the same globals
(`raise_exception`, `strftime_now`) and the same `tojson` filter, so a template copied from a model's
`tokenizer_config.json` renders here exactly as it does there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.sandbox

from faisca.errors import InvalidRequest
from faisca.types import ImagePart, Message, TextPart

_SHIPPED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def shipped_template_names() -> frozenset[str]:
    """The templates shipped with faisca (`faisca/chat/templates/<name>.jinja`)."""
    directory = resources.files("faisca.chat").joinpath("templates")
    return frozenset(entry.name.removesuffix(".jinja") for entry in directory.iterdir() if entry.name.endswith(".jinja"))


class _TemplateRaised(Exception):
    """What the template's `raise_exception(...)` raises; `render` turns it into `InvalidRequest`."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Hugging Face's filter: unlike Jinja's own `tojson`, no HTML escaping and non-ASCII kept as is.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _arguments(arguments_json: str) -> Any:
    """Tool-call arguments as templates expect them: the parsed object, or the raw string if it is not one."""
    try:
        parsed = json.loads(arguments_json)
    except ValueError:
        return arguments_json
    return parsed if isinstance(parsed, dict) else arguments_json


def message_to_dict(message: Message) -> dict[str, Any]:
    """A message as the plain dict chat templates are written against (the OpenAI / Hugging Face shape)."""
    content: str | list[dict[str, str]]
    if message.content is None:
        content = ""
    elif isinstance(message.content, str):
        content = message.content
    else:
        content = []
        for part in message.content:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append({"type": "image"})
            else:  # pragma: no cover - the types admit no other part
                raise TypeError(f"unknown content part {part!r}")
    result: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        result["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call.arguments_json)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        result["tool_call_id"] = message.tool_call_id
    return result


class ChatTemplate:
    """A compiled chat template. Raises `ValueError` at construction if the source does not parse."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        self._bos_token = bos_token
        self._eos_token = eos_token
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"chat template does not parse: {e} (line {e.lineno})") from e

    @property
    def bos_token(self) -> str:
        return self._bos_token

    @property
    def eos_token(self) -> str:
        return self._eos_token

    @classmethod
    def shipped(cls, name: str, *, bos_token: str, eos_token: str) -> ChatTemplate:
        """The template shipped with faisca as `faisca/chat/templates/<name>.jinja`."""
        resource = resources.files("faisca.chat").joinpath("templates").joinpath(f"{name}.jinja")
        if not _SHIPPED_NAME.fullmatch(name) or not resource.is_file():
            raise ValueError(f"no chat template named {name!r} is shipped with faisca")
        return cls(resource.read_text(encoding="utf-8"), bos_token=bos_token, eos_token=eos_token)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages`; `InvalidRequest(param="messages")` if the template rejects them."""
        try:
            return self._template.render(
                messages=[message_to_dict(message) for message in messages],
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
            )
        except _TemplateRaised as e:
            raise InvalidRequest(str(e), param="messages") from e
        except (jinja2.TemplateError, TypeError) as e:
            # TypeError: e.g. a template doing `'...' + message['content']` on a message sent as content parts.
            raise InvalidRequest(
                f"the model's chat template cannot render these messages: {e}", param="messages"
            ) from e
