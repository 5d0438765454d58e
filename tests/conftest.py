"""Shared fixtures: the real embedded models' GGUF files."""

from __future__ import annotations

from pathlib import Path

import pytest

from faisca.catalog import Catalog
from faisca.engine.weights import resolve_gguf


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.from_dirs()


@pytest.fixture(scope="session")
def gemma_gguf(catalog: Catalog) -> Path:
    return resolve_gguf(catalog.resolve("gemma3:270m"))


@pytest.fixture(scope="session")
def smollm2_gguf(catalog: Catalog) -> Path:
    return resolve_gguf(catalog.resolve("smollm2"))
