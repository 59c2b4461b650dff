"""Errors sent to clients in the OpenAI shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from fastapi.responses import JSONResponse

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          409: "conflict_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 499: "cancelled", 500: "server_error", 503: "service_unavailable"}


class APIError(Exception):
    """An error answered with `status` and the OpenAI error body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code if self.code is not None else self.status}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> APIError:
    return APIError(400, message, code, param)


def busy(queue_size: int) -> APIError:
    return APIError(429, f"the server is busy ({queue_size} requests already waiting); retry shortly",
                    "server_busy", headers={"Retry-After": "1"})


def unknown_model(name: str, served: str) -> APIError:
    return APIError(404, f"The model `{name}` does not exist; this server serves `{served}`.",
                    "model_not_found", "model")


def to_api_error(exc: BaseException) -> APIError:
    """The client-facing error for an exception raised while serving a request."""
    from ..errors import LongreachError
    from ..kv.persist import CorruptMemory, IncompatibleMemory
    from .contexts import ContextExists, ContextNotFound, ContextTooLong, InvalidContextId

    if isinstance(exc, APIError):
        return exc
    mapping = [(InvalidContextId, 400, "invalid_context_id", "context_id"),
               (ContextNotFound, 404, "context_not_found", "context_id"),
               (ContextExists, 409, "context_exists", "name"),
               (ContextTooLong, 400, "context_length_exceeded", None),
               (IncompatibleMemory, 409, "context_incompatible", "context_id"),
               (CorruptMemory, 422, "context_corrupt", "context_id"),
               (LongreachError, 400, "invalid_request", None)]
    for kind, status, code, param in mapping:
        if isinstance(exc, kind):
            return APIError(status, str(exc), code, param)
    return APIError(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error")
