"""/v1/keys: a key lists and revokes its own owner's keys (admin is `sngan keys`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import PrincipalDep, SessionDep
from app.api.errors import not_found
from app.api.schemas import KeyPublic, KeysPublic, error_responses
from app.core import security

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.get("", response_model=KeysPublic, responses=error_responses(401))
def list_keys(principal: PrincipalDep, session: SessionDep) -> KeysPublic:
    """The caller's owner's keys, newest first (ids and dates; secrets are never stored)."""
    rows = security.list_keys(session, principal.owner)
    return KeysPublic(data=[KeyPublic.from_row(k, current=k.id == principal.key_id) for k in rows])


@router.delete(
    "/{key_id}", status_code=204, response_class=Response, responses=error_responses(401, 404)
)
def revoke_key(key_id: str, principal: PrincipalDep, session: SessionDep) -> Response:
    """Revoke one of the owner's keys (the caller's own included); 404 for any other key, so
    ids cannot be probed. Each API process may accept a revoked key for up to
    SNGAN_AUTH_CACHE_S after it last verified it."""
    owned = {k.id for k in security.list_keys(session, principal.owner) if k.revoked_at is None}
    if key_id not in owned or not security.revoke_api_key(session, key_id):
        raise not_found("key", key_id)
    return Response(status_code=204)
