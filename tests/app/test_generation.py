"""Generation from a real checkpoint, in process: byte-reproducible encodings, the bounded
generator cache, and a corrupt checkpoint refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.api.services import generation
from app.api.services.generation import GeneratorCache, UnusableCheckpoint
from app.core.formats import SampleFormat


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from models import RunConfig, Trainer
    from models.checkpoint import recorded_sha256

    cfg = RunConfig.from_dict(
        {
            "model": {"arch": "cnn32", "z_dim": 16, "g_ch": 8, "d_ch": 8},
            "train": {"steps": 2, "batch_size": 4, "n_dis": 1, "ema_decay": 0.9},
            "data": {"source": "synthetic", "num_images": 16},
            "checkpoint_every": 2,
            "sample_every": 2,
        }
    )
    out = tmp_path_factory.mktemp("run")
    result = Trainer(cfg, out, device="cpu").fit()
    assert result.checkpoint is not None
    sha = recorded_sha256(result.checkpoint)
    assert sha is not None
    return result.checkpoint, sha


def test_same_inputs_same_bytes(checkpoint: tuple[Path, str]) -> None:
    path, sha = checkpoint
    first = generation.generate(path, sha, n=6, seed=11, labels=None, ema=True)
    again = generation.generate(path, sha, n=6, seed=11, labels=None, ema=True)
    other = generation.generate(path, sha, n=6, seed=12, labels=None, ema=True)
    raw = generation.generate(path, sha, n=6, seed=11, labels=None, ema=False)
    assert first.shape == (6, 32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, raw)  # the EMA weights differ from netG's
    formats: tuple[SampleFormat, ...] = ("grid", "zip", "npy")
    for fmt in formats:
        assert generation.encode(first, fmt) == generation.encode(again, fmt)
    with zipfile.ZipFile(io.BytesIO(generation.encode(first, "zip"))) as zf:
        assert len(zf.namelist()) == 6
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in zf.infolist())
    png = Image.open(io.BytesIO(generation.encode(first[:1], "png")))
    assert np.array_equal(np.asarray(png), first[0])


def test_labels_need_a_conditional_generator(checkpoint: tuple[Path, str]) -> None:
    path, sha = checkpoint
    with pytest.raises(ValueError, match="not class-conditional"):
        generation.generate(path, sha, n=2, seed=0, labels=[0, 1], ema=True)


def test_cache_is_bounded(checkpoint: tuple[Path, str]) -> None:
    path, sha = checkpoint
    cache = GeneratorCache(size=1)
    ema = cache.get(path, sha, ema=True, device="cpu")
    assert cache.get(path, sha, ema=True, device="cpu") is ema
    cache.get(path, sha, ema=False, device="cpu")  # evicts the EMA generator
    assert len(cache._items) == 1
    assert cache.get(path, sha, ema=True, device="cpu") is not ema


def test_a_checkpoint_that_does_not_verify_is_refused(
    checkpoint: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha = checkpoint
    corrupt = tmp_path / path.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(UnusableCheckpoint, match="corrupt"):
        GeneratorCache(size=1).get(corrupt, sha, ema=True, device="cpu")
