"""A card for a local GGUF nobody wrote one for (`faisca serve --gguf FILE [--mmproj FILE] [--name ID]`), derived
from the facts the file carries about itself: architecture, context length, chat template, size, license."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from faisca.catalog.card import ModelCard

# GGUF `general.file_type` → the quantization's usual name (llama.cpp's `llama_ftype`).
GGUF_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}


def quantization_name(metadata: Mapping[str, str]) -> str:
    file_type = metadata.get("general.file_type", "")
    return GGUF_FILE_TYPES.get(int(file_type), "") if file_type.isdigit() else ""


def card_from_gguf(
    metadata: Mapping[str, str], *, gguf_path: Path, projector_path: Path | None = None, model_id: str | None = None,
    shipped_templates: Collection[str] = (),
) -> ModelCard:
    """The card of the model in `gguf_path` (its metadata given), served under `model_id` (default: the file's name).

    Its chat template is the file's own; a file without one gets the template shipped for its architecture, if
    faisca ships one (Gemma 3's GGUFs carry none). Tools are called the prompt-based (ReAct) way, which works with
    any chat template; images are read when a projector is given.
    """
    architecture = metadata.get("general.architecture", "unknown")
    size_label = metadata.get("general.size_label", "")
    quantization = quantization_name(metadata)
    context_length = metadata.get(f"{architecture}.context_length", "")
    has_template = bool(metadata.get("tokenizer.chat_template"))
    # an embedding model's GGUF names its pooling (EmbeddingGemma, BERT); a chat model's does not
    is_embedding = bool(metadata.get(f"{architecture}.pooling_type"))
    runtime = {
        "engine": "llama_cpp",
        "weights": {"kind": "path", "path": gguf_path},
        "projector": {"kind": "path", "path": projector_path} if projector_path is not None else None,
        "chat_template": architecture if not has_template and architecture in shipped_templates else None,
    }
    return ModelCard.model_validate({
        "name": metadata.get("general.name") or gguf_path.stem,
        "version": " ".join(part for part in (size_label, quantization) if part) or "local",
        "category": "Embedding" if is_embedding else "LLM",
        "size": f"{size_label} parameters" if size_label else "unknown",
        "hf_id": model_id or gguf_path.stem,
        "license": metadata.get("general.license") or "see the model's source",
        "tool_calling": False,
        "long_term_support": False,
        "context_length": int(context_length) if context_length.isdigit() and int(context_length) > 0 else 4096,
        "lora": True,  # llama.cpp applies GGUF LoRA adapters to any model it runs
        "input": "text+image" if projector_path is not None else "text",
        "description": metadata.get("general.description", ""),
        "notes": f"Derived from the metadata of {gguf_path.name} (architecture {architecture}).",
        "tool_format": None if is_embedding else "react",
        "embedding": is_embedding,
        "runtime": runtime,
    })
