"""Choosing the newest checkpoint that verifies (the one function the worker's resume, the
API's ``latest`` and `latest_valid_checkpoint` share), and the remembered verification."""

from pathlib import Path

import pytest
import torch

from models.checkpoint import (
    CheckpointError,
    newest_verified,
    recorded_sha256,
    save_checkpoint,
    verify_checkpoint_cached,
)


def _write(directory: Path, step: int) -> tuple[int, Path, str]:
    path = directory / f"step_{step:08d}.pt"
    sha, _ = save_checkpoint({"step": step, "w": torch.full((4,), float(step))}, path)
    return step, path, sha


def test_the_newest_that_verifies_wins_and_the_bad_ones_are_reported(tmp_path):
    old, mid, new = (_write(tmp_path, s) for s in (1, 2, 3))
    new[1].write_bytes(new[1].read_bytes()[:-10])  # truncated
    drawn: list[int] = []
    bad: list[int] = []

    def candidates():
        for step, path, sha in (new, mid, old):
            drawn.append(step)
            yield step, path, sha

    chosen = newest_verified(candidates(), on_bad=lambda step, path, e: bad.append(step))
    assert chosen == (2, mid[1])
    assert bad == [3]
    assert drawn == [3, 2]  # nothing older than the chosen one is looked at


def test_none_verifies(tmp_path):
    step, path, _ = _write(tmp_path, 1)
    assert newest_verified([(step, path, "0" * 64)]) is None
    # None as the expected sha256 means the sidecar's
    assert newest_verified([(step, path, None)]) == (1, path)
    assert recorded_sha256(path) is not None


def test_the_remembered_verification_follows_a_rewritten_file(tmp_path):
    _, path, sha = _write(tmp_path, 1)
    verify_checkpoint_cached(path, sha)
    verify_checkpoint_cached(path, sha)  # remembered
    with pytest.raises(CheckpointError, match="does not match"):
        verify_checkpoint_cached(path, "0" * 64)
    path.write_bytes(path.read_bytes()[:-10])  # the size changes: hashed again
    with pytest.raises(CheckpointError, match="does not match"):
        verify_checkpoint_cached(path, sha)
    path.unlink()
    with pytest.raises(CheckpointError, match="cannot be read"):
        verify_checkpoint_cached(path, sha)
    with pytest.raises(CheckpointError, match="no recorded sha256"):
        verify_checkpoint_cached(path, None)
