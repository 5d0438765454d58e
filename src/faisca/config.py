"""Server settings: one frozen value built by the CLI and handed to the factories that need it."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

DEFAULT_MODEL_ID = "google-gemma-3-270m"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    model_ids: tuple[str, ...] = (DEFAULT_MODEL_ID,)  # loaded at start and pinned; the others load on demand
    num_threads: int | None = None  # None: the cores this process may use
    max_context_tokens: int = 8192  # per sequence, capped by the model's own context length
    kv_cache_tokens: int | None = None  # per model, shared by its sequences; None: max_context_tokens
    max_num_seqs: int = 8  # sequences generating at once, per model
    max_queue: int = 64  # requests waiting beyond those, per model; more get 503 + Retry-After
    max_batch_tokens: int = 512  # tokens per llama_decode step (prompt chunks + one per decoding sequence)
    # "ngram": prompt-lookup speculative decoding (--spec); "draft": a draft model's (--draft, --draft-gguf); None: off
    speculation: str | None = None
    draft_gguf: Path | None = None  # the draft model's weights, for the models named at start
    max_draft_tokens: int = 4  # draft tokens verified per step at most (--draft-max)
    max_speculating_seqs: int = 2  # speculate only while at most this many sequences run (--spec-max-seqs)
    api_keys: tuple[str, ...] = ()  # any of them opens every route but /health and GET /; none: no key needed
    enable_docs: bool = False  # /docs, /redoc, /openapi.json
    drain_timeout_s: float = 30.0  # on SIGTERM/SIGINT, how long requests in flight may take to finish
    max_body_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024  # one image, encoded (sent or fetched)
    max_image_pixels: int = 8192 * 8192  # one image, decoded; checked from its header before decoding
    image_fetch_timeout_s: float = 15.0  # one image URL, redirects included
    max_images_per_request: int = 8  # more are refused (400) before any is fetched
    # networks image URLs may reach besides public addresses (a LAN image host); none by default
    image_allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    weights_paths: tuple[tuple[str, Path], ...] = ()
    max_loras: int = 8  # LoRA adapters resident per model; the least recently used idle one goes first
    lora_dirs: tuple[Path, ...] = ()  # where POST /v1/load_lora_adapter may load adapters from; none: it is off
    upstreams: tuple[tuple[str, str], ...] = ()  # (model id, OpenAI base URL) from --upstream; repeated: replicas
    upstream_api_key: str | None = None  # sent to every upstream as `Authorization: Bearer` ($FAISCA_UPSTREAM_API_KEY)  # (model id, GGUF path) from --weights
    cards_dirs: tuple[Path, ...] = field(default_factory=tuple)
    keep_alive_s: float = 300.0  # how long a model loaded on demand stays once idle (math.inf: forever)
    max_loaded_models: int | None = None  # models in memory at once; None: as many as the byte budget holds
    memory_budget_bytes: int | None = None  # None: what the machine has at start
