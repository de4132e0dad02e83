"""`sngan demo`: trains on the synthetic dataset with no server and writes a sample grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.cli.cli_helpers import run_sngan, sngan_env


def test_demo_trains_and_writes_a_grid(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    result = run_sngan(
        "demo", "--steps", "4", "--ch", "8", "--batch-size", "8", "--n-dis", "1",
        "--out", str(out_dir),
        # one torch thread: the tests share two cores, and spin-waiting OpenMP threads are slow
        env=sngan_env(tmp_path / "data", OMP_NUM_THREADS="1"), cwd=tmp_path, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "step 4/4" in result.stderr
    grid = out_dir / "grid.png"
    assert result.stdout.strip().splitlines()[-1] == f"sample grid: {grid}"
    with Image.open(grid) as image:
        assert image.format == "PNG"
        assert image.size[0] == image.size[1] >= 8 * 32  # 64 images of 32x32, 8 a row
        # trained weights, not a blank canvas
        assert len(np.unique(np.asarray(image.convert("L")))) > 10
    assert list((out_dir / "checkpoints").glob("step_00000004.pt"))
