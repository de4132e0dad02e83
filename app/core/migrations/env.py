"""Alembic environment: run by ``app.core.db.migrate()`` (or the alembic CLI with alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from app.core.db import get_engine
from app.core.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    engine = get_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several API replicas may start at once: one migrates, the others wait for it.
            connection.execute(text("SELECT pg_advisory_lock(727340001)"))
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(727340001)"))
                connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
