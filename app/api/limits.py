"""Request limits enforced before any route runs: one pure-ASGI middleware.

- **Body size.** A body larger than its limit is refused with a 413 naming the limit: at
  once when ``Content-Length`` says so (nothing is read), else as soon as the streamed bytes
  pass it (a chunked body). Uploads (``multipart/form-data``) get ``SNGAN_MAX_UPLOAD_BYTES``
  plus room for the multipart framing; every other body ``SNGAN_MAX_JSON_BODY_BYTES``. So no
  request, authenticated or not, makes the API buffer or parse more than that.
- **NUL bytes.** A NUL in the path, the query string (raw or ``%00``) or a header value is a
  422 here, in one place: no id, name, cursor or step carrying one reaches a route (PostgreSQL
  refuses NUL in text, which was a 500). NULs inside JSON strings are refused by the schema
  (``schemas.Text``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, error_body
from app.core.config import get_settings

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the uploaded file


class BodyTooLarge(ApiError):
    """The 413 of a body over its limit, naming the limit and its setting."""

    def __init__(self, field: str, limit: int, setting: str) -> None:
        super().__init__(
            413,
            "payload_too_large",
            f"{field}: larger than {limit} bytes (server limit SNGAN_{setting.upper()})",
            details={"field": field, "limit": limit},
        )


def body_limit(scope: Scope) -> tuple[int, BodyTooLarge]:
    """The byte limit of this request's body, and the error past it."""
    settings = get_settings()
    content_type = _header(scope, b"content-type") or b""
    if content_type.lower().startswith(b"multipart/form-data"):
        limit = settings.max_upload_bytes
        return limit + MULTIPART_OVERHEAD, BodyTooLarge("file", limit, "max_upload_bytes")
    limit = settings.max_json_body_bytes
    return limit, BodyTooLarge("body", limit, "max_json_body_bytes")


def nul_field(scope: Scope) -> str | None:
    """Where the request carries a NUL byte ('path', 'query', a header's name), or None."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    if b"\x00" in raw_path or b"%00" in raw_path or "\x00" in scope.get("path", ""):
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query:
        return "query"
    for name, value in scope.get("headers", ()):
        if b"\x00" in value:
            return name.decode("latin-1")
    return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = nul_field(scope)
        if where is not None:
            await _answer(send, 422, "validation_error", f"{where}: contains a NUL byte")
            return
        limit, error = body_limit(scope)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _answer(send, 413, error.code, error.message, error.details)
            return
        seen = 0
        started = answered = False

        async def limited_receive() -> Message:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not answered:
                    answered = True
                    if not started:
                        await _answer(send, 413, error.code, error.message, error.details)
                    # the app sees the client go away: it stops reading and its answer to
                    # that (FastAPI's 400) is dropped below
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _answer(send: Send, status: int, code: str, message: str, details: Any = None) -> None:
    body = json.dumps(error_body(code, message, details)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # the rest of an oversized body is never read: the client must not reuse
                # this connection for its next request
                *([(b"connection", b"close")] if status == 413 else []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
