"""The formats ``GET /v1/jobs/{id}/samples`` answers in, and the file suffix of each: the
route names its download after it and ``sngan samples`` its default output file."""

from __future__ import annotations

from typing import Literal

SampleFormat = Literal["grid", "png", "zip", "npy"]
MEDIA_TYPES = {
    "grid": "image/png",
    "png": "image/png",
    "zip": "application/zip",
    "npy": "application/octet-stream",
}
SAMPLE_SUFFIX = {"grid": ".png", "png": ".png", "zip": ".zip", "npy": ".npy"}
