"""Every error the service answers is JSON: ``{"status", "error", "detail"}``."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from sdrindex.errors import (
    BundleError,
    DataError,
    ParameterError,
    SDRIndexError,
    ShardUnavailableError,
)

log = logging.getLogger("service")

#: The status a request whose client went away is counted under (nginx's "client closed
#: request"): never sent, since nobody is listening, and never a 5xx in the metrics.
CLIENT_CLOSED = 499


class ApiError(Exception):
    """An error answered to the client with ``status`` and a readable ``detail``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = int(status)
        self.detail = detail
        self.headers = headers or {}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def error_body(status: int, detail: str) -> bytes:
    """The JSON body of an error answer: ``{"status", "error", "detail"}``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Client Closed Request" if status == CLIENT_CLOSED else "Error"
    return json.dumps({"status": status, "error": phrase, "detail": detail}).encode()


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An error answer with :func:`error_body`."""
    return Response(
        error_body(status, detail), status, headers=headers, media_type="application/json"
    )


def from_library(exc: SDRIndexError) -> ApiError:
    """Map the library's exception family to HTTP statuses."""
    if isinstance(exc, ParameterError):
        return ApiError(422, str(exc))
    if isinstance(exc, DataError):
        return ApiError(422, str(exc))
    if isinstance(exc, ShardUnavailableError):
        # a shard's actors restart in about a second; a lost node takes longer
        return ApiError(503, str(exc), {"Retry-After": "1"})
    if isinstance(exc, BundleError):
        return ApiError(503, f"bundle unavailable: {exc}")
    return ApiError(500, str(exc))


def _readable(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body")]
        where = ".".join(loc) or "request"
        got = err.get("input")
        shown = "" if got is None or isinstance(got, dict | list) else f" (got {got!r})"
        parts.append(f"{where}: {err.get('msg', 'invalid')}{shown}")
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.detail, exc.headers)

    @app.exception_handler(SDRIndexError)
    async def _library_error(request: Request, exc: SDRIndexError) -> Response:
        api = from_library(exc)
        return error_response(api.status, api.detail, api.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(422, _readable(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            detail = f"method {request.method} not allowed on {request.url.path} (see /docs)"
        return error_response(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client closed the connection before its body arrived: nothing failed here.
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        log.info(
            "client %s disconnected during %s %s (request not completed)",
            request.client.host if request.client else "?",
            request.method,
            request.url.path,
        )
        request.app.state.metrics.disconnects.labels(endpoint).inc()
        return error_response(CLIENT_CLOSED, "client disconnected before the request ended")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")
