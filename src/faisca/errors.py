"""One exception tree for the whole service; each surface maps it to its own error body in one place.

    FaiscaError                    500 internal_error
    ├── InvalidRequest(param)      400 invalid_request_error
    │   ├── UnsupportedCapability  400 (an image to a text-only model, tools to a model without them)
    │   ├── ContextLengthExceeded  400 context_length_exceeded
    │   └── ModelTooLarge          400 model_too_large (it could never fit the memory budget)
    ├── Unauthorized               401
    ├── ModelNotFound              404 model_not_found
    ├── ModelUnavailable           404 (in the catalog, but not served here: weights missing or not loaded)
    ├── PayloadTooLarge            413
    ├── Overloaded(retry_after_s)  503 + Retry-After
    │   ├── NotReady               503 (still loading) + Retry-After
    │   ├── ShuttingDown           503 (draining before exit) + Retry-After
    │   ├── NoReplica              503 (no upstream replica of the model is up) + Retry-After
    │   └── NoRoom                 503 (the models in memory are in use; the load must wait) + Retry-After
    └── EngineError                500 (the engine failed; never the client's fault)
        └── UpstreamError          502 (an upstream server failed or answered outside the protocol)
"""

from __future__ import annotations


class FaiscaError(Exception):
    status_code = 500
    error_type = "internal_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(FaiscaError):
    status_code = 400
    error_type = "invalid_request_error"
    code = None


class UnsupportedCapability(InvalidRequest):
    code = "unsupported_capability"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ModelTooLarge(InvalidRequest):
    code = "model_too_large"


class Unauthorized(FaiscaError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(FaiscaError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class ModelUnavailable(FaiscaError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_available"


class PayloadTooLarge(FaiscaError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class Overloaded(FaiscaError):
    status_code = 503
    error_type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(Overloaded):
    code = "model_loading"


class ShuttingDown(Overloaded):
    code = "shutting_down"


class NoReplica(Overloaded):
    code = "no_replica_available"


class NoRoom(Overloaded):
    code = "insufficient_memory"


class EngineError(FaiscaError):
    pass


class UpstreamError(EngineError):
    status_code = 502
    error_type = "server_error"
    code = "upstream_error"
