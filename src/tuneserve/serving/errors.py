"""Errors to HTTP status codes, in one place.

Every error a request can cause is a :class:`~tuneserve.exceptions.TuneserveError` or one
of the framework's own; this module maps them to a status and the body is always
``{"error": "..."}``:

==========================================  =====================================
``NotFoundError`` (model, version)          404
``BodyTooLargeError`` (counted as it came)  413
``QueueFullError``                          503, with ``Retry-After: 1``
``TimeoutError`` (the request's time limit) 504
any other ``TuneserveError`` (bad input)    400
FastAPI's request validation                400
Starlette's HTTP errors (405, 404 route)    their own status
anything else (the server's fault)          500, logged with its traceback
==========================================  =====================================

The :class:`~tuneserve.serving.gate.Gate` answers 401, 403 and 413 (a ``Content-Length``
over the limit) before a request gets this far.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneserve.exceptions import NotFoundError, TuneserveError, UnavailableError

from .batcher import QueueFullError
from .gate import BodyTooLargeError

__all__ = ["error_response", "install", "status_of"]

log = logging.getLogger(__name__)


def status_of(exc: BaseException) -> int:
    """The HTTP status of an exception (500 for one that is not the client's doing)."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, BodyTooLargeError):
        return 413
    if isinstance(exc, UnavailableError):  # a full queue, a store that is down
        return 503
    if isinstance(exc, TimeoutError):
        return 504
    if isinstance(exc, TuneserveError):
        return 400
    return 500


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install(app: FastAPI, timeout_s: float) -> None:
    """Register the handlers that turn the exceptions above into responses."""

    async def tuneserve_error(request: Request, exc: Exception) -> JSONResponse:
        headers = {"Retry-After": "1"} if isinstance(exc, QueueFullError) else None
        return error_response(status_of(exc), str(exc), headers)

    async def timeout_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(504, str(exc) or f"the request took longer than {timeout_s} s")

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(400, f"bad request: {problems}")

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answer; the client learns only the kind
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error_response(
            500, f"internal server error ({type(exc).__name__}); the server log has the details"
        )

    app.add_exception_handler(Exception, server_error)
    app.add_exception_handler(TuneserveError, tuneserve_error)
    app.add_exception_handler(TimeoutError, timeout_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
