"""Ollama's `keep_alive`: how long a model stays in memory after its last request ends.

A number is seconds; a string is a Go duration (`"5m"`, `"1h30m"`, `"2.5s"`, `"0"`), as Ollama's `api.Duration`
reads it. `0` unloads the model as soon as its requests end; a negative value keeps it loaded forever, as does a
duration beyond Go's longest (about 292 years), which Ollama cannot tell from forever either.
"""

from __future__ import annotations

import math
import re

from faisca.errors import InvalidRequest

FOREVER = math.inf

_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_UNIT = "|".join(sorted(_UNIT_S, key=len, reverse=True))
# what the published schemas accept as a string (catalog/ollama_schema.py, catalog/schema.py)
DURATION_PATTERN = rf"^[-+]?(?:0|(?:{_NUMBER}(?:{_UNIT}))+)$"
_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_MAX_GO_DURATION_S = (2**63 - 1) / 1e9
DURATION_HELP = 'a number of seconds or a duration such as "5m", "1h30m", "10s"; 0 unloads at once, negative keeps forever'


def _seconds(value: float) -> float:
    return FOREVER if value < 0 or value > _MAX_GO_DURATION_S else value


def parse_duration(text: str) -> float | None:
    """A Go duration in seconds, or None if `text` is not one."""
    if not re.fullmatch(DURATION_PATTERN, text):
        return None
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    return sign * sum(float(number) * _UNIT_S[unit] for number, unit in _PART.findall(body))


def parse_keep_alive(value: object, *, param: str = "keep_alive") -> float | None:
    """A request's `keep_alive` in seconds (`FOREVER` for negative); None when absent (the model's default applies).
    A value that is not a duration is a 400 naming the field, never a silent default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"{param}: expected {DURATION_HELP}; got {value!r}", param=param)
    if isinstance(value, str):
        seconds = parse_duration(value.strip())
        if seconds is None:
            raise InvalidRequest(f"{param}: {value!r} is not a duration; expected {DURATION_HELP}", param=param)
        return _seconds(seconds)
    if math.isnan(value):
        raise InvalidRequest(f"{param}: expected {DURATION_HELP}; got NaN", param=param)
    return _seconds(float(value))


def parse_keep_alive_flag(text: str) -> float:
    """`--keep-alive`: a duration, or a bare number of seconds (as `OLLAMA_KEEP_ALIVE` takes it). ValueError if neither."""
    try:
        number = float(text)
    except ValueError:
        seconds = parse_duration(text.strip())
        if seconds is None:
            raise ValueError(f"expected {DURATION_HELP}; got {text!r}") from None
        return _seconds(seconds)
    if math.isnan(number):
        raise ValueError(f"expected {DURATION_HELP}; got {text!r}")
    return _seconds(number)
