"""How failures become HTTP responses: the one place that maps them.

A `SandboxerError` answers with its class's `http_status` and a body
``{"error": {"code", "message", "details"}}``; starlette's own HTTP
exceptions (unknown route, wrong method) answer in the same shape; anything
else is a bug, logged with its traceback and answered with a generic 500
whose body never contains the traceback.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandboxer.errors import AuthenticationError, InvalidInputError, SandboxerError
from sandboxer.http.schemas import ErrorDetail, ErrorResponse
from sandboxer.models import to_json

logger = logging.getLogger(__name__)

HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class PayloadTooLargeError(InvalidInputError):
    """A JSON request body is larger than the server accepts."""

    code = "payload_too_large"
    http_status = 413


INTERNAL_MESSAGE = "internal server error; the server log has the details"


def error_detail_for(error: Exception) -> ErrorDetail:
    """The error body's inner object; unexpected errors are logged, not shown."""
    if isinstance(error, SandboxerError):
        return ErrorDetail(
            code=error.code, message=error.message, details=_plain(error.details)
        )
    logger.error("unexpected error: %s", error, exc_info=error)
    return ErrorDetail(code="internal", message=INTERNAL_MESSAGE)


def error_body(code: str, message: str) -> Any:
    return to_json(ErrorResponse(error=ErrorDetail(code=code, message=message)))


def response_for(error: Exception) -> Response:
    """The response for any error: its mapped status, or 500 for a bug."""
    error = _unwrap(error)
    detail = error_detail_for(error)
    status = error.http_status if isinstance(error, SandboxerError) else 500
    headers = (
        {"WWW-Authenticate": "Bearer"}
        if isinstance(error, AuthenticationError)
        else None
    )
    return JSONResponse(
        to_json(ErrorResponse(error=detail)), status_code=status, headers=headers
    )


async def handle_sandboxer_error(request: Request, error: Exception) -> Response:
    return response_for(error)


async def handle_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = HTTP_CODES.get(error.status_code, "http_error")
    if error.status_code == 404:
        message = (
            f"no route for {request.method} {request.url.path}; "
            "GET /v1/openapi.json lists the routes"
        )
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    return JSONResponse(
        error_body(code, message), status_code=error.status_code, headers=error.headers
    )


class ErrorBoundary:
    """ASGI middleware answering 500 for any exception nothing else handled.

    If the response had already started (a stream failed half-way), the
    exception is re-raised so the server aborts the connection: the client
    then sees a truncated response, never a seemingly complete one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if started:
                raise
            await response_for(error)(scope, receive, send)


def _unwrap(error: Exception) -> Exception:
    """The one exception inside (nested) single-member exception groups."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    """Details as JSON-safe values (anything unusual becomes its string)."""
    plain: dict[str, Any] = {}
    for key, value in details.items():
        finite = not isinstance(value, float) or math.isfinite(value)
        if value is None or (isinstance(value, str | int | float | bool) and finite):
            plain[str(key)] = value
        else:
            plain[str(key)] = str(value)
    return plain
