"""One exception type for the API, mapped to the error body of API.md.

Every error answers ``{"error": {"code", "message", "details"}}``, FastAPI's own validation
errors and unknown routes included.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised anywhere in the request path; answered as the error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def not_found(kind: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident!s} not found")


def invalid(field: str, message: str, code: str = "validation_error") -> ApiError:
    """A 422 about one request field; the message starts with the field's name."""
    return ApiError(
        422, code, f"{field}: {message}", details=[{"field": field, "message": message}]
    )


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def field_name(loc: Sequence[int | str]) -> str:
    """('body', 'train', 'batch_size') -> 'train.batch_size'; ('query', 'n') -> 'n'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "request"


# An error body never grows with the request: at most this many details, each message and
# field name cut to this many characters (the input itself is never echoed).
MAX_DETAILS = 20
MAX_TEXT = 200


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "field": _cut(field_name(e.get("loc", ()))),
            "message": _cut(str(e.get("msg", ""))),
            "type": e.get("type"),
        }
        for e in errors[:MAX_DETAILS]
    ]


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    if len(exc.errors()) > MAX_DETAILS:
        message += f"; and {len(exc.errors()) - MAX_DETAILS} more errors"
    return JSONResponse(error_body("validation_error", message, details), status_code=422)


# FastAPI's answer to a body it cannot decode at all (bytes that are not UTF-8): a 400, where
# a body that is not JSON gets a 422. One answer for both: a 422 about the body.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        message = "body: not valid JSON (or not UTF-8)"
        details = [{"field": "body", "message": message, "type": "json_invalid"}]
        return JSONResponse(error_body("validation_error", message, details), status_code=422)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return JSONResponse(
        error_body(code, message), status_code=exc.status_code, headers=exc.headers or None
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database refused, dropped or timed out a connection: a 503 at once (the engine's
    short connect timeout bounds the wait), never a hang or a bare 500."""
    if isinstance(exc, sa_exc.DBAPIError) and not (
        exc.connection_invalidated
        or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    ):
        return await _unhandled(request, exc)  # a bug (integrity, syntax), not an outage
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.url.path,
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
    )
    return JSONResponse(
        error_body(
            "database_unavailable",
            "the database is unreachable right now; retry in a few seconds",
        ),
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body("internal_error", "internal server error; the cause has been logged"),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sa_exc.DBAPIError, _database_unavailable)
    app.add_exception_handler(sa_exc.TimeoutError, _database_unavailable)  # pool exhausted
    app.add_exception_handler(Exception, _unhandled)
