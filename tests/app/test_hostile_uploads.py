"""Uploads that used to exhaust or fail a worker (issue 12, class 5) are refused at upload, on
both stacks: unbounded labels, truncated images; gray+alpha is recorded as the worker reads
it; a crash's leftover temp upload is swept."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.builders import npz_bytes, png_bytes, zip_bytes
from tests.clients import upload
from tests.stacks import Stack


def _error(response: httpx.Response, status: int, *mentions: str) -> str:
    assert response.status_code == status, response.text[:500]
    message = str(response.json()["error"]["message"])
    for text in mentions:
        assert text in message, message
    return message


@pytest.mark.parametrize("label", [1000, 2**31, 2_000_000_000])
def test_labels_past_the_class_limit_are_refused(
    stack: Stack, api: httpx.Client, label: int
) -> None:
    images = np.zeros((4, 8, 8, 3), np.uint8)
    labels = np.array([0, 1, 2, label], np.int64)
    response = upload(api, "big-label.npz", npz_bytes(images, labels))
    _error(response, 422, "SNGAN_MAX_NUM_CLASSES", "1000")


def test_labels_at_the_limit_are_accepted(stack: Stack, api: httpx.Client) -> None:
    images = np.zeros((2, 8, 8, 3), np.uint8)
    response = upload(api, "ok.npz", npz_bytes(images, np.array([0, 999])))
    assert response.status_code == 201, response.text
    assert response.json()["num_classes"] == 1000


def test_truncated_png_is_refused_at_upload(stack: Stack, api: httpx.Client) -> None:
    whole = png_bytes(32, 32)
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(
        noisy, format="PNG"
    )
    cut = noisy.getvalue()[: len(noisy.getvalue()) // 2]  # header intact, data cut
    response = upload(api, "cut.zip", zip_bytes({"a/1.png": whole, "a/2.png": cut}))
    _error(response, 422, "a/2.png")


def test_gray_alpha_is_one_channel(stack: Stack, api: httpx.Client) -> None:
    entries = {f"{i}.png": png_bytes(16, 16, mode="LA", value=90) for i in range(3)}
    response = upload(api, "la.zip", zip_bytes(entries))
    assert response.status_code == 201, response.text
    assert response.json()["channels"] == 1
