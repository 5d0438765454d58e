"""OpenAI Chat Completions wire types, in the field order the product pages print (vLLM's shape).

Requests are validated against the model's published JSON Schema (`faisca.catalog.schema`) and converted
by `convert.to_chat_request`; these models describe what faisca sends back.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, SerializerFunctionWrapHandler, field_serializer, model_serializer


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class CompletionTokensDetails(BaseModel):
    # speculative decoding (`faisca serve --spec`), in the names OpenAI gives its predicted outputs: the completion's
    # tokens that were drafts the model agreed with, and the draft tokens it verified and did not keep
    accepted_prediction_tokens: int
    rejected_prediction_tokens: int


class UsageInfo(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int
    # null when nothing was cached, as the product pages print it
    prompt_tokens_details: PromptTokensDetails | None = None
    # only when speculative decoding drafted for the request (absent otherwise: the product pages' shape)
    completion_tokens_details: CompletionTokensDetails | None = None

    @model_serializer(mode="wrap")
    def _without_absent_details(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        fields: dict[str, Any] = handler(self)
        if self.completion_tokens_details is None:
            fields.pop("completion_tokens_details", None)
        return fields


class FunctionCall(BaseModel):
    name: str
    arguments: str  # a JSON string


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    reasoning_content: str | None = None
    content: str | None
    tool_calls: list[ToolCallOut] = []


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None  # the token's UTF-8 bytes: a token may hold part of a character


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob]  # the likeliest tokens at this position, likeliest first


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str
    # the stop string (or `stop_token_ids` token) that ended this choice; null when the model or the length limit did
    stop_reason: str | int | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageInfo
    prompt_logprobs: None = None


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str


class ToolCallDelta(BaseModel):
    """A call's first delta carries its id, type and name; the next ones only argument fragments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None  # the tokens whose text (or calls) this chunk carries, or ends
    finish_reason: str | None = None
    stop_reason: str | int | None = None

    @field_serializer("delta")
    def _only_set_fields(self, delta: Delta) -> dict[str, object]:
        return delta.model_dump(exclude_none=True)


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageInfo | None = None


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "faisca"
    root: str
    parent: str | None = None  # a LoRA adapter's base model, as vLLM lists it
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class CompletionLogprobs(BaseModel):
    """The legacy completion API's log-probabilities: one entry per generated token in each list."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]  # the likeliest tokens at each position, the chosen one always among them
    text_offset: list[int]  # where each token's text starts in the choice's text


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
