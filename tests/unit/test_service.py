"""The service's pure parts and its event stream, over a scripted engine (the real one is covered end to end)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from faisca.catalog import Catalog
from faisca.errors import ContextLengthExceeded, EngineError, ModelUnavailable, UnsupportedCapability
from faisca.registry import ModelRegistry, chat_template_for
from faisca.service import ChatService, fold_chat, max_new_tokens_for
from faisca.types import ChatEnd, ChatRequest, ChoiceEnd, ImagePart, Message, SamplingParams, TextDelta, TextPart
from tests.unit.scripted import CHATML, ScriptedEngine




def make_service(engine: ScriptedEngine, catalog: Catalog, *, load: bool = True) -> ChatService:
    registry = ModelRegistry(catalog, ["smollm2"], lambda card: engine)
    if load:
        asyncio.run(registry.load_all())
    return ChatService(registry)


def request(**sampling: object) -> ChatRequest:
    num_choices = int(sampling.pop("n", 1))  # type: ignore[call-overload]
    return ChatRequest("huggingfacetb-smollm2-135m-instruct", (Message("user", "hi there"),),
                       SamplingParams(**sampling), num_choices)  # type: ignore[arg-type]


async def collect(service: ChatService, chat_request: ChatRequest) -> list[object]:
    return [event async for event in await service.start_chat(chat_request)]


def test_max_new_tokens_fills_the_room_or_refuses() -> None:
    assert max_new_tokens_for(10, None, 64) == 54
    assert max_new_tokens_for(10, 20, 64) == 20
    with pytest.raises(ContextLengthExceeded) as caught:
        max_new_tokens_for(10, 60, 64)
    assert caught.value.param == "max_tokens"
    with pytest.raises(ContextLengthExceeded) as caught:
        max_new_tokens_for(64, None, 64)
    assert caught.value.param == "messages"


def test_events_end_on_the_models_end_of_turn(catalog: Catalog) -> None:
    engine = ScriptedEngine(["Hel", "lo", "!"], template=CHATML)
    events = asyncio.run(collect(make_service(engine, catalog), request(max_tokens=10)))
    assert events == [TextDelta(0, "Hel"), TextDelta(0, "lo"), TextDelta(0, "!"), ChoiceEnd(0, "stop"), events[-1]]
    assert isinstance(events[-1], ChatEnd) and events[-1].usage.completion_tokens == 4
    assert engine.calls[0][2] == 10


def test_length_when_the_bound_is_reached(catalog: Catalog) -> None:
    engine = ScriptedEngine(["a", "b", "c"], ends_turn=False, template=CHATML)
    result = asyncio.run(fold_chat(asyncio.run(make_service(engine, catalog).start_chat(request(max_tokens=2)))))
    assert [(c.text, c.finish_reason) for c in result.choices] == [("ab", "length")]


def test_stop_string_cuts_the_text_and_closes_the_engine_stream(catalog: Catalog) -> None:
    engine = ScriptedEngine(["one", " two", " thr", "ee", " four"], template=CHATML)
    events = asyncio.run(collect(make_service(engine, catalog), request(stop=("three",))))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two "
    assert ChoiceEnd(0, "stop", "three") in events
    assert engine.num_closed_streams == 1


def test_stop_strings_count_only_from_min_tokens_on(catalog: Catalog) -> None:
    engine = ScriptedEngine(["ab", "X", "cd", "X", "ef"], template=CHATML)
    events = asyncio.run(collect(make_service(engine, catalog), request(stop=("X",), min_tokens=3)))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "abXcd"
    assert ChoiceEnd(0, "stop", "X") in events


def test_include_stop_str_in_output_keeps_the_stop_string(catalog: Catalog) -> None:
    engine = ScriptedEngine(["one", " two", " thr", "ee", " four"], template=CHATML)
    events = asyncio.run(collect(make_service(engine, catalog), request(stop=("three",), include_stop_str_in_output=True)))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"
    assert ChoiceEnd(0, "stop", "three") in events


def test_a_stop_token_id_is_the_stop_reason_the_models_own_end_is_not(catalog: Catalog) -> None:
    engine = ScriptedEngine(["a", "b"], template=CHATML)  # ends with token 99
    assert ChoiceEnd(0, "stop", 99) in asyncio.run(collect(make_service(engine, catalog), request(stop_token_ids=(99,))))
    assert ChoiceEnd(0, "stop", None) in asyncio.run(collect(make_service(engine, catalog), request(stop_token_ids=(7,))))


def test_fitting_the_context_leaves_out_the_oldest_turns_and_bounds_the_answer(catalog: Catalog) -> None:
    engine = ScriptedEngine(["x"], template=CHATML)  # 64 tokens of context; a word is a token
    turn = "a question of many words that take up room in the context " * 2
    history = tuple(Message(role, turn) for role in ("user", "assistant") * 3) + (Message("user", "last one"),)
    fitted = ChatRequest("huggingfacetb-smollm2-135m-instruct", history, SamplingParams(max_tokens=500), fit_context=True)
    asyncio.run(collect(make_service(engine, catalog), fitted))
    prompt, _, max_new_tokens = engine.calls[0]
    assert prompt and len(prompt) < 64 and max_new_tokens == 64 - len(prompt)
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(collect(make_service(engine, catalog), dataclasses.replace(fitted, fit_context=False)))
    smaller = dataclasses.replace(fitted, messages=history[-1:], max_context_tokens=8, sampling=SamplingParams())
    asyncio.run(collect(make_service(engine, catalog), smaller))
    assert len(engine.calls[-1][0]) + engine.calls[-1][2] == 8


def test_a_failing_choice_ends_them_all_with_its_error(catalog: Catalog) -> None:
    engine = ScriptedEngine(["a", "b", "c"], fail_after=1, template=CHATML)
    with pytest.raises(EngineError, match="the engine broke"):
        asyncio.run(collect(make_service(engine, catalog), request(n=3, max_tokens=10)))
    assert engine.num_closed_streams == len(engine.calls) >= 1  # every choice that started was closed


def test_n_choices_get_distinct_seeds_in_order(catalog: Catalog) -> None:
    engine = ScriptedEngine(["x"], template=CHATML)
    result = asyncio.run(fold_chat(asyncio.run(make_service(engine, catalog).start_chat(request(n=3, seed=5)))))
    assert [choice.index for choice in result.choices] == [0, 1, 2]
    assert [call[1].seed for call in engine.calls] == [5, 6, 7]
    assert result.usage.prompt_tokens == len(engine.calls[0][0])


def test_images_to_a_text_only_model_are_refused(catalog: Catalog) -> None:
    service = make_service(ScriptedEngine([], template=CHATML), catalog)
    chat = ChatRequest("huggingfacetb-smollm2-135m-instruct",
                       (Message("user", (TextPart("what?"), ImagePart("data:image/png;base64,AAAA"))),))
    with pytest.raises(UnsupportedCapability) as caught:
        asyncio.run(service.start_chat(chat))
    assert caught.value.param == "messages.0.content.1.image_url"


def test_a_request_to_a_model_not_loaded_yet_waits_for_its_load(catalog: Catalog) -> None:
    service = make_service(ScriptedEngine(["hello"], template=CHATML), catalog, load=False)
    events = asyncio.run(collect(service, request()))
    assert TextDelta(0, "hello") in events
    assert service.registry.states()["huggingfacetb-smollm2-135m-instruct"] == "ready"


def test_a_model_without_any_chat_template_is_refused_not_guessed(catalog: Catalog) -> None:
    with pytest.raises(ModelUnavailable, match="no chat template"):
        chat_template_for(catalog.resolve("smollm2"), ScriptedEngine([], template=None))  # type: ignore[arg-type]
    shipped = chat_template_for(catalog.resolve("gemma3:270m"), ScriptedEngine([], template=CHATML))  # type: ignore[arg-type]
    assert shipped.render((Message("user", "hi"),)).startswith("<s><start_of_turn>user\nhi<end_of_turn>")


def test_a_failed_load_is_reported_per_model(catalog: Catalog) -> None:
    def broken(card: object) -> ScriptedEngine:
        raise RuntimeError("disk on fire")

    registry = ModelRegistry(catalog, ["smollm2"], broken)
    asyncio.run(registry.load_all())
    assert registry.states()["huggingfacetb-smollm2-135m-instruct"].startswith("failed: ")
    with pytest.raises(ModelUnavailable, match="disk on fire"):
        registry.get(catalog.resolve("smollm2"))
