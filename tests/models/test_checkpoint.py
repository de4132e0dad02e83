"""Checkpoints: atomic, sha256-verified, rebuild their generator alone."""

import hashlib

import numpy as np
import pytest

from models import (
    CheckpointError,
    Trainer,
    generate_images,
    latest_valid_checkpoint,
    load_checkpoint,
    load_generator,
)

from .conftest import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    Trainer(tiny_config(train={"steps": 10, "ema_decay": 0.9}), d, device="cpu").fit()
    return d


def test_sidecar_records_the_file_sha256(run_dir):
    path = run_dir / "checkpoints" / "step_00000010.pt"
    side = (run_dir / "checkpoints" / "step_00000010.pt.sha256").read_text().split()
    assert side == [hashlib.sha256(path.read_bytes()).hexdigest(), path.name]
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))  # no temp files left


def test_generator_rebuilt_from_the_checkpoint_alone(run_dir):
    path = run_dir / "checkpoints" / "step_00000010.pt"
    netG, cfg = load_generator(path)
    assert cfg.model.arch == "cnn32" and cfg.model.g_ch == 8
    a = generate_images(netG, cfg, 5, seed=11)
    b = generate_images(load_generator(path)[0], cfg, 5, seed=11)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, generate_images(netG, cfg, 5, seed=12))
    raw, _ = load_generator(path, ema=False)
    assert not np.array_equal(a, generate_images(raw, cfg, 5, seed=11))  # EMA differs


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar"])
def test_corrupt_or_truncated_checkpoints_are_rejected(run_dir, tmp_path, damage):
    src = run_dir / "checkpoints" / "step_00000010.pt"
    dst = tmp_path / src.name
    data = bytearray(src.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    if damage != "no_sidecar":
        (tmp_path / (src.name + ".sha256")).write_text(
            (run_dir / "checkpoints" / (src.name + ".sha256")).read_text()
        )
    with pytest.raises(
        CheckpointError, match="sha256" if damage != "no_sidecar" else "no recorded"
    ):
        load_checkpoint(dst)
    with pytest.raises(CheckpointError):
        load_generator(dst)


def test_expected_sha256_from_the_caller_wins(run_dir):
    path = run_dir / "checkpoints" / "step_00000010.pt"
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(path, expected_sha256="0" * 64)


def test_latest_valid_checkpoint_skips_a_corrupt_newest(run_dir, tmp_path):
    for step in (5, 10):
        name = f"step_{step:08d}.pt"
        for suffix in ("", ".sha256"):
            (tmp_path / (name + suffix)).write_bytes(
                (run_dir / "checkpoints" / (name + suffix)).read_bytes()
            )
    latest = latest_valid_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_00000010.pt"
    latest.write_bytes(latest.read_bytes()[:-100])
    latest = latest_valid_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_00000005.pt"
