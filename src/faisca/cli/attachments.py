"""Image files named in a `faisca run` prompt, attached to it as `ollama run` does: a path to a .png, .jpg/.jpeg,
.webp or .gif file (starting with /, ./, ../ or ~/; quoted, or with spaces escaped as `\\ `) that exists is taken
out of the prompt and sent as an image; anything else stays text."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

_EXTENSION = r"\.(?:png|jpe?g|webp|gif)"
_IMAGE_PATH = re.compile(
    rf"""'(?P<single>(?:~|\.{{1,2}})?/[^']*?{_EXTENSION})'"""
    rf"""|"(?P<double>(?:~|\.{{1,2}})?/[^"]*?{_EXTENSION})\""""
    rf"""|(?P<bare>(?<![^\s(])(?:~|\.{{1,2}})?/(?:\\ |[^\s'"])*?{_EXTENSION})(?=$|[\s,;:!?)]|\.(?:\s|$))""",
    re.IGNORECASE,
)
_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif"}


@dataclass(frozen=True)
class Prompt:
    text: str
    images: tuple[Path, ...] = ()

    def content(self) -> str | list[dict[str, object]]:
        """The user message's content: the text alone, or the text then each image as a data URI part."""
        if not self.images:
            return self.text
        parts: list[dict[str, object]] = [{"type": "text", "text": self.text}]
        for path in self.images:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            media_type = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
            parts.append({"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}})
        return parts


def with_attachments(line: str) -> Prompt:
    images: list[Path] = []

    def attach(match: re.Match[str]) -> str:
        raw = match.group("single") or match.group("double") or match.group("bare").replace("\\ ", " ")
        path = Path(raw).expanduser()
        if not path.is_file():
            return match.group(0)
        images.append(path)
        return ""

    text = _IMAGE_PATH.sub(attach, line)
    return Prompt(" ".join(text.split()) if images else line, tuple(images))
