"""The request limits both API surfaces enforce, in one place (the README's "Limits" table lists them).

Each bounds work the server would otherwise do per request without a bound (parsing, validating, rendering,
grammar compilation, per-step sampling), or a number that must fit the machine types below (numpy, ctypes).
A request over a limit is refused with a 400 naming the field, before any of that work starts.
"""

from __future__ import annotations

# Body JSON: nesting depth (objects and arrays), counted from the body itself (depth 1).
MAX_JSON_DEPTH = 64

# Bodies at most this long are parsed and validated on the event loop (well under a millisecond); longer ones in a
# worker thread, so that a large body never stalls other requests' streams.
MAX_INLINE_BODY_BYTES = 64 * 1024

# Conversation shape.
MAX_MESSAGES = 2048  # messages per chat request (OpenAI's own bound)
MAX_CONTENT_PARTS = 256  # parts of one message's content (text and image parts; Ollama: its images)
MAX_CONTENT_PARTS_TOTAL = 1024  # the same, all messages together (schema validation costs ~0.1 ms a part)

# Stop conditions and token lists.
MAX_STOP_STRINGS_OPENAI = 4  # OpenAI's `stop`: up to 4 sequences, as OpenAI documents
MAX_STOP_STRINGS = 16  # Ollama's `options.stop`
MAX_STOP_CHARS = 256  # characters in one stop string
MAX_STOP_TOKEN_IDS = 256  # vLLM's `stop_token_ids`
MAX_LOGIT_BIAS_ENTRIES = 1024  # `logit_bias` entries (token id -> bias)

# Tools and JSON Schemas (tool `parameters`, `response_format.json_schema.schema`, Ollama's `format`).
MAX_TOOLS = 128  # tool definitions per request (OpenAI's own bound)
MAX_TOOL_CALLS = 128  # tool calls in one assistant message of the history
MAX_SCHEMA_DEPTH = 32  # nesting of objects and arrays inside one JSON Schema
MAX_SCHEMA_CHARS = 64 * 1024  # one JSON Schema, as compact JSON
MAX_TOOL_SCHEMAS_CHARS = 256 * 1024  # all of a request's tool `parameters` together, as compact JSON

# vLLM's `structured_outputs` (grammars are checked on the event loop for bodies up to 64 KiB: ~20 ms at this bound).
MAX_GRAMMAR_CHARS = 64 * 1024  # its `grammar` (Lark) or `regex`
MAX_CHOICES = 1024  # strings in its `choice`
MAX_CHOICE_CHARS = 1024  # characters in one of them

# LoRA: adapters one request mixes (llama-server's `lora`), and how far a scale may go either way.
MAX_LORAS_PER_REQUEST = 16
MAX_DRAFT_TOKENS = 64  # `speculative.n_max` of one request
MAX_LORA_SCALE = 16.0

# Integers, so that every one fits the types it reaches (C int for token counts and ids, 64 bits for seeds).
MAX_INT32 = 2**31 - 1
MIN_SEED = -(2**63)
MAX_SEED = 2**64 - 1

# Embeddings and tokens.
MAX_EMBEDDING_INPUTS = 2048  # inputs in one embedding request (OpenAI's own bound)
# Tokens in one embedding input (or less: the model's context). An embedding context computes every token's output,
# on a causal LM its logits too, so its compute buffer grows by tokens x vocabulary x 4 bytes (2 GiB here for Gemma 3
# 270M), and one input is the longest one embedding decode holds the engine thread.
MAX_EMBEDDING_INPUT_TOKENS = 2048
MAX_EMBEDDING_INPUTS_PER_BATCH = 64  # inputs (sequences) one embedding decode takes
MAX_DETOKENIZE_TOKENS = 1_000_000  # token ids in one /detokenize body
