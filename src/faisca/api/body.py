"""Reading a JSON request body: bounded in size, strictly UTF-8 and strict JSON, clear 400/413 errors.

Strict JSON here means what RFC 8259 allows and nothing the machine cannot hold: no `NaN`/`Infinity` (Python's
parser takes them), no number that overflows to infinity (`1e400`), no integer too long to convert, no string with
an unpaired surrogate (`"\\ud800"`, which no UTF-8 encoder takes), and at most `MAX_JSON_DEPTH` levels of objects
and arrays. Errors name the field where there is one (`temperature`, `options.top_k`).

`read_request` parses the body and runs the caller's `parse` (schema validation, conversion) on the event loop for
small bodies and in a worker thread for large ones, so that a 30 MB body never stalls the other requests' streams.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import Request

from faisca.errors import InvalidRequest, PayloadTooLarge
from faisca.limits import MAX_INLINE_BODY_BYTES, MAX_JSON_DEPTH

T = TypeVar("T")

# A `\uD800`-`\uDFFF` escape: a surrogate, which the parser keeps when it is not half of a pair.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

Path = tuple[str | int, ...]


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"The request body is over the limit of {max_bytes} bytes.")
    return bytes(body)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or `InvalidRequest` saying what is wrong with it (and where, when it can)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid UTF-8 ({exc.reason} at byte {exc.start}).") from exc
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from exc
    except RecursionError as exc:
        raise InvalidRequest(f"The request body is nested too deeply: at most {MAX_JSON_DEPTH} levels of objects "
                             f"and arrays are accepted.") from exc
    except ValueError as exc:  # an integer of thousands of digits (Python refuses to convert it)
        raise InvalidRequest(f"The request body holds an integer too long to read (at most "
                             f"{sys.get_int_max_str_digits()} digits are accepted).") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {type(parsed).__name__}.")
    check_json_values(parsed, may_hold_surrogates=_SURROGATE_ESCAPE.search(raw) is not None)
    return parsed


def check_json_values(value: dict[str, Any] | list[Any], *, may_hold_surrogates: bool = True) -> None:
    """`InvalidRequest` naming the field if `value` nests deeper than `MAX_JSON_DEPTH`, holds a number that is not
    finite, or (when `may_hold_surrogates`) a string with an unpaired surrogate.

    One pass, level by level, without paths (about as long as parsing took, at worst); a second pass, with paths,
    only to name the field of an error."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > MAX_JSON_DEPTH:
            path = next(_find(value, lambda _, d: d > MAX_JSON_DEPTH))
            raise InvalidRequest(f"{path[0]}: nested too deeply; at most {MAX_JSON_DEPTH} levels of objects and arrays "
                                 f"are accepted in a request body.", param=str(path[0]))
        deeper: list[Any] = []
        for node in level:
            children = node.values() if type(node) is dict else node
            deeper += [child for child in children if type(child) is dict or type(child) is list]
            if any([type(child) is float and not math.isfinite(child) for child in children]):
                path = next(_find(value, lambda v, _: type(v) is float and not math.isfinite(v)))
                raise InvalidRequest(f"{_dotted(path)}: {_find_value(value, path)} is not a finite number; JSON "
                                     f"numbers must be finite (no NaN or Infinity).", param=_dotted(path))
            if may_hold_surrogates and any([type(text) is str and not _encodes(text)
                                            for text in ([*node, *children] if type(node) is dict else children)]):
                path = next(_find(value, lambda v, _: type(v) is str and not _encodes(v), keys=True))
                raise InvalidRequest(f"{_dotted(path)}: holds an unpaired UTF-16 surrogate (`\\ud800`-`\\udfff`), "
                                     f"which is not text.", param=_dotted(path))
        level = deeper
        depth += 1


def _find_value(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _find(value: Any, matches: Callable[[Any, int], bool], *, keys: bool = False) -> Iterator[Path]:
    """Paths to the values (and with `keys`, the object keys) that match, depth first, in document order."""
    stack: list[tuple[Any, Path, int]] = [(value, (), 1)]
    while stack:
        node, path, depth = stack.pop()
        if matches(node, depth):
            yield path
            continue
        if type(node) is dict:
            if keys:
                yield from (path + (key,) for key in node if matches(key, depth))
            stack.extend(reversed([(child, path + (key,), depth + 1) for key, child in node.items()]))
        elif type(node) is list:
            stack.extend(reversed([(child, path + (index,), depth + 1) for index, child in enumerate(node)]))


def _dotted(path: Path) -> str:
    return ".".join(map(str, path))


async def read_request(request: Request, *, max_bytes: int, parse: Callable[[dict[str, Any]], T]) -> T:
    """`parse` of the body's JSON object; both run in a worker thread when the body is large."""
    raw = await read_body(request, max_bytes=max_bytes)

    def work() -> T:
        return parse(parse_json_object(raw))

    if len(raw) <= MAX_INLINE_BODY_BYTES:
        return work()
    return await asyncio.get_running_loop().run_in_executor(_LARGE_BODIES, work)


# Large bodies are read one at a time: each holds the GIL while it is parsed and checked, and a pool of them would
# leave the event loop a turn only every few switch intervals (20 at once took /health's p99 to 180 ms).
_LARGE_BODIES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="large-body")


async def read_json_object(request: Request, *, max_bytes: int) -> dict[str, Any]:
    return await read_request(request, max_bytes=max_bytes, parse=lambda body: body)
