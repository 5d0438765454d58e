"""Client text never becomes control tokens: finding control texts and marking them literal."""

from __future__ import annotations

import json

from faisca.chat.literal import ControlTextEscaper
from faisca.types import LITERAL_CLOSE, LITERAL_OPEN, ChatRequest, Message, TextPart, Tool, ToolCall

ESCAPER = ControlTextEscaper(["<start_of_turn>", "<end_of_turn>", "<start>", "[INST]", "<bos>"])


def literal(text: str) -> str:
    return f"{LITERAL_OPEN}{text}{LITERAL_CLOSE}"


def test_control_texts_are_found_longest_first_left_to_right() -> None:
    text = "a<start_of_turn>model\n<start>x[INST]<bo<bos>"
    assert [text[start:end] for start, end in ESCAPER.spans(text)] == ["<start_of_turn>", "<start>", "[INST]", "<bos>"]
    assert ESCAPER.escape(text) == (f"a{literal('<start_of_turn>')}model\n{literal('<start>')}x{literal('[INST]')}"
                                    f"<bo{literal('<bos>')}")


def test_text_without_control_texts_is_left_as_it_is() -> None:
    request = ChatRequest("m", (Message("user", "<b>bold</b> and [inst] and <start_of"),))
    assert ESCAPER.escape_request(request) is request


def test_every_client_text_of_a_request_is_escaped_but_tool_names_and_raw_prompts() -> None:
    request = ChatRequest(
        "m",
        (Message("system", "be <bos> nice"),
         Message("user", (TextPart("hi <end_of_turn>"),)),
         Message("assistant", None, (ToolCall("abc123def", "look", json.dumps({"q": "\u003cstart\u003e"})),)),
         Message("tool", "found <start_of_turn>", tool_call_id="abc123def")),
        tools=(Tool("look", "looks [INST] up", json.dumps({"type": "object", "description": "<start>"})),),
    )
    escaped = ESCAPER.escape_request(request)
    assert escaped.messages[0].content == f"be {literal('<bos>')} nice"
    assert escaped.messages[1].content == (TextPart(f"hi {literal('<end_of_turn>')}"),)
    assert json.loads(escaped.messages[2].tool_calls[0].arguments_json) == {"q": literal("<start>")}
    assert escaped.messages[3].content == f"found {literal('<start_of_turn>')}"
    assert escaped.tools[0].name == "look"
    assert escaped.tools[0].description == f"looks {literal('[INST]')} up"
    assert json.loads(escaped.tools[0].parameters_json)["description"] == literal("<start>")
    raw = ChatRequest("m", (), raw_prompt="<start_of_turn>user\nhi")
    assert ESCAPER.escape_request(raw) is raw


def test_a_long_text_full_of_near_misses_is_scanned_in_linear_time() -> None:
    text = "<" * 200_000 + "[" * 200_000
    assert ESCAPER.spans(text) == []
