"""`sngan keys`: API key administration, straight on the database (no server needed)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.console import err, fail, out

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
