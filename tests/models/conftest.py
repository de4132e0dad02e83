from typing import Any

import pytest
import torch

from models import RunConfig


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


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
