"""Conditional GETs for the polled routes: an ``ETag`` on each answer, 304 when the client's
``If-None-Match`` holds it.

The tag is a digest of the body's bytes, so it changes exactly when the answer does, whatever
changed it (the worker's progress, a cancel, a new metric point). A 304 still costs the reads
that make the body; it saves the client's download and parsing, and a browser sends the tag
by itself: ``Cache-Control: private, no-cache`` lets it keep the answer (only for this user)
on the condition that it asks again each time, which it does with ``If-None-Match``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Header, Response
from pydantic import BaseModel

CACHE_CONTROL = "private, no-cache"

IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        description="The ETag of an earlier answer: 304 with no body while it is still current.",
    ),
]

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the If-None-Match tag is the current one (no body)."}
}


def etag_of(body: bytes) -> str:
    return f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether `etag` is among the tags of an If-None-Match header (compared weakly, as
    RFC 9110 asks for this header)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def json_or_not_modified(model: BaseModel, if_none_match: str | None) -> Response:
    """`model` as JSON with its ETag, or a 304 when the client has those bytes. Serialized
    once, by pydantic, and returned as bytes: FastAPI does not validate and encode it again."""
    body = model.model_dump_json().encode()
    return body_or_not_modified(body, etag_of(body), if_none_match)


def body_or_not_modified(body: bytes, etag: str, if_none_match: str | None) -> Response:
    """JSON `body` (whose tag is `etag`) or a 304 when the client has those bytes."""
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
