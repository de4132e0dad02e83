"""`sngan keys create` against a real (SQLite) database, in a separate process."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app.api import deps as auth
from tests.cli.cli_helpers import run_sngan, sngan_env


def test_keys_create_prints_a_working_key_on_the_last_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = sngan_env(data_dir)

    first = run_sngan("keys", "create", "--owner", "alice", env=env, cwd=tmp_path)
    second = run_sngan("keys", "create", "--owner", "bob", env=env, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    key_a = first.stdout.strip().splitlines()[-1]
    key_b = second.stdout.strip().splitlines()[-1]
    assert key_a != key_b
    assert " " not in key_a and len(key_a) >= 32

    # The printed key is the one the database knows, for the right owner.
    engine = create_engine(f"sqlite:///{data_dir / 'sngan.db'}")
    with Session(engine) as session:
        principal = auth.verify_api_key(session, key_a)
        assert principal is not None and principal.owner == "alice"
        principal = auth.verify_api_key(session, key_b)
        assert principal is not None and principal.owner == "bob"
        assert auth.verify_api_key(session, key_a + "x") is None
    engine.dispose()


def test_keys_create_refuses_an_empty_owner(tmp_path: Path) -> None:
    result = run_sngan(
        "keys", "create", "--owner", "", env=sngan_env(tmp_path / "data"), cwd=tmp_path
    )

    assert result.returncode != 0
    assert "owner" in result.stderr
