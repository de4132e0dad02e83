"""Dataset uploads: checked before decoding, every failure a 4xx naming the field and limit,
and nothing partial left behind."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from tests.builders import insert_job, npz_bytes, png_bytes, shapes, zip_bytes
from tests.clients import upload
from tests.stacks import Stack


def assert_rejected(response: Any, status: int, *mentions: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].startswith("file"), error
    for text in mentions:
        assert text in error["message"], error["message"]


def leftovers(stack: Stack) -> list[str]:
    root = stack.data_dir / "datasets"
    found = [p.name for p in root.iterdir() if p.name.startswith(".tmp")]
    found += [p.name for p in (root / ".incoming").glob("*")]
    return found


def test_npz_upload_list_get_delete(stack: Stack, api: httpx.Client) -> None:
    images, labels = shapes(40, size=24, channels=1)
    created = upload(api, "grey.npz", npz_bytes(images[..., 0], labels))
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert dataset["num_images"] == 40
    assert dataset["image_size"] == [24, 24]
    assert dataset["channels"] == 1
    assert dataset["num_classes"] == int(labels.max()) + 1
    assert dataset["format"] == "npz"

    assert api.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    assert [d["id"] for d in api.get("/v1/datasets").json()["data"]] == [dataset["id"]]
    folder = stack.data_dir / "datasets" / dataset["id"]
    assert (folder / "data.npz").is_file()

    assert api.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert api.get(f"/v1/datasets/{dataset['id']}").status_code == 404
    assert not folder.exists()


def test_zip_with_class_folders(api: httpx.Client) -> None:
    entries = {f"cat/{i}.png": png_bytes(40, 30) for i in range(3)}
    entries |= {f"dog/{i}.jpg": _jpeg(40, 30) for i in range(2)}
    entries["readme.txt"] = b"ignored"
    entries["__MACOSX/cat/._0.png"] = b"resource fork"
    response = upload(api, "pets.zip", zip_bytes(entries))
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["num_images"], dataset["num_classes"], dataset["channels"]) == (5, 2, 3)
    assert dataset["image_size"] == [30, 40]


def test_flat_greyscale_zip_has_no_classes(api: httpx.Client) -> None:
    entries = {f"{i}.png": png_bytes(16, 16, mode="L") for i in range(4)}
    dataset = upload(api, "flat.zip", zip_bytes(entries)).json()
    assert (dataset["num_images"], dataset["num_classes"], dataset["channels"]) == (4, 0, 1)


def _jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # allow_pickle is on for saving object arrays
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with almost none of the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(64))  # a few bytes of a 30 GB image
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _raw_zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name)  # as given: zipfile would clean up '/' and '..' itself
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("filename", "payload", "status", "mentions"),
    [
        ("slip.zip", _raw_zip("../evil.png", png_bytes(8, 8)), 422, ["..", "evil.png"]),
        ("abs.zip", _raw_zip("/etc/evil.png", png_bytes(8, 8)), 422, ["absolute"]),
        ("bomb.zip", _raw_zip("a.png", bytes(9 * 1024 * 1024)), 413, ["8388608"]),
        ("big.zip", zip_bytes({"a.png": png_bytes(300, 20)}), 422, ["256", "SNGAN_MAX_IMAGE_SIDE"]),
        ("gif.zip", zip_bytes({"a.gif": b"GIF89a"}), 422, ["PNG and JPEG"]),
        ("fake.zip", zip_bytes({"a.png": b"not an image"}), 422, ["a.png"]),
        ("none.zip", zip_bytes({"a.txt": b"text"}), 422, ["no PNG or JPEG"]),
        ("text.npz", b"plain text, not an archive", 422, ["not a .npz or .zip"]),
        ("many.npz", npz_bytes(np.zeros((501, 4, 4), np.uint8)), 413, ["501", "500"]),
        ("float.npz", npz_bytes(np.zeros((4, 8, 8), np.float32)), 422, ["uint8"]),
        (
            "noimg.npz",
            _npz(x=np.zeros(3)),
            422,
            ["'images'"],
        ),
        (
            "labels.npz",
            npz_bytes(np.zeros((4, 8, 8), np.uint8), np.zeros(3, np.int64)),
            422,
            ["'labels'"],
        ),
        (
            "neg.npz",
            npz_bytes(np.zeros((2, 8, 8), np.uint8), np.array([0, -1])),
            422,
            ["non-negative"],
        ),
        ("pickle.npz", _npz(images=np.array([{"a": 1}], dtype=object)), 422, ["objects"]),
        ("channels.npz", npz_bytes(np.zeros((2, 8, 8, 2), np.uint8)), 422, ["channels"]),
        ("empty.zip", b"", 422, []),
        ("empty-entry.zip", zip_bytes({"a.png": b""}), 422, ["a.png"]),
        ("huge-header.zip", zip_bytes({"a.png": _png_header(100_000, 100_000)}), 422, ["256"]),
        ("huge-header.png", _png_header(100_000, 100_000), 422, []),
        ("deep-slip.zip", _raw_zip("cat/../../../evil.png", png_bytes(8, 8)), 422, [".."]),
    ],
)
def test_bad_uploads_are_rejected_and_leave_nothing(
    stack: Stack,
    owner: str,
    api: httpx.Client,
    filename: str,
    payload: bytes,
    status: int,
    mentions: list[str],
) -> None:
    assert_rejected(upload(api, filename, payload), status, *mentions)
    assert leftovers(stack) == []
    assert api.get("/v1/datasets").json()["data"] == []
    assert not (stack.data_dir.parent / "evil.png").exists()  # nothing escaped the data dir
    assert not (stack.data_dir / "evil.png").exists()
    from sqlalchemy import func, select

    from app.core.tables import Dataset

    with stack.sessions()() as session:
        rows = session.scalar(
            select(func.count()).select_from(Dataset).where(Dataset.owner == owner)
        )
        known = set(session.scalars(select(Dataset.id)))
    assert rows == 0
    folders = {p.name for p in (stack.data_dir / "datasets").iterdir() if p.is_dir()}
    assert folders - {".incoming"} <= known  # no folder of a dataset that was refused


def test_upload_size_is_limited_while_streaming(stack: Stack, api: httpx.Client) -> None:
    payload = np.random.default_rng(0).integers(0, 255, 3 * 1024 * 1024, dtype=np.uint8)
    response = upload(api, "huge.npz", payload.tobytes())
    assert_rejected(response, 413, "2097152", "SNGAN_MAX_UPLOAD_BYTES")
    assert leftovers(stack) == []


def test_multipart_is_required(api: httpx.Client) -> None:
    response = api.post("/v1/datasets", content=b"raw", headers={"content-type": "text/plain"})
    assert_rejected(response, 415, "multipart")
    response = api.post("/v1/datasets", files={"other": ("a.npz", b"x")})
    assert_rejected(response, 422, "file")


def test_a_dataset_in_use_cannot_be_deleted(stack: Stack, owner: str, api: httpx.Client) -> None:
    images, _ = shapes(8)
    dataset = upload(api, "d.npz", npz_bytes(images)).json()
    future = datetime.now(UTC) + timedelta(days=1)
    job_id = insert_job(
        stack,
        owner,
        status="running",
        heartbeat_at=future,
        lease_token=1,
        dataset_id=dataset["id"],
    )
    response = api.delete(f"/v1/datasets/{dataset['id']}")
    assert response.status_code == 409
    assert response.json()["error"]["details"]["jobs"] == [job_id]
    assert api.get(f"/v1/datasets/{dataset['id']}").status_code == 200
