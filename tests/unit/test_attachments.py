"""`faisca run` attaches the image files a prompt names, as `ollama run` does."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from faisca.cli.attachments import with_attachments


@pytest.fixture()
def photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(b"jpeg bytes")
    (tmp_path / "with space").mkdir()
    (tmp_path / "with space" / "b.PNG").write_bytes(b"png bytes")
    return tmp_path


def test_named_files_are_attached_and_taken_out_of_the_text(photos: Path) -> None:
    prompt = with_attachments("what is in ./photo.jpg?")
    assert prompt.text == "what is in ?" and prompt.images == (Path("photo.jpg"),)
    content = prompt.content()
    assert isinstance(content, list) and content[0] == {"type": "text", "text": "what is in ?"}
    assert content[1] == {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(b"jpeg bytes").decode()}}


@pytest.mark.parametrize("line", [
    "compare {d}/photo.jpg and '{d}/with space/b.PNG'",
    'compare {d}/photo.jpg and "{d}/with space/b.PNG".',
    "compare {d}/photo.jpg and {d}/with\\ space/b.PNG",
])
def test_absolute_quoted_and_escaped_paths(photos: Path, line: str) -> None:
    prompt = with_attachments(line.format(d=photos))
    assert prompt.images == (photos / "photo.jpg", photos / "with space" / "b.PNG")
    assert prompt.text.startswith("compare and")


@pytest.mark.parametrize("line", ["what is in ./missing.jpg", "no images here", "see https://example.com/a.png",
                                  "a photo.jpg without a path"])
def test_anything_else_stays_text(photos: Path, line: str) -> None:
    prompt = with_attachments(line)
    assert prompt.text == line and prompt.images == () and prompt.content() == line
