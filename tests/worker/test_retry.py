"""The one retry loop of the worker's database writes (final metric flush, the job's outcome)."""

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from worker.sinks import retry_while_db_down

# nothing listens on port 1: connecting fails at once with a real driver error
DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"


def test_gives_up_after_the_timeout_with_the_databases_error():
    engine = create_engine(DOWN)
    tries: list[int] = []

    def write() -> None:
        tries.append(1)
        with engine.connect() as conn:
            conn.execute(text("select 1"))

    with pytest.raises(OperationalError):
        retry_while_db_down(write, timeout_s=0.0, what="test")
    assert len(tries) == 1


def test_retries_until_the_database_answers(tmp_path: Path):
    engines = [create_engine(DOWN), create_engine(f"sqlite:///{tmp_path / 'up.db'}")]
    tries: list[str] = []

    def write() -> int:
        engine = engines[min(len(tries), 1)]  # down on the first try, up on the second
        tries.append(engine.url.drivername)
        with engine.connect() as conn:
            return int(conn.execute(text("select 7")).scalar_one())

    assert retry_while_db_down(write, timeout_s=60.0, what="test") == 7
    assert tries == ["postgresql+psycopg", "sqlite"]
