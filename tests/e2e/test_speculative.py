"""Speculative decoding by prompt lookup (`--spec ngram`) changes the speed, never the text: a server with it and one
without, both fresh (README "Reproducibility"), answer the same requests with the same tokens and log-probabilities,
at temperature 0 and seeded sampling, with a JSON grammar, in a batch where some sequences speculate and others
do not, and with images. The prompts repeat text, so drafts are accepted (checked on /metrics and in the usage), and
rejected too."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from faisca.catalog import Catalog
from faisca.catalog.catalog import SHIPPED_CARDS_DIR
from tests.e2e.server import FAISCA_SERVE, GEMMA, RunningServer, serving_all, vision_args
from tests.pictures import png

NO_END = {"1": -100, "106": -100}  # Gemma 3's <eos>, <end_of_turn>: every answer runs to max_tokens

TEXTS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs on.",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n",
    "Roses are red, violets are blue, sugar is sweet, and so are you.",
    "Monday: gym. Tuesday: work. Wednesday: gym. Thursday: work. Friday: rest.",
    "SELECT name, price FROM items WHERE price > 10 ORDER BY price DESC;",
    "<ul><li>apples</li><li>pears</li><li>plums</li></ul>",
]
ASKS = [
    "Repeat this text exactly, then fix any mistake in it:\n{}",
    "Here is a text:\n{}\nWrite it again, word for word.",
    "Translate into French, keeping the layout:\n{}",
    "Continue this in the same style:\n{}",
    "What does this say? {}",
]
PROMPTS = [ask.format(text) for ask in ASKS for text in TEXTS]  # 30


def body(prompt: str, **extra: object) -> dict:
    return {"model": GEMMA, "max_tokens": 40, "temperature": 0, "logit_bias": NO_END, "logprobs": True,
            "top_logprobs": 2, "messages": [{"role": "user", "content": prompt}], **extra}


def answer(completion: ChatCompletion) -> tuple[str | None, list[tuple[str, float, list[float]]]]:
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    return completion.choices[0].message.content, [
        (token.token, token.logprob, [top.logprob for top in token.top_logprobs]) for token in logprobs.content]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer]]:
    args = ["--model", "gemma3:270m", "--ctx-size", "2048"]
    with serving_all(tmp_path_factory.mktemp("speculative"), args, [*args, "--spec", "ngram", "--draft-max", "6"]) as (
            plain, speculating):
        yield plain, speculating


def clients(servers: tuple[RunningServer, RunningServer]) -> list[openai.OpenAI]:
    return [openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=300)
            for server in servers]


def speculation_counts(server: RunningServer, *, model: str = GEMMA) -> tuple[float, float]:
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=30).text

    def value(name: str) -> float:
        found = re.search(rf'^{name}_total{{model="{model}"}} (\S+)$', metrics, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    return value("faisca_spec_decode_draft_tokens"), value("faisca_spec_decode_accepted_tokens")


def test_30_prompts_give_the_same_tokens_and_logprobs_with_and_without_speculation(servers) -> None:
    plain, speculating = clients(servers)
    for prompt in PROMPTS:
        expected = answer(plain.chat.completions.create(**body(prompt)))
        got = answer(speculating.chat.completions.create(**body(prompt)))
        assert got == expected, prompt
    drafted, accepted = speculation_counts(servers[1])
    assert 0 < accepted < drafted  # drafts were kept, and some were not
    assert speculation_counts(servers[0]) == (0, 0)


def test_seeded_sampling_gives_the_same_text(servers) -> None:
    plain, speculating = clients(servers)
    for seed, prompt in enumerate(PROMPTS[:4]):
        request = body(prompt, temperature=0.8, top_p=0.95, seed=seed)
        assert answer(speculating.chat.completions.create(**request)) == answer(plain.chat.completions.create(**request))


def test_a_json_grammar_still_parses_and_matches(servers) -> None:
    schema = {"type": "object", "properties": {"fruits": {"type": "array", "items": {"type": "string"}}},
              "required": ["fruits"]}
    request = {"model": GEMMA, "max_tokens": 80, "temperature": 0,
               "messages": [{"role": "user", "content": f"List the fruits in JSON: {TEXTS[5]} {TEXTS[5]}"}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "fruits", "schema": schema}}}
    plain, speculating = clients(servers)
    expected = plain.chat.completions.create(**request).choices[0]
    got = speculating.chat.completions.create(**request).choices[0]
    assert got.message.content == expected.message.content
    assert got.finish_reason == expected.finish_reason
    if expected.finish_reason == "stop":
        assert isinstance(json.loads(got.message.content or ""), dict)


def test_a_tool_call_is_the_same(servers) -> None:
    """Gemma 3 has no native calls: faisca's constrained ReAct, a grammar over the whole answer."""
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    request = {"model": GEMMA, "max_tokens": 80, "temperature": 0, "tools": [tool], "tool_choice": "required",
               "messages": [{"role": "user", "content": "The weather in Lisbon? Lisbon, Lisbon, the weather in Lisbon."}]}
    plain, speculating = clients(servers)
    expected = plain.chat.completions.create(**request).choices[0]
    got = speculating.chat.completions.create(**request).choices[0]
    assert expected.message.tool_calls and got.finish_reason == expected.finish_reason == "tool_calls"
    assert [(call.function.name, call.function.arguments) for call in got.message.tool_calls or []] == [
        (call.function.name, call.function.arguments) for call in expected.message.tool_calls]


