"""Small pieces that need no server: error field names, limits read from the settings, and
archive checks that HTTP clients cannot easily produce (symlinks, encryption flags)."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.api.errors import ApiError, field_name
from app.api.schemas import JobCreate
from app.api.services.datasets import inspect_archive
from app.core.config import Settings, get_settings


def test_field_names() -> None:
    assert field_name(("body", "train", "batch_size")) == "train.batch_size"
    assert field_name(("query", "n")) == "n"
    assert field_name(("body", "train", "betas", 1)) == "train.betas[1]"
    assert field_name(("body",)) == "request"


def test_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"dataset": {"source": "synthetic"}, "train": {"steps": 50}}
    JobCreate.model_validate(body)
    monkeypatch.setenv("SNGAN_MAX_STEPS", "40")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValidationError, match="at most 40 .*SNGAN_MAX_STEPS"):
            JobCreate.model_validate(body)
    finally:
        monkeypatch.delenv("SNGAN_MAX_STEPS")
        get_settings.cache_clear()


def _zip_with(info: zipfile.ZipInfo, encrypted: bool) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, b"x")
    data = bytearray(buf.getvalue())
    if encrypted:  # zipfile cannot write encrypted entries: set the flag bit in both headers
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            data[data.index(signature) + offset] |= 0x1
    return bytes(data)


@pytest.mark.parametrize(
    ("mode", "encrypted", "message"),
    [(stat.S_IFLNK | 0o777, False, "symbolic link"), (stat.S_IFREG | 0o644, True, "encrypted")],
)
def test_symlinks_and_encrypted_entries(
    tmp_path: Path, mode: int, encrypted: bool, message: str
) -> None:
    info = zipfile.ZipInfo("a.png")
    info.external_attr = mode << 16
    path = tmp_path / "x.zip"
    path.write_bytes(_zip_with(info, encrypted))
    settings = Settings.model_validate({"data_dir": tmp_path})
    with pytest.raises(ApiError, match=message) as caught:
        inspect_archive(path, "x.zip", settings)
    assert caught.value.status == 422
