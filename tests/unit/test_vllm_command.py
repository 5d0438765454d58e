"""The `vllm serve` command each card implies (`faisca show MODEL --vllm`)."""

from __future__ import annotations

import json

from faisca.catalog import Catalog
from faisca.catalog.card import Runtime
from faisca.catalog.vllm import vllm_serve_command


def flags(command: list[str]) -> dict[str, str | None]:
    parsed: dict[str, str | None] = {}
    for index, word in enumerate(command):
        if word.startswith("--"):
            following = command[index + 1] if index + 1 < len(command) else "--"
            parsed[word] = None if following.startswith("--") else following
    return parsed


def test_the_gemma_seed_card_runs_its_gptq_checkpoint_with_images_and_lora(catalog: Catalog) -> None:
    card = catalog.resolve("gemma3:27b")
    command = vllm_serve_command(card)
    assert command[:3] == ["vllm", "serve", "ISTA-DASLab/gemma-3-27b-it-GPTQ-4b-128g"]
    assert flags(command) == {"--served-model-name": card.id, "--max-model-len": "131072", "--host": "0.0.0.0",
                              "--port": "8000", "--limit-mm-per-prompt": '{"image":8}', "--enable-lora": None,
                              # ReAct's grammars (llguidance Lark) from faisca in front
                              "--structured-outputs-config": '{"backend":"guidance"}'}


def test_the_mistral_seed_card_gets_vllms_native_tool_calling_and_tensor_parallelism(catalog: Catalog) -> None:
    card = catalog.resolve("mistral-small:24b")
    command = vllm_serve_command(card, tensor_parallel_size=2, port=8001)
    assert command[2] == "casperhansen/mistral-small-24b-instruct-2501-awq"
    assert flags(command) == {"--served-model-name": card.id, "--max-model-len": "32768", "--host": "0.0.0.0",
                              "--port": "8001", "--tensor-parallel-size": "2", "--tool-call-parser": "mistral",
                              "--enable-auto-tool-choice": None}


def test_a_card_that_speculates_gets_vllms_speculative_config(catalog: Catalog) -> None:
    card = catalog.resolve("gemma3:27b")
    runtime = {**card.runtime.model_dump(), "speculation": "draft", "draft": "gemma3:270m"}
    drafting = card.model_copy(update={"runtime": Runtime.model_validate(runtime)})
    command = vllm_serve_command(drafting, draft=catalog.resolve("gemma3:270m"))
    assert json.loads(flags(command)["--speculative-config"] or "") == {
        "method": "draft_model", "model": "google/gemma-3-270m", "num_speculative_tokens": 4}
    looking_up = card.model_copy(update={"runtime": Runtime.model_validate({**runtime, "speculation": "ngram",
                                                                            "draft": None})})
    assert json.loads(flags(vllm_serve_command(looking_up))["--speculative-config"] or "") == {
        "method": "ngram", "num_speculative_tokens": 4}
    assert "--speculative-config" not in vllm_serve_command(card)
