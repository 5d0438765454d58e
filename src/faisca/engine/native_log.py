"""llama.cpp's and libmtmd's own log lines, routed into `logging` (logger `faisca.native`): their chatter at debug,
their warnings and errors as such. The last few errors are kept, so a failed load can say why in its message.

The C libraries take one log hook per process, so this is installed once per process and kept alive (a ctypes
callback that is garbage-collected would crash the next log line).
"""

from __future__ import annotations

import logging
from typing import ClassVar

logger = logging.getLogger("faisca.native")

# ggml's `enum ggml_log_level` (llama-cpp-python's own table predates its renumbering).
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_CONTINUATION = 5
_MAX_RECENT_ERRORS = 5


class NativeLog:
    _installed: ClassVar[NativeLog | None] = None

    def __init__(self) -> None:
        self.recent_errors: list[str] = []
        self._pending = ""
        self._pending_level = logging.DEBUG

    @classmethod
    def install(cls) -> NativeLog:
        """The process's hook, installing it into llama.cpp and libmtmd the first time."""
        if cls._installed is None:
            import llama_cpp
            from llama_cpp import mtmd_cpp

            log = cls()
            callback = llama_cpp.llama_log_callback(log._on_line)
            log._callback = callback  # type: ignore[attr-defined]  # kept alive with the instance
            llama_cpp.llama_log_set(callback, None)
            mtmd_cpp.mtmd_log_set(callback, None)
            mtmd_cpp.mtmd_helper_log_set(callback, None)
            cls._installed = log
        return cls._installed

    def _on_line(self, level: int, text: bytes, _user_data: object) -> None:
        if level != _CONTINUATION:
            self._pending_level = _LEVELS.get(level, logging.DEBUG)
        self._pending += text.decode("utf-8", errors="replace")
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line.strip():
                self._emit(line.rstrip())

    def _emit(self, line: str) -> None:
        if self._pending_level >= logging.ERROR:
            self.recent_errors = [*self.recent_errors[-(_MAX_RECENT_ERRORS - 1):], line.strip()]
        logger.log(self._pending_level, "%s", line)
