"""The fleet's pure parts (routing, replica listings, addresses, the wire) and its retry rules over scripted
transports. The real thing, replicas and all, is tests/e2e/test_fleet.py."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from faisca.errors import InvalidRequest, NoReplica, UpstreamError
from faisca.fleet import Fleet, UpstreamCall
from faisca.fleet.replicas import Endpoint, ModelListing, addresses_from, pick_listing
from faisca.fleet.routing import choose, conversation_affinity
from faisca.fleet.wire import ChunkDecoder, UpstreamProtocolError, request_body
from faisca.types import (
    ChatEnd, ChatRequest, ChoiceEnd, ImagePart, LogprobsDelta, Message, SamplingParams, TextDelta, TextPart, Tool,
    ToolCallArgumentsDelta, ToolCallStart, Usage,
)


@dataclass
class Load:
    key: str
    outstanding: int = 0


def test_without_affinity_the_least_outstanding_takes_it() -> None:
    replicas = [Load("a", 3), Load("b", 1), Load("c", 2)]
    assert choose(replicas).key == "b"
    assert choose([]) is None


def test_a_conversation_goes_back_to_its_replica_until_that_one_holds_more_than_its_share() -> None:
    replicas = [Load("a"), Load("b"), Load("c")]
    home = choose(replicas, "conversation-1")
    assert all(choose(replicas, "conversation-1") is home for _ in range(5))
    home.outstanding = 4  # the others idle: 5 with this request, bound ceil(1.25 * 5 / 3) = 3
    assert choose(replicas, "conversation-1") is not home


def test_unrelated_conversations_spread_and_no_replica_passes_the_bound() -> None:
    replicas = [Load("a"), Load("b"), Load("c")]
    for number in range(30):
        choose(replicas, f"conversation-{number}").outstanding += 1
    assert max(replica.outstanding for replica in replicas) <= 13  # ceil(1.25 * 30 / 3)


def test_the_affinity_of_a_conversation_is_its_opening() -> None:
    first = ChatRequest("m", (Message("system", "be brief"), Message("user", "hi")))
    second = ChatRequest("m", (*first.messages, Message("assistant", "hello"), Message("user", "how are you?")))
    other = ChatRequest("m", (Message("system", "be brief"), Message("user", "bye")))
    assert conversation_affinity(first) == conversation_affinity(second) != conversation_affinity(other)
    salted = ChatRequest("m", first.messages, cache_salt="tenant-2")
    assert conversation_affinity(salted) != conversation_affinity(first)


def test_the_listing_is_the_named_model_else_a_card_name_else_the_only_one() -> None:
    body = {"data": [{"id": "google/gemma-3-270m", "owned_by": "vllm", "max_model_len": 4096}, {"id": "other"}]}
    assert pick_listing(body, ["google-gemma-3-270m", "google/gemma-3-270m"], None) == ModelListing(
        "google/gemma-3-270m", "vllm", 4096)
    assert pick_listing(body, ["x"], "other").served_name == "other"
    assert pick_listing({"data": [{"id": "/models/x.gguf", "owned_by": "me"}]}, ["x"], None).served_name == "/models/x.gguf"
    with pytest.raises(ValueError, match="served_name"):
        pick_listing(body, ["x"], None)
    with pytest.raises(ValueError, match="not an OpenAI model list"):
        pick_listing({"detail": "Not Found"}, ["x"], None)


def test_a_name_with_several_addresses_is_a_replica_each_keeping_its_host() -> None:
    assert Endpoint("http://10.0.0.1:8000/v1").resolvable is False
    assert Endpoint("https://vllm.internal/v1").resolvable is False  # certificates name the host
    endpoint = Endpoint("http://vllm.ns.svc:8000/v1", ("10.0.0.1", "10.0.0.2"))
    assert endpoint.resolvable
    assert endpoint.replica_targets() == [
        ("http://vllm.ns.svc:8000/v1@10.0.0.1", "http://10.0.0.1:8000/v1", "vllm.ns.svc:8000"),
        ("http://vllm.ns.svc:8000/v1@10.0.0.2", "http://10.0.0.2:8000/v1", "vllm.ns.svc:8000"),
    ]
    assert Endpoint("http://localhost:8000/v1", ("127.0.0.1",)).replica_targets() == [
        ("http://localhost:8000/v1", "http://localhost:8000/v1", None)]


def test_ipv4_addresses_win_so_localhost_is_one_replica() -> None:
    infos = [(socket.AF_INET6, 1, 6, "", ("::1", 80, 0, 0)), (socket.AF_INET, 1, 6, "", ("127.0.0.1", 80)),
             (socket.AF_INET, 1, 6, "", ("127.0.0.1", 80))]
    assert addresses_from(infos) == ("127.0.0.1",)
    assert addresses_from(infos[:1]) == ("::1",)


def test_a_plain_request_sends_only_what_every_server_takes() -> None:
    call = UpstreamCall((Message("user", "hi"),), ChatRequest("m", (Message("user", "hi"),)))
    path, body = request_body(call, served_name="served", owned_by="me")
    assert path == "chat/completions"
    assert body == {"model": "served", "temperature": 1.0, "top_p": 1.0, "stream": True,
                    "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "hi"}]}


def test_vllm_extensions_grammars_images_and_native_tools_are_written_as_vllm_documents_them() -> None:
    messages = (Message("user", (TextPart("what is it?"), ImagePart("data:image/png;base64,AAAA"))),)
    request = ChatRequest("m", messages, SamplingParams(temperature=0, top_k=5, max_tokens=7, stop=("x",),
                                                        logit_bias=((3, -100.0),), top_logprobs=2),
                          num_choices=2, tools=(Tool("f"),), tool_choice="f", cache_salt="s")
    _, body = request_body(UpstreamCall(messages, request, native_tools=True, grammar="start: /a/"),
                           served_name="m", owned_by="vllm")
    assert body["structured_outputs"] == {"grammar": "start: /a/"}
    assert (body["top_k"], body["max_tokens"], body["stop"], body["n"], body["cache_salt"]) == (5, 7, ["x"], 2, "s")
    assert body["logit_bias"] == {"3": -100.0} and body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["messages"][0]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    _, plain = request_body(UpstreamCall(messages, request, grammar="start: /a/"), served_name="m", owned_by="me")
    assert "structured_outputs" not in plain and "tools" not in plain  # a server without Lark grammars gets none


def test_a_raw_prompt_is_a_completion() -> None:
    request = ChatRequest("m", (), SamplingParams(top_logprobs=1), raw_prompt="The sky is")
    path, body = request_body(UpstreamCall((), request), served_name="m", owned_by="faisca")
    assert path == "completions" and body["prompt"] == "The sky is" and body["logprobs"] == 1
    assert "messages" not in body


def test_chunks_become_events_and_the_end_carries_the_usage() -> None:
    decoder = ChunkDecoder()
    events = decoder.events({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    events += decoder.events({"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": {"content": [
        {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.5}]}]}}]})
    events += decoder.events({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "abc", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}]})
    events += decoder.events({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": "tool_calls"}]})
    events += decoder.events({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                                       "prompt_tokens_details": {"cached_tokens": 8}}})
    events += decoder.end(1)
    assert [type(event) for event in events] == [LogprobsDelta, TextDelta, ToolCallStart, ToolCallArgumentsDelta,
                                                 ToolCallArgumentsDelta, ChoiceEnd, ChatEnd]
    assert events[0].logprobs.chosen.token_bytes == b"Hi"
    assert events[5] == ChoiceEnd(0, "tool_calls")
    assert events[6] == ChatEnd(Usage(9, 3, 8))
    assert decoder.end(1) == []


def test_a_server_without_usage_has_its_tokens_counted_and_a_cut_stream_is_an_error() -> None:
    decoder = ChunkDecoder()
    for text in ("a", "b"):
        decoder.events({"choices": [{"index": 0, "delta": {"content": text}}]})
    decoder.events({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    assert decoder.end(2) == [ChoiceEnd(1, "length"), ChatEnd(Usage(0, 2))]  # a server that ignores `n`
    with pytest.raises(UpstreamProtocolError, match="before the answer ended"):
        ChunkDecoder().end(1)
    with pytest.raises(UpstreamProtocolError, match="boom"):
        ChunkDecoder().events({"error": {"message": "boom"}})


# --- Fleet over scripted transports: which failures are retried, and where


def _sse(*chunks: object) -> bytes:
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


ANSWER = _sse({"choices": [{"index": 0, "delta": {"content": "ok"}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
MODELS = {"data": [{"id": "m", "owned_by": "faisca"}]}
HEALTH = {"status": "ok", "models": {"m": "ready"}}
CALL = UpstreamCall((Message("user", "hi"),), ChatRequest("m", (Message("user", "hi"),)))


def _fleet(answers: dict[str, httpx.Response | Exception], seen: list[str]) -> Fleet:
    def handle(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        if request.url.path == "/health":
            return httpx.Response(200, json=HEALTH)
        seen.append(host)
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return Fleet("m", [f"http://{host}/v1" for host in answers], wanted_names=["m"],
                 transport=httpx.MockTransport(handle))


async def _answer(fleet: Fleet) -> list[object]:
    await fleet.start()
    try:
        stream = await fleet.open(CALL)
        return [event async for event in stream.events()]
    finally:
        await fleet.aclose()


def test_a_refused_connection_or_a_5xx_is_retried_on_another_replica_and_marks_the_first_down() -> None:
    seen: list[str] = []
    fleet = _fleet({"10.0.0.1": httpx.ConnectError("refused"), "10.0.0.2": httpx.Response(503, json={}),
                    "10.0.0.3": httpx.Response(200, content=ANSWER)}, seen)
    events = asyncio.run(_answer(fleet))
    assert TextDelta(0, "ok") in events and sorted(seen) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    states = {replica.key: replica.is_up for replica in fleet.replicas}
    assert states == {"http://10.0.0.1/v1": False, "http://10.0.0.2/v1": True, "http://10.0.0.3/v1": True}
    assert all(replica.outstanding == 0 for replica in fleet.replicas)


def test_an_upstream_4xx_is_the_clients_answer_and_is_not_retried() -> None:
    seen: list[str] = []
    refusal = httpx.Response(400, json={"error": {"message": "too long", "type": "BadRequestError", "code": 400}})
    fleet = _fleet({"10.0.0.1": refusal, "10.0.0.2": refusal}, seen)
    with pytest.raises(InvalidRequest, match="too long"):
        asyncio.run(_answer(fleet))
    assert len(seen) == 1


def test_when_every_replica_fails_the_answer_is_503_naming_them() -> None:
    fleet = _fleet({"10.0.0.1": httpx.Response(500, text="oops"), "10.0.0.2": httpx.ReadTimeout("slow")}, [])
    with pytest.raises(NoReplica, match="10.0.0.1.*oops|10.0.0.2"):
        asyncio.run(_answer(fleet))


def test_a_stream_broken_after_its_first_token_is_an_upstream_error_not_a_retry() -> None:
    seen: list[str] = []
    first_token = f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': 'par'}}]})}\n\n".encode()
    broken = httpx.Response(200, stream=httpx.ByteStream(first_token))  # no [DONE]: cut
    fleet = _fleet({"10.0.0.1": broken, "10.0.0.2": httpx.Response(200, content=ANSWER)}, seen)
    with pytest.raises(UpstreamError, match="stopped in the middle"):
        asyncio.run(_answer(fleet))
    assert len(seen) == 1 and Counter(seen).most_common(1)[0][1] == 1


def test_a_clients_own_grammar_is_refused_by_a_server_that_takes_none_and_reacts_is_dropped() -> None:
    request = ChatRequest("m", (Message("user", "hi"),), grammar="start: /yes|no/")
    with pytest.raises(InvalidRequest, match="structured_outputs"):
        request_body(UpstreamCall(request.messages, request, grammar="start: /yes|no/", grammar_required=True),
                     served_name="m", owned_by="sglang")
    _, body = request_body(UpstreamCall(request.messages, request, grammar="start: /a/"), served_name="m",
                           owned_by="sglang")
    assert "structured_outputs" not in body


def test_a_host_name_is_a_replica_per_address_and_follows_its_answers() -> None:
    answers = [["10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.3"]]
    hosts_seen: list[tuple[str, str]] = []

    async def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in answers[0]]

    def handle(request: httpx.Request) -> httpx.Response:
        hosts_seen.append((request.url.host, request.headers["host"]))
        return httpx.Response(200, json=HEALTH if request.url.path == "/health" else MODELS)

    async def scenario() -> list[list[str]]:
        fleet = Fleet("m", ["http://replicas.svc:8000/v1"], wanted_names=["m"], transport=httpx.MockTransport(handle),
                      resolver=resolve)
        await fleet.start()
        first = sorted(replica.base_url for replica in fleet.replicas if replica.is_up)
        answers.pop(0)
        await fleet._resolve()  # what the watch does every RESOLVE_INTERVAL_S
        second = sorted(replica.base_url for replica in fleet.replicas)
        await fleet.aclose()
        return [first, second]

    first, second = asyncio.run(scenario())
    assert first == ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
    assert second == ["http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"]
    assert {host for _, host in hosts_seen} == {"replicas.svc:8000"}  # the name stays the Host


def test_a_replica_that_lists_the_model_but_is_still_loading_it_is_not_up() -> None:
    states = iter(["loading", "ready"])

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(503, json={"status": "loading", "models": {"m": next(states)}})
        return httpx.Response(200, json=MODELS)

    async def scenario() -> list[bool]:
        fleet = Fleet("m", ["http://10.0.0.1/v1"], wanted_names=["m"], transport=httpx.MockTransport(handle))
        await fleet.start()
        first = fleet.replicas[0].is_up
        await fleet._probe(fleet.replicas[0])
        await fleet.aclose()
        return [first, fleet.replicas[0].is_up]

    assert asyncio.run(scenario()) == [False, True]
