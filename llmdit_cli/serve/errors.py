"""How a refused request or a failed job reaches the client: `{"error": {"message", "type",
"param", "code"}}` with the HTTP status its type calls for."""

from __future__ import annotations

import logging
from typing import Any

from llmdit_cli.errors import LlmditError, ModelError, WriteError
from llmdit_cli.remote import RemoteError
from llmdit_cli.serve.settings import ApiError, ServerSettings
from llmdit_cli.serve.work import Cancelled

log = logging.getLogger("llmdit.serve")


def error_body(message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def describe(exc: BaseException, settings: ServerSettings) -> tuple[str, str, str | None]:
    """(message, error type, field) for a failed job."""
    if isinstance(exc, ApiError):
        return exc.message, exc.kind, exc.param
    if isinstance(exc, RemoteError):
        return f"the encoder server failed: {exc}", "upstream_error", None
    if isinstance(exc, WriteError):  # the server's disk, not the request: its path stays in the log
        return "the server could not write a file (its log says which, and why)", "server_error", None
    if isinstance(exc, ModelError):
        message, param = settings.message(exc)
        return message, "server_error", param
    if isinstance(exc, LlmditError):
        message, param = settings.message(exc)
        return message, "invalid_request_error", param
    if isinstance(exc, Cancelled):
        return "cancelled: the client went away", "cancelled", None
    lines = str(exc).strip().splitlines()
    return f"internal error: {type(exc).__name__}: {lines[0] if lines else ''}", "server_error", None


def result_of(done, settings: ServerSettings):
    """A finished job's result, or its failure as an ApiError (500 for what is not the client's fault)."""
    exc = done.exception()
    if exc is None:
        return done.result()
    message, kind, param = describe(exc, settings)
    if kind == "server_error":
        log.error("job failed", exc_info=exc)
    raise ApiError(status_for(kind), message, param, kind)


def status_for(kind: str) -> int:
    return {"invalid_request_error": 400, "cancelled": 499, "upstream_error": 502}.get(kind, 500)


def install_handlers(app, settings: ServerSettings) -> None:
    """Every refusal and failure as the one JSON error shape (no HTML, no traceback)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(error_body(exc.message, exc.kind, exc.param), exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request, exc: RequestValidationError):
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"][1:]) or "request"
        return JSONResponse(error_body(f"{where}: {err['msg']}", "invalid_request_error", where), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        # Starlette's own headers (405's Allow, which methods the path takes) go with the error.
        headers = getattr(exc, "headers", None)
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        message, kind, param = describe(exc, settings)
        if kind == "server_error":
            log.error("request failed", exc_info=exc)
        return JSONResponse(error_body(message, kind, param), status_for(kind))
