"""API keys: matching tokens against several keys, and where `faisca serve` takes its keys from."""

from __future__ import annotations

from pathlib import Path

import pytest

from faisca.api.auth import ApiKeys, bearer_token, is_public
from faisca.cli.main import _api_keys
from faisca.errors import FaiscaError


def test_a_token_must_equal_one_of_the_keys() -> None:
    keys = ApiKeys(["first", "sécond"])
    assert keys.accepts(b"first") and keys.accepts("sécond".encode())
    for token in (b"", b"firs", b"first ", b"firstfirst", b"FIRST", b"second"):
        assert not keys.accepts(token)


def test_no_keys_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        ApiKeys([])


@pytest.mark.parametrize(("headers", "token"), [
    ([(b"authorization", b"Bearer abc")], b"abc"),
    ([(b"authorization", b"bearer  abc ")], b"abc"),
    ([(b"authorization", b"Basic abc")], None),
    ([(b"x-api-key", b"abc")], None),
    ([], None),
])
def test_the_bearer_token(headers: list[tuple[bytes, bytes]], token: bytes | None) -> None:
    assert bearer_token({"headers": headers}) == token


def test_only_health_the_root_and_the_chat_page_are_public() -> None:
    assert is_public("GET", "/health") and is_public("GET", "/") and is_public("HEAD", "/")
    assert is_public("GET", "/ui") and is_public("HEAD", "/ui/") and is_public("GET", "/ui/chat.js")
    for method, path in [("POST", "/"), ("GET", "/metrics"), ("GET", "/api/tags"), ("GET", "/health/"),
                         ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/v1/models"), ("POST", "/ui"),
                         ("GET", "/uix"), ("GET", "/ui.js"), ("DELETE", "/ui/chat.js")]:
        assert not is_public(method, path)


def test_keys_come_from_the_flag_and_the_file_else_the_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# rotated monthly\n\n  alpha  \nbeta\n#gamma\n")
    monkeypatch.setenv("FAISCA_API_KEY", "from-env")
    assert _api_keys(None, key_file) == ("alpha", "beta")
    assert _api_keys("flag", key_file) == ("flag", "alpha", "beta")
    assert _api_keys("flag", None) == ("flag",)
    assert _api_keys(None, None) == ("from-env",)
    monkeypatch.setenv("FAISCA_API_KEY", "")
    assert _api_keys(None, None) == ()
    monkeypatch.delenv("FAISCA_API_KEY")
    assert _api_keys(None, None) == ()


@pytest.mark.parametrize("content", [None, "", "\n  \n# nothing\n", b"\xff\xfe"])
def test_an_unusable_key_file_is_a_clear_error(tmp_path: Path, content: str | bytes | None) -> None:
    key_file = tmp_path / "keys"
    if isinstance(content, bytes):
        key_file.write_bytes(content)
    elif content is not None:
        key_file.write_text(content)
    with pytest.raises(FaiscaError, match=f"--api-key-file {key_file}: "):
        _api_keys(None, key_file)
    with pytest.raises(FaiscaError, match="--api-key: the key is empty"):
        _api_keys("  ", None)