def test_stop_strings_and_max_tokens_end_where_they_would(servers) -> None:
    plain, speculating = clients(servers)
    request = body(PROMPTS[1], stop=["lazy"], max_tokens=30)
    expected = plain.chat.completions.create(**request)
    got = speculating.chat.completions.create(**request)
    assert answer(got) == answer(expected)
    assert got.usage.completion_tokens == expected.usage.completion_tokens  # type: ignore[union-attr]
    assert got.choices[0].finish_reason == expected.choices[0].finish_reason


def test_a_mixed_batch_equals_each_alone(tmp_path: Path) -> None:
    """Two at once on a speculating server (one speculating, one asking for none), then n=2: each equals the answer a
    plain server gives alone. Fresh servers: on a warm one, a request that takes over a slot holding a cached prefix
    frees cells that the other sequence may take before its earlier ones (README "Reproducibility")."""
    args = ["--model", "gemma3:270m", "--ctx-size", "2048"]
    with serving_all(tmp_path, args, [*args, "--spec", "ngram", "--draft-max", "6"]) as pair:
        plain, speculating = clients(pair)
        requests = [body(PROMPTS[6]), body(PROMPTS[13], extra_body={"speculative.n_max": 0}), body(PROMPTS[20])]
        expected = [answer(plain.chat.completions.create(**request)) for request in requests]

        async def together() -> list[ChatCompletion]:
            client = openai.AsyncOpenAI(base_url=f"{pair[1].base_url}/v1", api_key="unused", max_retries=0,
                                        timeout=300)
            return await asyncio.gather(*(client.chat.completions.create(**request) for request in requests[:2]))

        assert [answer(result) for result in asyncio.run(together())] == expected[:2]
        two = speculating.chat.completions.create(**body(PROMPTS[20], n=2))
        for choice in two.choices:
            logprobs = choice.logprobs
            assert logprobs is not None and logprobs.content is not None
            assert (choice.message.content, [(t.token, t.logprob, [top.logprob for top in t.top_logprobs])
                                             for t in logprobs.content]) == expected[2]
        assert speculation_counts(pair[1])[1] > 0


def test_the_usage_tells_the_drafts_verified_and_accepted(servers) -> None:
    """OpenAI's `completion_tokens_details` (its predicted outputs' names), only where drafts were verified: accepted
    ones are completion tokens, and with the rejected ones they are what /metrics counted for the request."""
    plain, speculating = clients(servers)
    drafted_before, _ = speculation_counts(servers[1])
    usage = speculating.chat.completions.create(**body(PROMPTS[1])).usage
    assert usage is not None and usage.completion_tokens_details is not None
    accepted = usage.completion_tokens_details.accepted_prediction_tokens or 0
    rejected = usage.completion_tokens_details.rejected_prediction_tokens or 0
    assert 0 < accepted <= usage.completion_tokens
    assert accepted + rejected == speculation_counts(servers[1])[0] - drafted_before
    stream = speculating.chat.completions.create(**body(PROMPTS[1]), stream=True,
                                                 stream_options={"include_usage": True})
    streamed = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert [u.completion_tokens_details for u in streamed] == [usage.completion_tokens_details]
    none_asked = httpx.post(f"{servers[1].base_url}/v1/chat/completions", timeout=300,
                            json=body(PROMPTS[1], **{"speculative.n_max": 0})).json()["usage"]
    not_speculating = httpx.post(f"{servers[0].base_url}/v1/chat/completions", timeout=300,
                                 json=body(PROMPTS[1])).json()["usage"]
    assert "completion_tokens_details" not in none_asked and "completion_tokens_details" not in not_speculating


def test_speculative_n_max_is_validated(servers) -> None:
    response = httpx.post(f"{servers[1].base_url}/v1/chat/completions", timeout=30,
                          json=body(PROMPTS[0], **{"speculative.n_max": -1}))
    assert response.status_code == 400
    assert "speculative.n_max" in response.text


