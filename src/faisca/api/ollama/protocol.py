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

# GGUF `general.file_type` → the quantization name Ollama shows.
QUANTIZATION_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}
