"""Data sources: the standard CIFAR-10/STL-10 files, npz, zip, folders, synthetic."""

import io
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from models import DatasetError, DataSpec, load_dataset, synthetic_shapes


def _png(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_cifar10_python_batches(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {
            b"data": rng.integers(0, 256, (7, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, 7)),
        }
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    first = pickle.loads((d / "data_batch_1").read_bytes())
    ds = load_dataset(DataSpec(source="cifar10", path=str(tmp_path)), 32)
    assert len(ds) == 35 and ds.channels == 3 and ds.num_classes <= 10
    # row-major 3x32x32 planes, unchanged at 32x32
    assert np.array_equal(ds.images[0].numpy().reshape(-1), first[b"data"][0])


def test_stl10_binary_files_resized_to_48(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    x = np.zeros((4, 3, 96, 96), np.uint8)
    x[:, 0, :48, :] = 255  # red in the top half, as (N, C, H, W)
    x.transpose(0, 1, 3, 2).tofile(d / "train_X.bin")  # the files are column-major
    np.array([1, 2, 3, 10], np.uint8).tofile(d / "train_y.bin")
    ds = load_dataset(DataSpec(source="stl10", path=str(tmp_path)), 48)
    assert tuple(ds.images.shape) == (4, 3, 48, 48)
    assert ds.labels.tolist() == [0, 1, 2, 9]
    assert ds.images[0, 0, 5, 20] == 255 and ds.images[0, 0, 40, 20] == 0


def test_missing_builtin_files_name_the_paths_looked_for(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(DataSpec(source="cifar10", path=str(tmp_path)), 32)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(err.value)
    with pytest.raises(DatasetError, match="stl10_binary/train_X.bin"):
        load_dataset(DataSpec(source="stl10", path=str(tmp_path)), 48)


def test_npz_grey_and_labels(tmp_path):
    path = tmp_path / "d.npz"
    images = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(10) % 3)
    ds = load_dataset(DataSpec(source="npz", path=str(path)), 32)
    assert tuple(ds.images.shape) == (10, 1, 32, 32) and ds.num_classes == 3
    rgb = load_dataset(DataSpec(source="npz", path=str(path)), 32, channels=3)
    assert rgb.channels == 3


def test_npz_with_object_arrays_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError):
        load_dataset(DataSpec(source="npz", path=str(path)), 32)


def test_zip_classes_from_top_level_folders_and_centre_crop(tmp_path):
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cats/a.png", _png((255, 0, 0)))
        zf.writestr("cats/b.png", _png((250, 0, 0)))
        zf.writestr("dogs/c.png", _png((0, 0, 255), (30, 60)))
        zf.writestr("dogs/readme.txt", b"not an image")
    ds = load_dataset(DataSpec(source="zip", path=str(path)), 32)
    assert tuple(ds.images.shape) == (3, 3, 32, 32)
    assert ds.labels.tolist() == [0, 0, 1] and ds.num_classes == 2
    assert ds.images[2, 2].float().mean() > 250


def test_folder_without_subfolders_is_unlabelled(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_png((i * 50, 0, 0)))
    ds = load_dataset(DataSpec(source="folder", path=str(tmp_path)), 48)
    assert len(ds) == 3 and ds.num_classes == 0


def test_synthetic_is_deterministic_and_balanced():
    a, la = synthetic_shapes(400, 32, seed=0)
    b, lb = synthetic_shapes(400, 32, seed=0)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert a.shape == (400, 3, 32, 32) and set(la.tolist()) == {0, 1, 2, 3}
    assert np.bincount(la).min() > 70
    ds = load_dataset(DataSpec(source="synthetic", num_images=100), 48)
    assert tuple(ds.images.shape) == (100, 3, 48, 48) and ds.num_classes == 4


def test_builtin_layouts_are_known_without_torch(tmp_path):
    """The API checks for CIFAR-10/STL-10 files with models.sources, which loads no torch."""
    import subprocess
    import sys

    code = "import sys, models.sources; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    from models.sources import builtin_candidates, find_builtin

    assert find_builtin("cifar10", tmp_path) is None
    marker = builtin_candidates("cifar10", tmp_path)[1]
    marker.parent.mkdir(parents=True)
    marker.write_bytes(b"")
    assert find_builtin("cifar10", tmp_path) == tmp_path / "cifar-10-batches-py"
