"""Fixtures: one real `faisca serve` with both embedded models for the whole session, and clients of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server import CONTEXT_TOKENS, SCREENSHOTS, RunningServer, serving


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SCREENSHOTS.is_dir():
        terminalreporter.write_line(f"chat page screenshots: {SCREENSHOTS}")

@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serving(tmp_path_factory.mktemp("server"), "--model", "gemma3:270m", "--model", "smollm2",
                 "--ctx-size", str(CONTEXT_TOKENS)) as running:
        yield running


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as session:
        yield session


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A server of the test's own, for a test that compares answers across requests. Greedy (and seeded) answers are
    exact whether a prompt is cold, cached or batched, but not once a sequence's later KV cells lie before its earlier
    ones, which other requests' freed cells on a warm, shared server can cause (README "Reproducibility")."""
    with serving(tmp_path, "--model", "gemma3:270m", "--model", "smollm2", "--ctx-size", str(CONTEXT_TOKENS)) as running:
        yield running


@pytest.fixture
def fresh_client(fresh_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fresh_server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
