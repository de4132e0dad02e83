"""Checkpoint files: written atomically with a sha256 sidecar, verified before loading.

One file per checkpoint (`step_00001000.pt`) holding the full config, netG, netD, the EMA
generator, both optimizers, the step and the RNG states needed to continue (the learning rate
is a function of the step and the config). Its sha256 is written next to it
(`step_00001000.pt.sha256`); a load whose bytes do not match raises `CheckpointError` before
anything is deserialised.

Torch is imported by the functions that need it, so the API can find and verify checkpoints
(`newest_verified`) without loading it.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RunConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

_NAME = re.compile(r"^step_(\d{8,})\.pt$")


class CheckpointError(Exception):
    """A checkpoint that is missing, truncated or corrupt (its sha256 does not match)."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def step_of(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(state: dict[str, Any], path: Path) -> tuple[str, int]:
    """Write `state` to `path` atomically; returns (sha256, size in bytes).

    The sidecar is written after the file, so a crash between the two leaves a file with no
    sidecar, which `load_checkpoint` rejects as unverified.
    """
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)
    _atomic_write(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest, len(data)


def recorded_sha256(path: Path) -> str | None:
    side = path.with_name(path.name + ".sha256")
    try:
        return side.read_text().split()[0]
    except (OSError, IndexError):
        return None


def load_checkpoint(
    path: Path | str, expected_sha256: str | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Verify the bytes against `expected_sha256` (or the sidecar) and deserialise them."""
    import torch

    path = Path(path)
    data = _verified_bytes(path, expected_sha256)
    try:
        state: dict[str, Any] = torch.load(
            io.BytesIO(data), map_location=map_location, weights_only=True
        )
    except Exception as e:  # a file that verifies but does not deserialise
        raise CheckpointError(f"checkpoint {path} cannot be deserialised: {e}") from e
    return state


def verify_checkpoint(path: Path | str, expected_sha256: str | None = None) -> None:
    """Raise `CheckpointError` unless the file's sha256 matches the recorded one."""
    _verified_bytes(Path(path), expected_sha256)


def _verified_bytes(path: Path, expected_sha256: str | None) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    expected = expected_sha256 or recorded_sha256(path)
    if expected is None:
        raise CheckpointError(f"checkpoint {path} has no recorded sha256; refusing to load it")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated: sha256 {actual[:12]}… does not match "
            f"the recorded {expected[:12]}… ({len(data)} bytes)"
        )
    return data


def load_generator(
    path: Path | str,
    ema: bool = True,
    map_location: str | torch.device = "cpu",
    expected_sha256: str | None = None,
) -> tuple[nn.Module, RunConfig]:
    """Rebuild the generator from a checkpoint alone (EMA weights when present and `ema`)."""
    from .nets import build_generator

    state = load_checkpoint(path, expected_sha256, map_location)
    cfg = RunConfig.from_dict(state["config"])
    netG = build_generator(cfg.model)
    weights = state["ema_G"] if ema and state.get("ema_G") is not None else state["netG"]
    netG.load_state_dict(weights)
    return netG.to(map_location).eval(), cfg


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint files in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(step_of(p), p) for p in directory.iterdir()]
    return sorted((s, p) for s, p in found if s is not None)


_REMEMBERED_MAX = 256
_remembered: dict[tuple[str, int, int, str], bool] = {}
_remembered_lock = threading.Lock()


def verify_checkpoint_cached(path: Path, expected_sha256: str | None) -> None:
    """`verify_checkpoint`, remembered per (path, size, mtime, sha256), so a checkpoint served
    on every request is hashed once (a file rewritten in place changes its size or mtime)."""
    if expected_sha256 is None:
        raise CheckpointError(f"checkpoint {path} has no recorded sha256")
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    key = (str(path), st.st_size, st.st_mtime_ns, expected_sha256)
    with _remembered_lock:
        known = _remembered.get(key)
    if known is None:
        actual = _sha256_of(path)
        if actual is None:  # unreadable now: not remembered, the next call tries again
            raise CheckpointError(f"checkpoint {path} cannot be read")
        known = actual == expected_sha256
        with _remembered_lock:
            if len(_remembered) >= _REMEMBERED_MAX:
                _remembered.clear()
            _remembered[key] = known
    if not known:
        raise CheckpointError(f"checkpoint {path} does not match its recorded sha256")


def _sha256_of(path: Path) -> str | None:
    """The file's sha256, read in blocks; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


Verify = Callable[[Path, str | None], None]


def newest_verified(
    candidates: Iterable[tuple[int, Path, str | None]],
    verify: Verify = verify_checkpoint,
    on_bad: Callable[[int, Path, CheckpointError], None] | None = None,
) -> tuple[int, Path] | None:
    """The (step, path) of the first of `candidates` ``(step, path, expected sha256, or None
    for the sidecar's)``, given newest first, that `verify` accepts; `on_bad` hears of each
    one before it that fails. None when none verifies. Candidates are drawn one at a time, so
    none past the chosen one is looked at."""
    for step, path, sha256 in candidates:
        try:
            verify(path, sha256)
        except CheckpointError as e:
            if on_bad is not None:
                on_bad(step, path, e)
            continue
        return step, path
    return None


def latest_valid_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint in `directory` whose sha256 matches its sidecar."""
    newest_first = reversed(list_checkpoints(directory))
    found = newest_verified((step, path, None) for step, path in newest_first)
    return found[1] if found is not None else None


def remove_checkpoint(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    # its exports (models.export: "<name>.<sha>.<weights>.onnx", their metadata and locks)
    for sibling in path.parent.glob(glob.escape(path.name) + ".*"):
        sibling.unlink(missing_ok=True)
