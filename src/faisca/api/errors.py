"""The one place where exceptions become HTTP error bodies: OpenAI's shape, and Ollama's `{"error": "…"}` under /api."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from faisca.errors import FaiscaError, InvalidRequest, Overloaded

logger = logging.getLogger("faisca.api")


def openai_error_body(exc: FaiscaError) -> dict[str, object]:
    return {"error": {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}}


def ollama_error_body(exc: FaiscaError) -> dict[str, object]:
    return {"error": exc.message}


def error_response(exc: FaiscaError, *, path: str = "/v1") -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Overloaded) else None
    body = ollama_error_body(exc) if path.startswith("/api/") else openai_error_body(exc)
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _http_error(status_code: int, message: str) -> FaiscaError:
    """Starlette's own errors (no such route, wrong method) in faisca's shape."""
    error = FaiscaError(message, code={404: "not_found", 405: "method_not_allowed"}.get(status_code, "http_error"))
    error.status_code = status_code
    error.error_type = "invalid_request_error" if status_code < 500 else "server_error"
    return error


def install_error_handlers(app: FastAPI) -> None:
    async def on_faisca_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FaiscaError)
        return error_response(exc, path=request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(_http_error(exc.status_code, message), path=request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(InvalidRequest(str(exc)), path=request.url.path)

    async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(FaiscaError("The server had an error while processing your request."), path=request.url.path)

    app.add_exception_handler(FaiscaError, on_faisca_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected_error)