@pytest.fixture(scope="module")
def draft_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Gemma 3 270M drafting for itself: the only pair of one vocabulary here; what matters is the verification."""
    with serving_all(tmp_path_factory.mktemp("draft"), ["--model", "gemma3:270m", "--ctx-size", "2048",
                                                        "--draft", "gemma3:270m", "--draft-max", "5"]) as (running,):
        yield running


def test_a_draft_model_gives_the_same_tokens_and_logprobs(servers, draft_server) -> None:
    plain = clients(servers)[0]
    drafting = openai.OpenAI(base_url=f"{draft_server.base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    for prompt in PROMPTS[::5] + ["Tell me about the moon."]:
        assert answer(drafting.chat.completions.create(**body(prompt))) == answer(
            plain.chat.completions.create(**body(prompt))), prompt
    request = body(PROMPTS[2], temperature=0.8, seed=7)
    assert answer(drafting.chat.completions.create(**request)) == answer(plain.chat.completions.create(**request))
    drafted, accepted = speculation_counts(draft_server)
    assert 0 < accepted <= drafted


def test_a_draft_of_another_vocabulary_is_one_clear_error_at_start(tmp_path: Path) -> None:
    server = RunningServer("--model", "smollm2", "--draft", "gemma3:270m", log_path=tmp_path / "faisca.log")
    try:
        assert server.process.wait(timeout=120) != 0
        assert "does not share the vocabulary" in server.log()
    finally:
        server.stop()


def test_requests_with_images_speculate_and_answer_the_same(tmp_path: Path) -> None:
    """The draft model reads no images: it drafts from the text around them; prompt lookup copies text only. Both
    answer as a server without speculation does."""
    args = [*vision_args(tmp_path, "looking"), "--ctx-size", "2048"]
    with serving_all(tmp_path, args, [*args, "--draft", "gemma3:270m", "--draft-max", "5"],
                     [*args, "--spec", "ngram"]) as running:
        picture = f"data:image/png;base64,{base64.b64encode(png((20, 120, 220))).decode()}"
        content = [{"type": "text", "text": PROMPTS[7]}, {"type": "image_url", "image_url": {"url": picture}},
                   {"type": "text", "text": TEXTS[1]}]
        request = {**body(""), "model": "looking", "messages": [{"role": "user", "content": content}]}
        plain, *speculating = [openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0,
                                             timeout=300) for server in running]
        expected = answer(plain.chat.completions.create(**request))
        for client, server in zip(speculating, running[1:], strict=True):
            completion = client.chat.completions.create(**request)
            assert answer(completion) == expected
            assert completion.usage is not None and completion.usage.completion_tokens_details is not None
            drafted, accepted = speculation_counts(server, model="looking")
            assert 0 < accepted <= drafted


def drafting_card(directory: Path, model: str, name: str) -> Path:
    """A cards folder holding a copy of `model`'s card, as `name`, that drafts with Gemma 3 270M."""
    text = (SHIPPED_CARDS_DIR / f"{Catalog.from_dirs().resolve(model).id}.toml").read_text()
    text = re.sub(r"^hf_id = .*$", f'hf_id = "faisca-tests/{name}"', text, flags=re.MULTILINE)
    text = re.sub(r"^aliases = .*$", "aliases = []", text, flags=re.MULTILINE)
    text = text.replace("[runtime]\n", '[runtime]\nspeculation = "draft"\ndraft = "gemma3:270m"\n')
    cards = directory / "cards"
    cards.mkdir(exist_ok=True)
    (cards / f"{name}.toml").write_text(text)
    return cards


def test_a_card_that_names_a_draft_drafts_once_loaded_on_demand(tmp_path: Path) -> None:
    cards = drafting_card(tmp_path, "gemma3:270m", "gemma-drafting")
    server = RunningServer("--ctx-size", "2048", log_path=tmp_path / "faisca.log",
                           program=(*FAISCA_SERVE[:-1], "--cards-dir", str(cards), "serve"))
    try:
        server.wait_ready()
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=300)
        usage = client.chat.completions.create(**{**body(PROMPTS[1]), "model": "faisca-tests-gemma-drafting"}).usage
        assert usage is not None and usage.completion_tokens_details is not None
        assert (usage.completion_tokens_details.accepted_prediction_tokens or 0) > 0
        assert speculation_counts(server, model="faisca-tests-gemma-drafting")[1] > 0
    finally:
        server.stop()


def test_a_card_drafting_with_another_vocabulary_is_one_clear_error_at_start(tmp_path: Path) -> None:
    cards = drafting_card(tmp_path, "smollm2", "smol-drafting")
    server = RunningServer(log_path=tmp_path / "faisca.log", program=(*FAISCA_SERVE[:-1], "--cards-dir", str(cards),
                                                                      "serve"))
    try:
        assert server.process.wait(timeout=120) == 2
        assert "does not share the vocabulary" in server.log()
    finally:
        server.stop()
