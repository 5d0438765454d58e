"""`faisca serve | models | show`: argument parsing and the wiring of settings → catalog → registry → app."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

from faisca import __version__
from faisca.catalog import Catalog, ModelCard
from faisca.cli.attachments import with_attachments
from faisca.client import Client, FaiscaClientError
from faisca.catalog.card import check_upstream_url
from faisca.catalog.catalog import CardError
from faisca.config import DEFAULT_MODEL_ID, Settings
from faisca.engine.weights import missing_weights_message
from faisca.errors import FaiscaError


def _network(value: str) -> IPv4Network | IPv6Network:
    try:
        return ip_network(value, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an address or a network such as 192.168.1.0/24, got {value!r}") from None


def _count(minimum: int):  # noqa: ANN202 - an argparse type
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, at least 0, got {value!r}")
    return seconds


def _keep_alive(value: str) -> float:
    from faisca.lifecycle import parse_keep_alive_flag

    try:
        return parse_keep_alive_flag(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
               "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}


def _byte_size(value: str) -> int:
    """`4GiB`, `500M` (binary), `2GB` (decimal), or bytes."""
    number, unit = value.strip(), ""
    while number and not (number[-1].isdigit() or number[-1] == "."):
        number, unit = number[:-1], number[-1] + unit
    try:
        size = float(number) * _BYTE_UNITS[unit.strip().lower()]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"expected a size such as 4GiB, 512M or 2000000000, got {value!r}") from None
    if not 1 <= size < float("inf"):
        raise argparse.ArgumentTypeError(f"must be at least one byte, got {value!r}")
    return int(size)


def _weights_arg(value: str) -> tuple[str, Path]:
    model_id, sep, path = value.partition("=")
    if not sep or not model_id or not path:
        raise argparse.ArgumentTypeError("expected MODEL=PATH, e.g. my-model=/models/my-model.gguf")
    return model_id, Path(path).expanduser()


def _upstream_arg(value: str) -> tuple[str, str]:
    model_id, sep, url = value.partition("=")
    if not sep or not model_id or not url:
        raise argparse.ArgumentTypeError("expected MODEL=URL, e.g. gemma3:27b=http://gpu-1:8000/v1")
    try:
        return model_id, check_upstream_url(url)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faisca",
        description="Self-hosted LLM serving: OpenAI-compatible API over llama.cpp, on CPU by default.",
    )
    parser.add_argument("--version", action="version", version=f"faisca {__version__}")
    parser.add_argument("--cards-dir", type=Path, action="append", default=[], metavar="DIR",
                        help="extra directory of model cards (*.toml); a card there replaces a shipped one with the same id")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve models over HTTP (OpenAI API under /v1)",
                                description="Serve models over HTTP: the OpenAI API under /v1, the Ollama API under /api, "
                                            "/health, /metrics. SIGTERM or SIGINT drains (see --drain-timeout), "
                                            "then exits 0.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=_count(1), default=8080, help="port to listen on (default: %(default)s)")
    serve.add_argument("--model", dest="models", action="append", metavar="ID",
                       help="a model to load at start and keep loaded (pinned): id, Hugging Face id or alias; "
                            "repeatable. Every model whose weights are here is served either way: the others load on "
                            "their first request and leave when idle (--keep-alive)")
    serve.add_argument("--models-dir", type=Path, action="append", default=[], metavar="DIR",
                       help="serve every GGUF model in DIR (repeatable), its card derived from the file as --gguf "
                            "does, loaded on its first request")
    serve.add_argument("--keep-alive", type=_keep_alive, default=300.0, metavar="DURATION",
                       help="how long a model loaded on demand stays once idle, unless a request's keep_alive says "
                            "otherwise: seconds or a duration (5m, 1h); 0 unloads at once, negative keeps forever "
                            "(default: 5m)")
    serve.add_argument("--max-loaded-models", type=_count(1), default=None, metavar="N",
                       help="models in memory at once; loading one more evicts the least recently used idle one "
                            "(default: as many as fit --memory-budget)")
    serve.add_argument("--memory-budget", type=_byte_size, default=None, metavar="SIZE",
                       help="memory the loaded models may take together (weights, KV cache, projector), e.g. 8GiB; a "
                            "model that does not fit evicts idle ones, or waits (503) while they are in use "
                            "(default: 90%% of the memory available at start, a container's limit included)")
    serve.add_argument("--weights", action="append", type=_weights_arg, default=[], metavar="ID=PATH",
                       help="run the card ID from a local GGUF file; repeatable")
    serve.add_argument("--lora", action="append", type=_weights_arg, default=[], metavar="NAME=PATH",
                       help="load the GGUF LoRA adapter PATH for the served model, as the model NAME (repeatable; "
                            "with several models served, list adapters in their cards instead). A request names it as "
                            "its `model`, or mixes adapters with llama-server's `lora` field")
    serve.add_argument("--max-loras", type=_count(1), default=8, metavar="N",
                       help="LoRA adapters held in memory per model; the least recently used idle one is freed "
                            "first, and reloaded when asked for (default: %(default)s)")
    serve.add_argument("--lora-dir", type=Path, action="append", default=[], metavar="DIR",
                       help="let POST /v1/load_lora_adapter load adapters from DIR (repeatable; default: none, "
                            "loading while serving is off)")
    serve.add_argument("--upstream", action="append", type=_upstream_arg, default=[], metavar="ID=URL",
                       help="serve the card ID through an OpenAI-compatible server at URL (its base, e.g. "
                            "http://gpu-1:8000/v1: vLLM, SGLang, llama-server, another faisca); repeat with the same ID "
                            "for replicas; a host name resolving to several addresses is a replica each. faisca keeps "
                            "its API, validation, tools (ReAct), images, keys and metrics in front; "
                            "$FAISCA_UPSTREAM_API_KEY is sent to the upstreams as their key")
    serve.add_argument("--gguf", type=Path, default=None, metavar="FILE",
                       help="serve any local GGUF model: its card is derived from the file's metadata "
                            "(architecture, context length, chat template), or is the catalog card --name names")
    serve.add_argument("--mmproj", type=Path, default=None, metavar="FILE",
                       help="the vision projector (mmproj GGUF) for --gguf: the model then reads images")
    serve.add_argument("--name", default=None, metavar="ID",
                       help="the id --gguf is served under (default: the file's name); a catalog card's id runs "
                            "that card from the file")
    serve.add_argument("--threads", type=_count(1), default=None, metavar="N",
                       help="llama.cpp threads (default: the cores this process may use)")
    serve.add_argument("--ctx-size", type=_count(1), default=8192, metavar="TOKENS",
                       help="context of one request (prompt + completion), capped by the model's own "
                            "(default: %(default)s)")
    serve.add_argument("--max-num-seqs", type=_count(1), default=8, metavar="N",
                       help="sequences generating at once per model, batched together (default: %(default)s)")
    serve.add_argument("--max-queue", type=_count(0), default=64, metavar="M",
                       help="requests waiting beyond those per model; more are answered 503 with Retry-After "
                            "(default: %(default)s)")
    serve.add_argument("--max-batch-tokens", type=_count(1), default=512, metavar="TOKENS",
                       help="tokens per decoding step: long prompts are fed in chunks of this (default: %(default)s)")
    serve.add_argument("--spec", choices=["ngram", "draft"], default=None,
                       help="speculative decoding: `ngram` proposes draft tokens by prompt lookup (copies of what "
                            "the prompt and the text so far hold), `draft` by a draft model (--draft), verified in "
                            "one step; the text stays the same, only the speed changes (default: as each card's "
                            "[runtime] speculation says, off when it says nothing)")
    serve.add_argument("--draft", default=None, metavar="MODEL",
                       help="speculative decoding with this catalog model as the draft (e.g. gemma3:270m), for the "
                            "models named at start; it must share their vocabulary")
    serve.add_argument("--draft-gguf", type=Path, default=None, metavar="FILE",
                       help="as --draft, the draft model's GGUF file")
    serve.add_argument("--draft-max", type=_count(1), default=4, metavar="N",
                       help="with --spec: draft tokens verified per step at most (default: %(default)s)")
    serve.add_argument("--spec-max-seqs", type=_count(1), default=2, metavar="N",
                       help="with --spec: speculate only while at most N sequences run; a larger batch keeps "
                            "the cores busy already (default: %(default)s)")
    serve.add_argument("--kv-cache-tokens", type=_count(1), default=None, metavar="TOKENS",
                       help="KV cache per model, shared by its sequences (default: --ctx-size)")
    serve.add_argument("--api-key", default=None, metavar="KEY",
                       help="require `Authorization: Bearer KEY` on every route but /health and GET / (/v1, /api, "
                            "/metrics, the docs); a key on the command line is visible to other users in `ps`: prefer "
                            "$FAISCA_API_KEY or --api-key-file (default: $FAISCA_API_KEY if set, else no key)")
    serve.add_argument("--api-key-file", type=Path, default=None, metavar="FILE",
                       help="read the accepted keys from FILE, one per line (blank lines and # comments skipped); any "
                            "of them opens the server; with --api-key, that key is accepted too")
    serve.add_argument("--enable-docs", action="store_true",
                       help="serve the interactive API docs (/docs, /redoc, /openapi.json); with a key they need it "
                            "too (default: off)")
    serve.add_argument("--drain-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                       help="on SIGTERM or SIGINT, let the requests in flight (streams included) finish for up to "
                            "this long while new ones get 503, then exit 0 (default: %(default)g)")
    serve.add_argument("--max-image-pixels", type=_count(1), default=8192 * 8192, metavar="N",
                       help="largest image decoded, in pixels; larger ones are refused from their header "
                            "(default: %(default)s, 8192x8192)")
    serve.add_argument("--max-image-bytes", type=_count(1), default=20 * 1024 * 1024, metavar="BYTES",
                       help="largest image sent or fetched, encoded (default: %(default)s)")
    serve.add_argument("--max-images-per-request", type=_count(1), default=8, metavar="N",
                       help="images one request may carry; more are refused with a 400 before any is fetched "
                            "(default: %(default)s)")
    serve.add_argument("--allow-image-network", type=_network, action="append", default=[], metavar="CIDR",
                       help="let image URLs reach this network too, e.g. 192.168.1.0/24 for an image host on your LAN "
                            "(repeatable; default: public addresses only: loopback, private, link-local and other "
                            "non-public addresses are refused)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    run = commands.add_parser("run", help="chat with a model on a running faisca server",
                              description="Chat with a model on a running server, streaming to the terminal. With a "
                                          "prompt: one answer; without: an interactive chat (/bye or Ctrl-D to end).")
    run.add_argument("model", metavar="MODEL", help="id, Hugging Face id or alias")
    run.add_argument("prompt", metavar="PROMPT", nargs="?",
                     help="one prompt to answer (default: interactive); image files it names (./photo.jpg, "
                          "/path/to/x.png, ~/y.webp) are attached")
    run.add_argument("--url", default=None, help="the server (default: $FAISCA_URL or http://127.0.0.1:8080)")
    run.add_argument("--api-key", default=None, metavar="KEY",
                     help="the server's API key, if it needs one (default: $FAISCA_API_KEY); on the command line it "
                          "is visible in `ps`: prefer the environment variable")
    run.add_argument("--max-tokens", type=_count(1), default=None, metavar="N", help="bound each answer")

    commands.add_parser("models", help="list the model catalog with capabilities")
    show = commands.add_parser("show", help="show one model card")
    show.add_argument("model", metavar="MODEL", help="id, Hugging Face id or alias")
    shown = show.add_mutually_exclusive_group()
    shown.add_argument("--schema", action="store_true", help="print the model's request JSON Schema instead")
    shown.add_argument("--vllm", action="store_true",
                       help="print the `vllm serve` command that runs the card's checkpoint on GPUs instead")
    show.add_argument("--tensor-parallel-size", type=_count(1), default=1, metavar="N",
                      help="with --vllm: GPUs to shard the model over (default: %(default)s)")
    return parser


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _weights_label(card: ModelCard) -> str:
    weights = card.runtime.weights
    if weights is None:
        return "not configured"
    return "embedded" if weights.kind != "path" else str(weights.path)


def _print_models(catalog: Catalog) -> None:
    header = ("ID", "NAME", "VERSION", "CONTEXT", "INPUT", "TOOLS", "LORA", "LTS", "WEIGHTS")
    rows = [
        (card.id, card.name, card.version, f"{card.context_length // 1024}k", card.input,
         card.tool_calling_label, _yes_no(card.lora), _yes_no(card.long_term_support), _weights_label(card))
        for card in catalog
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _print_card(card: ModelCard) -> None:
    fields = [
        ("id", card.id), ("name", card.name), ("version", card.version), ("category", card.category),
        ("size", card.size), ("hugging face", card.hf_id), ("license", card.license),
        ("tool calling", card.tool_calling_label), ("long-term support", _yes_no(card.long_term_support)),
        ("context length", f"{card.context_length} tokens"), ("lora", _yes_no(card.lora)),
        ("input", card.input), ("aliases", ", ".join(card.aliases) or "-"), ("engine", card.runtime.engine),
        ("weights", _weights_label(card)),
    ]
    for label, value in fields:
        print(f"{label:<18} {value}")
    for label, text in (("description", card.description), ("notes", card.notes)):
        if text:
            print(f"\n{text}" if label == "description" else f"\nNote: {text}")


def _with_local_gguf(catalog: Catalog, gguf: Path, projector: Path | None, name: str | None) -> tuple[Catalog, str]:
    """The catalog with `--gguf FILE [--mmproj FILE] [--name ID]` in it, and the id it is served under."""
    from faisca.catalog.derive import card_from_gguf
    from faisca.chat.template import shipped_template_names
    from faisca.engine.llama_cpp import read_gguf_metadata

    gguf, projector = gguf.expanduser(), projector.expanduser() if projector else None
    if projector is not None and not projector.is_file():
        raise FaiscaError(f"--mmproj {projector}: not a file")
    if name is not None:
        try:
            card = catalog.resolve(name)
        except FaiscaError:
            pass
        else:  # a card the catalog has: it runs from the file
            return catalog.with_weights_path(card.id, gguf, projector_path=projector), card.id
    card = card_from_gguf(read_gguf_metadata(gguf), gguf_path=gguf, projector_path=projector, model_id=name,
                          shipped_templates=shipped_template_names())
    return catalog.with_card(card), card.id


def _with_models_dir(catalog: Catalog, directory: Path) -> Catalog:
    """The catalog with a card derived for each GGUF model in `directory` (projectors and unreadable files skipped)."""
    from faisca.errors import EngineError

    directory = directory.expanduser()
    if not directory.is_dir():
        raise FaiscaError(f"--models-dir {directory}: not a directory")
    for gguf in sorted(directory.glob("*.gguf")):
        try:
            catalog, model_id = _with_local_gguf(catalog, gguf, None, None)
        except (EngineError, ValueError) as exc:  # a projector, a LoRA adapter, or not a GGUF llama.cpp reads
            logging.getLogger("faisca.cli").warning("--models-dir: skipping %s (%s)", gguf, getattr(exc, "message", exc))
            continue
        logging.getLogger("faisca.cli").info("--models-dir: serving %s as %s", gguf, model_id)
    return catalog


def _api_keys(key: str | None, key_file: Path | None) -> tuple[str, ...]:
    """--api-key and the keys in --api-key-file; $FAISCA_API_KEY when neither is given; none: no key needed."""
    keys: list[str] = []
    if key is not None:
        if not key.strip():
            raise FaiscaError("--api-key: the key is empty")
        keys.append(key.strip())
    if key_file is not None:
        try:
            lines = key_file.expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise FaiscaError(f"--api-key-file {key_file}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
        file_keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not file_keys:
            raise FaiscaError(f"--api-key-file {key_file}: no key in it (one key per line; blank lines and "
                              "# comments are skipped)")
        keys.extend(file_keys)
    if not keys and (env_key := os.environ.get("FAISCA_API_KEY", "").strip()):
        keys.append(env_key)
    return tuple(keys)


def _exit_at_start(message: str) -> None:
    """What the command line named cannot be served (a LoRA adapter that does not fit its model): one line, exit 2."""
    print(f"faisca: {message}", file=sys.stderr, flush=True)
    os._exit(2)  # from the loading task, with the server already listening: no clean way out is worth more


def _speculation(args: argparse.Namespace, catalog: Catalog, model_ids: list[str]) -> tuple[str | None, Path | None]:
    """(--spec, the draft's GGUF) from --spec, --draft and --draft-gguf; a draft whose vocabulary differs from a
    model named at start, or from a card that names it (`[runtime] draft`), is one clear error here."""
    from faisca.engine.draft import check_draft
    from faisca.engine.weights import resolve_gguf

    for card in catalog:  # the cards that name a draft: it exists, and shares their vocabulary
        if (name := card.runtime.draft) is None:
            continue
        try:
            draft_card = catalog.resolve(name)
        except FaiscaError as exc:
            raise FaiscaError(f"the card `{card.id}` drafts with `{name}`, which is not in the catalog") from exc
        if card.runtime.weights is not None and draft_card.runtime.weights is not None:
            check_draft(resolve_gguf(card), resolve_gguf(draft_card))
    if args.draft is not None and args.draft_gguf is not None:
        raise FaiscaError("--draft and --draft-gguf: give one")
    draft_gguf = resolve_gguf(catalog.resolve(args.draft)) if args.draft is not None else args.draft_gguf
    if draft_gguf is None:
        if args.spec == "draft":
            raise FaiscaError("--spec draft needs --draft MODEL or --draft-gguf FILE")
        return args.spec, None
    if args.spec == "ngram":
        raise FaiscaError("--spec ngram takes no draft model (--draft, --draft-gguf)")
    if not draft_gguf.is_file():
        raise FaiscaError(f"--draft-gguf {draft_gguf}: not a file")
    for model_id in dict.fromkeys(model_ids or (DEFAULT_MODEL_ID,)):
        card = catalog.resolve(model_id)
        if card.runtime.engine == "llama_cpp":
            check_draft(resolve_gguf(card), draft_gguf)
    return "draft", draft_gguf


def _serve(args: argparse.Namespace, catalog: Catalog) -> int:
    from faisca.api.app import create_app
    from faisca.api.drain import Drain
    from faisca.cli.server import serve
    from faisca.loading import engine_loader, memory_estimator
    from faisca.engine.llama_cpp import available_cores
    from faisca.lifecycle.memory import default_budget_bytes
    from faisca.registry import MemoryBudget, ModelRegistry

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_keys = _api_keys(args.api_key, args.api_key_file)
    for model_id, path in args.weights:
        catalog = catalog.with_weights_path(model_id, path)
    model_ids = list(args.models or ())
    upstream_urls: dict[str, list[str]] = {}
    for model_id, url in args.upstream:
        upstream_urls.setdefault(catalog.resolve(model_id).id, []).append(url)
    for model_id, urls in upstream_urls.items():
        catalog = catalog.with_upstream(model_id, tuple(urls))
        model_ids.append(model_id)
    for directory in args.models_dir:
        catalog = _with_models_dir(catalog, directory)
    if args.gguf is not None:
        catalog, local_id = _with_local_gguf(catalog, args.gguf, args.mmproj, args.name)
        model_ids.append(local_id)
    elif args.mmproj is not None or args.name is not None:
        raise FaiscaError("--mmproj and --name go with --gguf FILE")
    if args.lora:
        local = [model_id for model_id in dict.fromkeys(model_ids or (DEFAULT_MODEL_ID,))
                 if catalog.resolve(model_id).runtime.engine == "llama_cpp"]
        if len(local) != 1:
            raise FaiscaError("--lora: several models are served here; list each one's adapters in its card "
                              "([[runtime.loras]] name, path)")
        for name, path in args.lora:
            if not path.is_file():
                raise FaiscaError(f"--lora {name}={path}: not a file")
        try:
            catalog = catalog.with_loras(local[0], tuple(args.lora))
        except ValueError as exc:
            raise FaiscaError(f"--lora: the model `{catalog.resolve(local[0]).id}` takes no LoRA adapters "
                              f"(its card says lora = false)") from exc
        model_ids.append(local[0])  # loaded at start, so that an adapter that does not fit is caught there
    speculation, draft_gguf = _speculation(args, catalog, model_ids)
    settings = Settings(
        host=args.host, port=args.port, model_ids=tuple(dict.fromkeys(catalog.resolve(m).id for m in model_ids)),
        num_threads=args.threads, max_context_tokens=args.ctx_size, kv_cache_tokens=args.kv_cache_tokens,
        max_num_seqs=args.max_num_seqs, max_queue=args.max_queue, max_batch_tokens=args.max_batch_tokens,
        speculation=speculation, draft_gguf=draft_gguf, max_draft_tokens=args.draft_max,
        max_speculating_seqs=args.spec_max_seqs,
        api_keys=api_keys, enable_docs=args.enable_docs, drain_timeout_s=args.drain_timeout,
        max_loras=args.max_loras, lora_dirs=tuple(args.lora_dir),
        max_image_pixels=args.max_image_pixels, max_image_bytes=args.max_image_bytes,
        image_allowed_networks=tuple(args.allow_image_network),
        max_images_per_request=args.max_images_per_request,
        weights_paths=tuple(args.weights), cards_dirs=tuple(args.cards_dir), upstreams=tuple(args.upstream),
        upstream_api_key=os.environ.get("FAISCA_UPSTREAM_API_KEY", "").strip() or None,
        keep_alive_s=args.keep_alive, max_loaded_models=args.max_loaded_models, memory_budget_bytes=args.memory_budget,
    )
    for model_id in settings.model_ids:
        card = catalog.resolve(model_id)
        if card.runtime.weights is None and card.runtime.engine != "upstream":
            raise FaiscaError(missing_weights_message(card))
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))  # a line per upstream call
    loader = engine_loader(settings, catalog, num_threads=settings.num_threads or available_cores())
    budget = MemoryBudget(settings.memory_budget_bytes or default_budget_bytes(), settings.max_loaded_models)
    logging.getLogger("faisca.cli").info(
        "models in memory: at most %s, within %s", settings.max_loaded_models or "any number",
        f"{budget.max_bytes / 2**20:.0f} MiB" if budget.max_bytes else "no byte budget (memory unknown)")
    registry = ModelRegistry(catalog, settings.model_ids, loader, on_fatal=_exit_at_start,
                             estimate_bytes=memory_estimator(settings, catalog), budget=budget,
                             default_keep_alive_s=settings.keep_alive_s)
    drain = Drain()
    app = create_app(settings, registry, drain=drain)
    serve(app, host=settings.host, port=settings.port, log_level=args.log_level, drain=drain,
          drain_timeout_s=settings.drain_timeout_s)
    return 0


def _user_message(line: str) -> dict[str, object]:
    """The user's line as a message, with the image files it names attached (as `ollama run` does)."""
    prompt = with_attachments(line)
    for path in prompt.images:
        print(f"Added image '{path}'", file=sys.stderr)
    return {"role": "user", "content": prompt.content()}


def _stream_answer(client: Client, args: argparse.Namespace, messages: list[dict[str, object]]) -> str:
    payload: dict[str, object] = {"stream": True, "messages": messages}
    if args.max_tokens:
        payload["max_tokens"] = args.max_tokens
    pieces = []
    for chunk in client.run(args.model, payload):  # type: ignore[union-attr]
        for choice in chunk.get("choices", []):
            if text := choice.get("delta", {}).get("content"):
                pieces.append(text)
                print(text, end="", flush=True)
    print()
    return "".join(pieces)


def _run(args: argparse.Namespace) -> int:
    client = Client(args.url, args.api_key)
    try:
        if args.prompt is not None:
            _stream_answer(client, args, [_user_message(args.prompt)])
            return 0
        history: list[dict[str, object]] = []
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                print()
                return 0
            if line.strip() in ("/bye", "/exit"):
                return 0
            if not line.strip():
                continue
            history.append(_user_message(line))
            history.append({"role": "assistant", "content": _stream_answer(client, args, history)})
    except FaiscaClientError as exc:
        print(f"faisca: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:  # an attached image that cannot be read
        print(f"faisca: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print()
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":  # a client: it needs no catalog
        return _run(args)
    try:
        catalog = Catalog.from_dirs(*args.cards_dir)
        match args.command:
            case "models":
                _print_models(catalog)
            case "show":
                card = catalog.resolve(args.model)
                if args.schema:
                    from faisca.catalog.schema import request_schema

                    print(json.dumps(request_schema(card), indent=2))
                elif args.vllm:
                    from faisca.catalog.vllm import vllm_serve_command

                    draft = catalog.resolve(card.runtime.draft) if card.runtime.draft else None
                    print(shlex.join(vllm_serve_command(card, tensor_parallel_size=args.tensor_parallel_size,
                                                        draft=draft)))
                else:
                    _print_card(card)
            case "serve":
                return _serve(args, catalog)
    except (FaiscaError, CardError) as exc:
        print(f"faisca: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
