"""The `vllm serve` command each card implies (`faisca show MODEL --vllm`)."""

from __future__ import annotations

from faisca.catalog import Catalog
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
