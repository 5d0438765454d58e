"""Text → token ids as llama.cpp's `llama_tokenize` gives them, in time linear in the text.

llama.cpp first splits the text at every special token's text (control and unknown tokens when special tokens are
parsed; user-defined ones, such as Gemma's runs of spaces and newlines, always), then tokenizes the pieces between.
Its split tries each of the vocabulary's special tokens against each piece so far: quadratic in the number of
occurrences (measured on Gemma 3's 6,400 special tokens: 40,000 lines of text took 55 s, a 20,000-turn chat about
100 s). Here the split is one pass of a regular expression built as a trie of those texts (longest match at the
leftmost place, which is what llama.cpp's longest-token-first split comes to), and llama.cpp tokenizes only pieces
that hold no special text. A vocabulary whose special tokens strip the spaces around them (`lstrip`/`rstrip`) is
left to llama.cpp itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ATTR_UNKNOWN, _ATTR_CONTROL, _ATTR_USER_DEFINED = 1 << 0, 1 << 3, 1 << 4
_ATTR_LSTRIP, _ATTR_RSTRIP = 1 << 7, 1 << 8


def _trie_pattern(texts: Iterable[str]) -> re.Pattern[str]:
    """A pattern matching any of `texts`, the longest one where several start at the same place."""
    trie: dict[str, dict] = {}
    for text in texts:
        node = trie
        for character in text:
            node = node.setdefault(character, {})
        node[""] = {}  # a text ends here

    def pattern(node: dict[str, dict]) -> str:
        branches = [re.escape(character) + pattern(child) for character, child in sorted(node.items()) if character]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        return f"(?:{body})?" if "" in node else body

    return re.compile(pattern(trie) or "(?!)")


class PromptTokenizer:
    def __init__(self, vocab: int, *, num_vocab: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._vocab = vocab
        special: dict[str, int] = {}
        always: dict[str, int] = {}  # user-defined: split at whether or not special tokens are parsed
        self.is_exact = True
        for token in range(num_vocab):
            attributes = llama_cpp.llama_vocab_get_attr(vocab, token)
            if not attributes & (_ATTR_UNKNOWN | _ATTR_CONTROL | _ATTR_USER_DEFINED):
                continue
            text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", errors="replace")
            if not text:
                continue
            special.setdefault(text, token)
            if not attributes & (_ATTR_UNKNOWN | _ATTR_CONTROL):
                always.setdefault(text, token)
            if attributes & (_ATTR_LSTRIP | _ATTR_RSTRIP):
                self.is_exact = False
        self._ids = special
        self.control_texts = frozenset(special.keys() - always.keys())
        self._special_pattern = _trie_pattern(special)
        self._always_pattern = _trie_pattern(always)

    def tokenize(self, text: str, *, parse_special: bool) -> list[int]:
        """As `llama_tokenize(text, add_special=False, parse_special=parse_special)`."""
        if not self.is_exact:
            return self._llama_tokenize(text.encode("utf-8"), parse_special=parse_special)
        tokens: list[int] = []
        done = 0
        for match in (self._special_pattern if parse_special else self._always_pattern).finditer(text):
            if match.start() > done:
                tokens += self._llama_tokenize(text[done:match.start()].encode("utf-8"), parse_special=False)
            tokens.append(self._ids[match.group()])
            done = match.end()
        if done < len(text):
            tokens += self._llama_tokenize(text[done:].encode("utf-8"), parse_special=False)
        return tokens

    def _llama_tokenize(self, text: bytes, *, parse_special: bool) -> list[int]:
        capacity = len(text) + 2  # no more tokens than bytes (and an added one)
        buffer = (self._lib.llama_token * capacity)()
        count = self._lib.llama_tokenize(self._vocab, text, len(text), buffer, capacity, False, parse_special)
        if count < 0:  # pragma: no cover - cannot happen with one token per byte at most
            raise RuntimeError(f"llama_tokenize needs {-count} tokens for {len(text)} bytes")
        return buffer[:count]
