"""The `vllm serve` command a card implies, for running its checkpoint on GPUs with vLLM.

Written from vLLM's documented command line (`vllm serve MODEL` and its engine arguments); nothing here runs vLLM.
The checkpoint's quantization (GPTQ, AWQ) is read by vLLM from its `config.json`, so no `--quantization` is given.
Every flag comes from a card field, never from the model's name.
"""

from __future__ import annotations

import json

from faisca.catalog.card import ModelCard
from faisca.config import Settings


def vllm_serve_command(card: ModelCard, *, tensor_parallel_size: int = 1, host: str = "0.0.0.0", port: int = 8000,
                       max_images: int = Settings.max_images_per_request, draft: ModelCard | None = None) -> list[str]:
    """`vllm serve` for the card's Hugging Face checkpoint, served under the card's id with the card's context;
    `draft`: the card its `[runtime] draft` names."""
    command = ["vllm", "serve", card.hf_id, "--served-model-name", card.id, "--max-model-len", str(card.context_length),
               "--host", host, "--port", str(port)]
    if tensor_parallel_size > 1:
        command += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if card.tool_format == "mistral":  # native calls: vLLM parses them into tool_calls itself
        command += ["--tool-call-parser", "mistral", "--enable-auto-tool-choice"]
    if card.tool_format == "react":  # faisca in front sends ReAct's grammar in llguidance's Lark: vLLM's guidance backend
        command += ["--structured-outputs-config", json.dumps({"backend": "guidance"}, separators=(",", ":"))]
    if card.input == "text+image":
        command += ["--limit-mm-per-prompt", json.dumps({"image": max_images}, separators=(",", ":"))]
    if card.lora:
        command += ["--enable-lora"]
    # the card's speculative decoding, as vLLM's (its own n-gram sizes), with as many tokens a step as faisca drafts
    speculative: dict[str, object] | None = None
    if card.runtime.speculation == "ngram":
        speculative = {"method": "ngram"}
    elif card.runtime.speculation == "draft" and draft is not None:
        speculative = {"method": "draft_model", "model": draft.hf_id}
    if speculative is not None:
        speculative["num_speculative_tokens"] = Settings.max_draft_tokens
        command += ["--speculative-config", json.dumps(speculative, separators=(",", ":"))]
    return command
