"""The formats ``GET /v1/jobs/{id}/samples`` (and the walks and exports) answer in, and the
file suffix of each: the route names its download after it and ``sngan samples`` its default
output file."""

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

# ``GET /v1/jobs/{id}/interpolations``: an animated GIF or WebP, a PNG strip, or npy frames
WalkFormat = Literal["gif", "webp", "png", "npy"]
WALK_MEDIA_TYPES = {
    "gif": "image/gif",
    "webp": "image/webp",
    "png": "image/png",
    "npy": "application/octet-stream",
}
# ``GET /v1/jobs/{id}/export``: ONNX, or torch.export's program (TorchScript is deprecated)
ExportFormat = Literal["onnx", "pt2"]
EXPORT_SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}
EXPORT_MEDIA_TYPES = {"onnx": "application/onnx", "pt2": "application/zip"}
