"""`sngan keys`: API key administration, straight on the database (no server needed).

Whoever can run these can read the database, so they act for every owner: create a key for
anyone, list every key, revoke any. Over HTTP a key can only list and revoke its own owner's
keys (``/v1/keys``): the service has no admin role to check, so admin stays here.
"""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.console import err, fail, out, print_json

keys_app = typer.Typer(help="API keys (needs direct access to the database).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="Who the key belongs to.")],
) -> None:
    """Create an API key; prints it alone on the last line (it is shown only once)."""
    from app.core import db, security

    db.migrate()
    with db.session_scope() as session:
        try:
            key = security.create_api_key(session, owner)
        except ValueError as exc:
            fail(str(exc))
    err.print(f"created an API key for owner '{owner}' (store it now: it is shown only once)")
    out.print(key)


@keys_app.command("list")
def keys_list(
    owner: Annotated[str | None, typer.Option(help="Only this owner's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """List keys: id, owner, created, revoked (the secrets are not stored, only their hash)."""
    from app.core import db, security

    db.migrate()
    with db.session_scope() as session:
        rows = [
            {
                "id": k.id,
                "owner": k.owner,
                "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in security.list_keys(session, owner)
        ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        revoked = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        out.print(f"{row['id']}  {row['owner']}  {row['created_at']}  {revoked}", markup=False)
    if not rows:
        err.print("no keys")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (`sngan keys list`).")],
) -> None:
    """Revoke a key: requests with it are refused from then on (after at most
    SNGAN_AUTH_CACHE_S in each API process that verified it recently)."""
    from app.core import db, security

    db.migrate()
    with db.session_scope() as session:
        if not security.revoke_api_key(session, key_id):
            fail(f"no active key {key_id!r}")
    err.print(f"revoked key {key_id}")
    out.print(key_id)
