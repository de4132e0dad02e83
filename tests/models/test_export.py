"""The generator exported to run anywhere: the ONNX file run by onnxruntime and the ``.pt2``
by torch.export in a fresh interpreter in which this project cannot be imported, both giving
the PyTorch generator's images (fp32, max abs difference <= 1e-4) at batch sizes other than
the one exported with; the metadata inside each file; one build for concurrent builders."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models import RunConfig, build_generator
from models import export as exporting
from models.checkpoint import save_checkpoint

TOLERANCE = 1e-4

# run with `python -I` in an empty directory; the project's packages are blocked outright
# (the venv may have it installed), so only torch/onnxruntime and the files can do the work
CHECK = """
import json, sys
sys.modules.update({name: None for name in ("models", "app", "worker", "tests")})
import numpy as np
args = json.loads(sys.argv[1])
z = np.load("z.npy")
y = np.load("y.npy") if args["conditional"] else None
out = {}
if "onnx" in args["files"]:
    import onnx, onnxruntime as ort
    meta = {p.key: p.value for p in onnx.load(args["files"]["onnx"]).metadata_props}
    session = ort.InferenceSession(args["files"]["onnx"], providers=["CPUExecutionProvider"])
    feed = {"z": z} if y is None else {"z": z, "y": y}
    np.save("onnx_out.npy", session.run(["images"], feed)[0])
    out["onnx_meta"] = meta
if "pt2" in args["files"]:
    import torch
    extra = {"sngan.json": ""}
    program = torch.export.load(args["files"]["pt2"], extra_files=extra)
    inputs = (torch.from_numpy(z),) if y is None else (torch.from_numpy(z), torch.from_numpy(y))
    with torch.no_grad():
        np.save("pt2_out.npy", program.module()(*inputs).numpy())
    out["pt2_meta"] = json.loads(extra["sngan.json"])
try:
    import models
except ImportError:
    out["project_importable"] = False
else:
    out["project_importable"] = True
print(json.dumps(out))
"""


def _checkpoint(directory: Path, conditional: bool) -> tuple[Path, str, torch.nn.Module]:
    model: dict[str, Any] = {"arch": "cnn32", "z_dim": 16, "g_ch": 4, "d_ch": 4}
    if conditional:
        model.update(conditional=True, num_classes=3)
    cfg = RunConfig.from_dict({"model": model})
    torch.manual_seed(0)
    netG, ema_G = build_generator(cfg.model), build_generator(cfg.model)
    for p in ema_G.parameters():  # EMA weights that differ from netG's
        p.data.mul_(0.9)
    state = {"config": cfg.to_dict(), "netG": netG.state_dict(), "ema_G": ema_G.state_dict()}
    path = directory / "step_00000007.pt"
    sha, _ = save_checkpoint({**state, "step": 7}, path)
    return path, sha, ema_G.eval()


def _run_elsewhere(tmp_path: Path, files: dict[str, Path], conditional: bool) -> dict[str, Any]:
    work = tmp_path / "elsewhere"
    work.mkdir()
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(4))
    np.save(work / "z.npy", z.numpy())
    np.save(work / "y.npy", np.array([0, 2, 1, 1, 0], dtype=np.int64))
    args = {"conditional": conditional, "files": {k: str(v) for k, v in files.items()}}
    done = subprocess.run(
        [sys.executable, "-I", "-c", CHECK, json.dumps(args)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["dir"] = work
    return result


def _reference(netG: torch.nn.Module, work: Path, conditional: bool) -> np.ndarray:
    z = torch.from_numpy(np.load(work / "z.npy"))
    y = torch.from_numpy(np.load(work / "y.npy")) if conditional else None
    with torch.no_grad():
        return netG(z, y).numpy()  # type: ignore[no-any-return]


def test_onnx_and_pt2_give_pytorchs_images_without_the_project(tmp_path: Path) -> None:
    path, sha, ema_G = _checkpoint(tmp_path, conditional=True)
    files = {}
    for fmt in ("onnx", "pt2"):
        built, meta = exporting.cached_export(path, sha, fmt, ema=True)
        assert built.parent == path.parent and built.suffix == f".{fmt}"
        assert meta.step == 7 and meta.ema and meta.num_classes == 3 and meta.inputs == "z,y"
        assert meta.checkpoint_sha256 == sha
        files[fmt] = built
    ran = _run_elsewhere(tmp_path, files, conditional=True)
    assert ran["project_importable"] is False
    expected = _reference(ema_G, ran["dir"], conditional=True)
    for fmt in ("onnx", "pt2"):
        got = np.load(ran["dir"] / f"{fmt}_out.npy")
        assert got.shape == expected.shape == (5, 3, 32, 32)  # batch 5, exported with 2
        diff = float(np.abs(got - expected).max())
        print(f"{fmt}: max abs difference {diff:.2e}")
        assert diff <= TOLERANCE
    assert ran["onnx_meta"]["sngan.checkpoint_sha256"] == sha
    assert ran["onnx_meta"]["sngan.z_dim"] == "16"
    assert ran["pt2_meta"]["num_classes"] == 3 and ran["pt2_meta"]["step"] == 7


def test_an_unconditional_generator_takes_z_alone(tmp_path: Path) -> None:
    path, sha, ema_G = _checkpoint(tmp_path, conditional=False)
    # built in a child process, as the API builds it
    built, meta = exporting.cached_export(path, sha, "pt2", ema=True, isolated=True)
    assert meta.inputs == "z" and meta.num_classes == 0
    assert exporting.read_pt2_metadata(built)["inputs"] == "z"
    ran = _run_elsewhere(tmp_path, {"pt2": built}, conditional=False)
    got = np.load(ran["dir"] / "pt2_out.npy")
    assert float(np.abs(got - _reference(ema_G, ran["dir"], False)).max()) <= TOLERANCE
    # netG's weights are a file of their own
    raw, raw_meta = exporting.cached_export(path, sha, "pt2", ema=False)
    assert raw != built and not raw_meta.ema


def test_concurrent_builders_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, sha, _ = _checkpoint(tmp_path, conditional=False)
    builds = []
    real = exporting.export_bytes

    def counted(*args: Any) -> bytes:
        builds.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(exporting, "export_bytes", counted)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(exporting.cached_export(path, sha, "pt2", True)[0])
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(set(results)) == 1 and len(results) == 4
    # the checkpoint's removal takes its exports with it
    from models.checkpoint import remove_checkpoint

    remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_does_not_verify_is_not_exported(tmp_path: Path) -> None:
    from models import CheckpointError

    path, _sha, _ = _checkpoint(tmp_path, conditional=False)
    for isolated in (False, True):
        with pytest.raises(CheckpointError, match="does not match"):
            exporting.cached_export(path, "0" * 64, "pt2", ema=True, isolated=isolated)
