"""Ollama wire facts: defaults, option names, and the metadata clients read (after Ollama's `api/types.go`)."""

from __future__ import annotations

# The Ollama API version faisca answers to (`GET /api/version`): clients such as Open WebUI check it.
OLLAMA_API_VERSION = "0.12.6"

# Ollama's sampling defaults when a request leaves an option out.
DEFAULT_OPTIONS: dict[str, float] = {"temperature": 0.8, "top_p": 0.9, "top_k": 40, "min_p": 0.0, "repeat_penalty": 1.1}

# Options faisca honours; others (num_thread, num_gpu, mirostat…) are accepted, logged and ignored.
KNOWN_OPTIONS = frozenset({
    "num_predict", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "repeat_penalty", "presence_penalty",
    "frequency_penalty", "num_ctx",
})
