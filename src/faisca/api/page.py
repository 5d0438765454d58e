"""The chat page: plain HTML, CSS and JavaScript shipped in `faisca/api/static/`, served by faisca itself.

`/ui` always answers the page; `GET /` answers it to browsers (`Accept: text/html`) and "faisca is running" to every
other client (Ollama's clients probe it). The page holds no secret, so it and its files need no API key; its calls to
the API send the key the user types. Only the files listed here are served (no paths from the request reach the disk),
read once, with a Content-Security-Policy that allows this origin's scripts and styles only: even a rendering bug
could not run a script that came with a model's answer.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

PREFIX = "/ui"
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
ASSETS = ("chat.css", "chat.js", "markdown.js", "icon.svg")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return files("faisca.api").joinpath("static", name).read_bytes()


def wants_html(request: Request) -> bool:
    """A browser navigating here; curl, Ollama's clients and probes send `*/*` or nothing."""
    return "text/html" in request.headers.get("accept", "")


def build_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)  # the API key rule for these paths is in faisca.api.auth
    page = _read("index.html")
    assets = {name: _read(name) for name in ASSETS}

    def file_response(body: bytes, name: str) -> Response:  # HEAD: the server sends the headers only
        return Response(body, media_type=_TYPES[name[name.rindex("."):]], headers=_HEADERS)

    @router.api_route("/", methods=["GET", "HEAD"])
    async def root(request: Request) -> Response:
        if wants_html(request):
            response = file_response(page, "index.html")
        else:
            response = PlainTextResponse("faisca is running")
        response.headers["Vary"] = "Accept"
        return response

    @router.api_route(PREFIX, methods=["GET", "HEAD"])
    @router.api_route(f"{PREFIX}/", methods=["GET", "HEAD"])
    async def ui() -> Response:
        return file_response(page, "index.html")

    @router.api_route(PREFIX + "/{name}", methods=["GET", "HEAD"])
    async def asset(name: str) -> Response:
        if name not in assets:
            return PlainTextResponse("Not Found", status_code=404)
        return file_response(assets[name], name)

    return router
