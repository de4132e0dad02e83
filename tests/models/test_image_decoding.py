"""One image decoder for the upload check and the worker (models/images.py): 16-bit gray is
scaled, not clipped; gray+alpha is one channel; a truncated file is an error, not a half image;
and loading the largest array the limits admit stays within its computed memory bound."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import DatasetError, DataSpec, load_dataset
from models.data import RESIZE_CHUNK_BYTES
from models.images import ImageError, channels_of, decode_image


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_16_bit_gray_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    pixels = decode_image(_png(Image.fromarray(ramp)))
    assert pixels.shape == (64, 64, 1)
    expected = np.rint(ramp / 257).astype(np.uint8)
    assert np.array_equal(pixels[:, :, 0], expected)
    assert (pixels == 255).mean() < 0.01  # clipping made 99.6% of a ramp's pixels 255


def test_gray_alpha_is_one_channel_where_the_worker_reads_it(tmp_path: Path) -> None:
    la = Image.new("LA", (32, 32), (77, 200))
    assert channels_of(la.mode) == 1
    assert decode_image(_png(la)).shape == (32, 32, 1)
    archive = tmp_path / "la.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.png", _png(la))
    data = load_dataset(DataSpec(source="zip", path=str(archive)), 32)
    assert data.channels == 1
    assert int(data.images[0, 0, 5, 5]) == 77


def test_truncated_image_is_an_error(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8)
    data = _png(Image.fromarray(noise))
    with pytest.raises(ImageError):
        decode_image(data[: len(data) // 2])
    archive = tmp_path / "cut.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cut.png", data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.png"):
        load_dataset(DataSpec(source="zip", path=str(archive)), 32)


_PROBE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np, torch, torch.nn.functional as F
    from models import DataSpec, load_dataset
    F.interpolate(torch.zeros(1, 3, 8, 8), size=(4, 4), mode="bilinear", antialias=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = load_dataset(DataSpec(source="npz", path=sys.argv[1]), int(sys.argv[2]))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
    """
)


def test_loading_the_largest_array_stays_under_its_bound(tmp_path: Path) -> None:
    """The worker's dataset-loading peak is bounded by the raw array (at most
    SNGAN_MAX_UNCOMPRESSED_BYTES), its output at the model's resolution and a fixed chunk of
    floats; here scaled down (197 MB raw). Resizing 2048 images at once, as before, took
    1,017 MB for this case."""
    n, side, c, resolution = 4000, 128, 3, 32
    path = tmp_path / "big.npz"
    np.savez_compressed(path, images=np.full((n, side, side, c), 7, np.uint8))
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), str(resolution)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    peak = int(out.stdout.strip().splitlines()[-1])
    bound = n * side * side * c + n * c * resolution**2 + 3 * RESIZE_CHUNK_BYTES
    assert peak <= bound, (peak, bound)
