"""What the trainer reports through, and what it returns (no torch: a sink can live anywhere)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# what an evaluation reports (models/evaluation.py), for G; with an EMA generator, each again
# with EMA_SUFFIX for it (`fid_ema`, ...)
EVALUATION_METRICS = ("is_mean", "is_std", "fid", "kid_mean", "kid_std")
EMA_SUFFIX = "_ema"


class TrainerSinks:
    """Where the trainer reports. Subclass and override what you need; defaults do nothing."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Called for every step (in order), and again at evaluation steps with IS/FID/KID
        (`EVALUATION_METRICS`, and the EMA generator's with `EMA_SUFFIX` when it is kept)."""

    def on_sample_grid(self, step: int, path: Path) -> None:
        """A PNG grid of the fixed-noise samples was written to `path`."""

    def on_checkpoint(self, step: int, path: Path, sha256: str, size_bytes: int) -> None:
        """A checkpoint was written (atomically) and its sidecar sha256 recorded."""

    def on_checkpoint_removed(self, step: int, path: Path) -> None:
        """An old checkpoint was deleted (only the last K plus pinned ones are kept)."""

    def on_best(self, step: int, fid: float) -> None:
        """G's FID at `step` (`fid`, not `fid_ema`) is the lowest so far; that step's
        checkpoint was just written and is kept whatever keep-last-K says (the previous best
        is pruned like any other)."""

    def should_stop(self) -> bool:
        """Polled between steps; True makes the trainer write a checkpoint and return."""
        return False


class DivergedError(Exception):
    """A loss became NaN or Inf; the last good checkpoint is kept."""

    def __init__(self, step: int, metrics: dict[str, float]) -> None:
        self.step = step
        self.metrics = metrics
        super().__init__(f"training diverged at step {step}: non-finite losses {metrics}")


@dataclass
class TrainResult:
    step: int
    stopped: bool
    checkpoint: Path | None
