"""Engine, sessions and migrations.

Nothing connects at import time: engines are built on first use, one per URL, so tests and
the worker can point them at another database.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import get_settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _database_url(url: str | None) -> str:
    resolved = url or get_settings().database_url
    assert resolved is not None  # filled by Settings' validator
    return resolved


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    url = _database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The API, the worker and the tests share the file: wait on locks instead of failing.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # A database that is down answers a request with a 503 within seconds, not a hang:
        # short connect and pool waits, and pooled connections checked before use (a restart
        # leaves them dead).
        connect_args["connect_timeout"] = 3
    # As many connections as the thread pool runs sync routes at once (anyio's 40), so a
    # burst of requests waits for a thread, never for a connection (pool_timeout -> 503).
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=30,
        pool_timeout=10,
        connect_args=connect_args,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the worker's writes
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache(maxsize=8)
def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def get_session() -> Iterator[Session]:
    """The FastAPI dependency: one session per request."""
    with session_factory()() as session:
        yield session


session_scope = contextlib.contextmanager(get_session)
"""The same for tasks and scripts: ``with session_scope() as session: ...``."""


def ping(url: str | None = None) -> None:
    """Raise unless the database answers ``SELECT 1``."""
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Run ``alembic upgrade <revision>`` programmatically (the only way the schema is made)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed out of band: a URL's '%' would be read as configparser interpolation.
    cfg.attributes["database_url"] = _database_url(url)
    command.upgrade(cfg, revision)
    log.info("database schema at %s", revision)
