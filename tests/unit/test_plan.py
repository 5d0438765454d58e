from __future__ import annotations

import pytest

from faisca.catalog import Catalog
from faisca.chat.plan import plan_chat
from faisca.chat.template import ChatTemplate
from faisca.errors import UnsupportedCapability
from faisca.types import ChatRequest, Message, Tool, ToolCall
from tests.unit.scripted import CHATML

TEMPLATE = ChatTemplate(CHATML, bos_token="<s>", eos_token="</s>")


def test_tools_or_tool_turns_to_a_card_without_a_tool_format_are_refused(catalog: Catalog) -> None:
    card = catalog.resolve("smollm2").model_copy(update={"tool_format": None})
    with pytest.raises(UnsupportedCapability) as caught:
        plan_chat(card, TEMPLATE, ChatRequest(card.id, (Message("user", "hi"),), tools=(Tool("f"),)))
    assert caught.value.param == "tools"
    history = (Message("user", "hi"), Message("assistant", None, (ToolCall("a1b2c3d4e", "f", "{}"),)))
    with pytest.raises(UnsupportedCapability):
        plan_chat(card, TEMPLATE, ChatRequest(card.id, history))


def test_plain_chat_and_react_plans(catalog: Catalog) -> None:
    card = catalog.resolve("smollm2")
    plain = plan_chat(card, TEMPLATE, ChatRequest(card.id, (Message("user", "hi"),)))
    assert plain.grammar is None and plain.new_parser is None and plain.prompt == "user: hi\n"
    react = plan_chat(card, TEMPLATE, ChatRequest(card.id, (Message("user", "hi"),), tools=(Tool("f"),),
                                                  tool_choice="required"))
    assert react.grammar is not None and '"f"' in react.grammar and react.new_parser is not None


def test_images_become_the_engines_marker_where_the_client_put_them(catalog: Catalog) -> None:
    from faisca.types import ImagePart, TextPart

    card = catalog.resolve("smollm2")
    gemma = ChatTemplate.shipped("gemma3", bos_token="<bos>", eos_token="<eos>")
    content = (TextPart("compare"), ImagePart("data:a"), TextPart("with"), ImagePart("data:b"))
    plan = plan_chat(card, gemma, ChatRequest(card.id, (Message("user", content),)), image_marker="<IMG>")
    assert plan.prompt == "<bos><start_of_turn>user\ncompare<IMG>with<IMG><end_of_turn>\n<start_of_turn>model\n"
    # the ReAct rewrite (tools) keeps them in their user turn
    react = plan_chat(card, gemma, ChatRequest(card.id, (Message("user", content),), tools=(Tool("f"),)),
                      image_marker="<IMG>")
    assert react.prompt.count("<IMG>") == 2
    # a raw prompt (Ollama's `raw`) gets them in front
    raw = ChatRequest(card.id, (Message("user", (ImagePart("data:a"),)),), raw_prompt="describe")
    assert plan_chat(card, gemma, raw, image_marker="<IMG>").prompt == "<IMG>describe"


def test_a_requests_own_grammar_constrains_chat_and_raw_prompts_alike(catalog: Catalog) -> None:
    card = catalog.resolve("smollm2")
    chat = plan_chat(card, TEMPLATE, ChatRequest(card.id, (Message("user", "hi"),), grammar='start: "x"'))
    assert (chat.prompt, chat.grammar, chat.new_parser) == ("user: hi\n", 'start: "x"', None)
    raw = plan_chat(card, TEMPLATE, ChatRequest(card.id, (), raw_prompt="go", grammar='start: "y"'))
    assert (raw.prompt, raw.grammar) == ("go", 'start: "y"')
    # tool turns in the history, no tools: the output is still the client's, not a ReAct answer
    history = (Message("user", "hi"), Message("assistant", None, (ToolCall("a1b2c3d4e", "f", "{}"),)),
               Message("tool", "42", tool_call_id="a1b2c3d4e"))
    plan = plan_chat(card, TEMPLATE, ChatRequest(card.id, history, grammar='start: "z"'))
    assert (plan.grammar, plan.new_parser) == ('start: "z"', None)
