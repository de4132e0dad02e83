"""API keys: issued once in plain text, stored as sha256, compared in constant time.

A key reads ``sngan_<id>_<secret>``. The id finds the row; the sha256 of the whole key is
compared with ``hmac.compare_digest``. Keys are never logged. The API authenticates with
`find_key`; the ``sngan keys`` commands create and revoke keys without the HTTP layer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.tables import ApiKey, utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "sngan"
# compared against when the key id is unknown, so both paths cost one digest comparison
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, owner: str) -> str:
    """Store a new key for `owner` (committed) and return it in plain text, the only time."""
    if not owner or len(owner) > 128:
        raise ValueError("owner must be 1 to 128 characters")
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
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


def list_keys(session: Session, owner: str | None = None) -> list[ApiKey]:
    """Keys (rows, never secrets), newest first; those of `owner` when given."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if owner is not None:
        query = query.where(ApiKey.owner == owner)
    return list(session.scalars(query))


def find_key(session: Session, key: str) -> ApiKey | None:
    """The key's row when `key` is valid and not revoked, else None."""
    parts = key.split("_", 2)
    key_id = parts[1] if len(parts) == 3 and parts[0] == KEY_PREFIX else ""
    row = session.get(ApiKey, key_id) if key_id else None
    stored = row.key_hash if row is not None else _DUMMY_HASH
    matches = hmac.compare_digest(stored, hash_key(key))
    if row is None or not matches or row.revoked_at is not None:
        return None
    return row
