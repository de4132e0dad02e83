"""API keys: issued once in plain text, stored as sha256, compared in constant time.

A key reads ``sngan_<id>_<secret>``. The id finds the row; the sha256 of the whole key is
compared with ``hmac.compare_digest``. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.errors import ApiError
from app.api.ratelimit import check_rate
from app.core.config import get_settings
from app.core.db import get_session, session_scope
from app.core.tables import ApiKey, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCAL_OWNER = "local"
_PREFIX = "sngan"
# compared against when the key id is unknown, so both paths cost one digest comparison
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class Principal:
    owner: str
    key_id: str | None  # None when auth is off


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, owner: str) -> str:
    """Store a new key for `owner` (committed) and return it in plain text, the only time."""
    if not owner or len(owner) > 128:
        raise ValueError("owner must be 1 to 128 characters")
    key_id = secrets.token_hex(8)
    key = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(id=key_id, owner=owner, key_hash=hash_key(key), created_at=utcnow()))
    session.commit()
    log.info("created API key id=%s for owner %s", key_id, owner)
    return key


def revoke_api_key(session: Session, key_id: str) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.commit()
    return True


def verify_api_key(session: Session, key: str) -> Principal | None:
    parts = key.split("_", 2)
    key_id = parts[1] if len(parts) == 3 and parts[0] == _PREFIX else ""
    row = session.get(ApiKey, key_id) if key_id else None
    stored = row.key_hash if row is not None else _DUMMY_HASH
    matches = hmac.compare_digest(stored, hash_key(key))
    if row is None or not matches or row.revoked_at is not None:
        return None
    return Principal(owner=row.owner, key_id=row.id)


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def current_principal(
    session: Annotated[Session, Depends(get_session)], credentials: BearerDep
) -> Principal:
    """The FastAPI dependency: who is calling (401 without a valid key, 429 over the rate)."""
    return authenticate(session, credentials)


def authenticate(session: Session, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """Who is calling, for routes that resolve it inside their own database work."""
    if get_settings().auth == "off":
        return Principal(owner=LOCAL_OWNER, key_id=None)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    principal = verify_api_key(session, credentials.credentials)
    if principal is None:
        raise _unauthorized("invalid or revoked API key")
    assert principal.key_id is not None
    check_rate(principal.key_id, get_settings().rate_limit_per_minute)
    return principal


async def authorized(
    credentials: HTTPAuthorizationCredentials | None, work: Callable[[Session, Principal], T]
) -> T:
    """Authenticate and do `work` with one session, in one trip to the thread pool. For the
    routes polled at high rates: the dependency route costs four trips (session, key,
    handler, session close), each event-loop time (GET /v1/jobs/{id}: 1.8 -> 0.9 ms)."""

    def run() -> T:
        with session_scope() as session:
            return work(session, authenticate(session, credentials))

    return await run_in_threadpool(run)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


PrincipalDep = Annotated[Principal, Depends(current_principal)]
SessionDep = Annotated[Session, Depends(get_session)]
