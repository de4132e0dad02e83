"""A conditional SN-GAN trained on the labelled synthetic shapes, once per test run, and the
classifier that judges its samples: for the tests that need a generator that really learned
(tests/models/test_learning.py, the class sheets of tests/app/test_interpolations.py).

Training it takes about a minute of one CPU thread; each pytest process used to train its own
(three times a run). The first process to ask trains it under a file lock in a folder all the
run's processes share; the others wait, then load what it wrote.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import RunConfig
from models.data import SYNTHETIC_CLASSES

# Adam at 5e-4 (at the default 2e-4, 300 steps leave the classes' BN parameters too near their
# start to tell the classes apart); betas and the rest are the paper's defaults.
SHAPES = len(SYNTHETIC_CLASSES)
MODEL: dict[str, Any] = {"arch": "cnn32", "z_dim": 16, "g_ch": 16, "d_ch": 16, "conditional": True}
STEPS = 300
TRAIN: dict[str, Any] = {
    "steps": STEPS,
    "batch_size": 32,
    "n_dis": 1,
    "lr_g": 5e-4,
    "lr_d": 5e-4,
    "lr_decay": "none",
}
# Training this short drops a class on some seeds (measured, 1 thread: training seeds 0, 1,
# 3 and 4 make every class, 7-8 of 8 a row; 2 and 5 make one class badly or not at all)
TRAINING_SEEDS = 4


@dataclass(frozen=True)
class TrainedGAN:
    checkpoint: Path  # the trainer's own checkpoint file (and its .sha256 sidecar)
    sha256: str
    seed: int  # the training seed whose generator made every class


def config(seed: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {**MODEL, "num_classes": SHAPES},
            "train": {**TRAIN, "seed": seed},
            "data": {"source": "synthetic", "num_images": 2000},
            "checkpoint_every": 0,
            "sample_every": 0,
        }
    )


@functools.cache
def shape_classifier() -> torch.nn.Module:
    """models.quality's classifier (a small CNN with a reject class) trained on 4800 labelled
    shapes none of the GAN's training images is; deterministic, so each process makes its own."""
    from models.quality import train_classifier

    with torch.enable_grad():  # a first call may come from inside `recognised`
        return train_classifier("shapes")


@torch.no_grad()
def recognised(images: np.ndarray) -> np.ndarray:
    """The classifier's class for each uint8 (N, H, W, 3) image; SHAPES (its reject class)
    counts as no class."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return shape_classifier()(x).argmax(dim=1).numpy()  # type: ignore[no-any-return]


def trained_gan(folder: Path) -> TrainedGAN:
    """The generator, trained by the project's trainer in the first process that asks, in
    `folder` (shared by the run's processes). A run whose generator, asked for 8 of each class
    twice, makes fewer than 7 of 8 of some class is GAN luck, not the project's doing: the next
    training seed is tried (seed 0 passes where the thresholds were measured)."""
    from filelock import FileLock

    from models.checkpoint import recorded_sha256

    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "trained.json"
    with FileLock(folder / "train.lock"):
        if not record.exists():
            checkpoint, seed = _train(folder)
            record.write_text(json.dumps({"checkpoint": str(checkpoint), "seed": seed}))
    found = json.loads(record.read_text())
    checkpoint = Path(found["checkpoint"])
    sha = recorded_sha256(checkpoint)
    assert sha is not None
    return TrainedGAN(checkpoint, sha, int(found["seed"]))


def _train(folder: Path) -> tuple[Path, int]:
    import pytest

    from models import Trainer, generate_images, load_generator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as measured
    try:
        for seed in range(TRAINING_SEEDS):
            cfg = config(seed)
            run = Trainer(cfg, folder / f"seed{seed}", device="cpu").fit()
            assert run.checkpoint is not None
            netG, _ = load_generator(run.checkpoint)
            labels = [c for c in range(SHAPES) for _ in range(8)]
            with torch.no_grad():
                made = [
                    recognised(generate_images(netG, cfg, 32, noise, labels))
                    for noise in (1000, 1001)  # not a seed the tests ask for
                ]
            hits = [(m.reshape(SHAPES, 8) == np.arange(SHAPES)[:, None]).sum(1) for m in made]
            if min(h.min() for h in hits) >= 7:
                return run.checkpoint, seed
    finally:
        torch.set_num_threads(threads)
    pytest.fail(f"no training seed of {TRAINING_SEEDS} made every class")
