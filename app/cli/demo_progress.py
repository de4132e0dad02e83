"""The demo trainer's sinks: progress lines on stderr. A module of its own because it
subclasses ``models.TrainerSinks`` and so imports torch, which only ``sngan demo`` may load."""

from __future__ import annotations

import time
from pathlib import Path

from app.cli.console import err
from app.cli.watch import fmt_eta
from models.trainer import TrainerSinks


class DemoProgress(TrainerSinks):
    """One line per ~2 s of training (and one at the last step), and each training grid."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.last = 0.0

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self.last < 2.0 and step != self.steps:
            return
        self.last = now
        sps = metrics.get("steps_per_s") or 0.0
        eta = fmt_eta((self.steps - step) / sps) if sps else "-"
        err.print(
            f"step {step}/{self.steps} loss_d={metrics.get('loss_d', float('nan')):.4f} "
            f"loss_g={metrics.get('loss_g', float('nan')):.4f} {sps:.1f} steps/s eta {eta}"
        )

    def on_sample_grid(self, step: int, path: Path) -> None:
        err.print(f"training samples at step {step}: {path}")
