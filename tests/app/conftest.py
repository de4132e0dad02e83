"""Fixtures of the webhook tests (tests/app/test_webhooks.py, test_webhook_addresses.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stacks import free_port
from tests.webhook_receiver import Receiver


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A receiver on a free port, not started yet (a test may want it down first)."""
    recv = Receiver(free_port(), tmp_path / "received.jsonl")
    yield recv
    recv.stop()
