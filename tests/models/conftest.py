from typing import Any

import pytest
import torch

from models import RunConfig


@pytest.fixture(autouse=True)
def _threads():
    # One thread: these nets are too small to gain from a second, and on a shared 2-core box
    # OpenMP threads spin-waiting for a descheduled peer made a 20-step test take 188-349 s
    # wall (200 s CPU for two tests) against 9-11 s (15 s CPU) on one thread.
    torch.set_num_threads(1)


def tiny_config(**overrides: Any) -> RunConfig:
    """A cnn32/resnet32 small enough to train a few steps a second on a CPU core."""
    d: dict[str, Any] = {
        "model": {"arch": "cnn32", "g_ch": 8, "d_ch": 8, "z_dim": 16},
        "train": {"steps": 20, "batch_size": 8, "n_dis": 2, "seed": 3, "log_every": 4},
        "data": {"source": "synthetic", "num_images": 256},
        "checkpoint_every": 5,
        "sample_every": 10,
        "keep_last": 100,
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            d[key] = {**d.get(key, {}), **value}
        else:
            d[key] = value
    return RunConfig.from_dict(d)
