"""Decoding one image file to uint8 pixels: the one definition the API's upload check and the
worker's dataset loader share (numpy and Pillow only, no torch), so an image accepted at
upload is exactly one the worker can read, with the channels the upload recorded.

- Every image is decoded whole (``load``): truncated or corrupt data is an `ImageError`, never
  a half-read image or a traceback in the worker.
- Gray images, with or without alpha, are 1 channel; everything else is 3 (RGB). Alpha is
  dropped.
- 16-bit and 32-bit gray (``I;16*``, ``I``, ``F``) are scaled to 8 bits (x / 257: 65535 ->
  255), not clipped at 255.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

# Pillow modes of gray images (with alpha: LA, La, PA is palette -> RGB)
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})  # over 8 bits per pixel
_WIDE_SCALE = 65535 / 255  # 16-bit full scale onto 8 bits


class ImageError(ValueError):
    """An image that cannot be decoded whole."""


def channels_of(mode: str) -> int:
    """The channels an image of Pillow `mode` is read with: 1 (gray) or 3 (colour)."""
    return 1 if mode in _GRAY_MODES else 3


def decode_image(data: bytes | Path, max_pixels: int | None = None) -> np.ndarray:
    """The image's pixels, uint8 (H, W, C) with C = `channels_of(mode)`.

    Raises `ImageError` for a file that does not decode whole, or one of more than
    `max_pixels` pixels (checked from the header, before decoding).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as src:
                if max_pixels is not None and src.width * src.height > max_pixels:
                    raise ImageError(f"{src.width}x{src.height} pixels exceed {max_pixels}")
                src.load()  # the whole image: a truncated file fails here
                return _pixels(src)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        raise ImageError(f"not a readable image ({e})") from None


def _pixels(src: object) -> np.ndarray:
    from PIL import Image

    assert isinstance(src, Image.Image)
    mode = src.mode
    if mode in _WIDE_MODES:
        wide = np.asarray(src, dtype=np.float64)
        arr = np.clip(np.rint(wide / _WIDE_SCALE), 0, 255).astype(np.uint8)
    elif channels_of(mode) == 1:
        arr = np.asarray(src.convert("L"), dtype=np.uint8)
    else:
        arr = np.asarray(src.convert("RGB"), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr
