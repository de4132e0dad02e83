"""A checkpoint's generator as a standalone file: ONNX, or torch.export's program (``.pt2``).

TorchScript is deprecated in the installed torch (``torch.jit.trace`` warns "Please switch to
torch.compile or torch.export"), so the torch format is ``torch.export.save``'s ``.pt2``:
``torch.export.load(path).module()(z, y)`` runs it with no model code. ONNX goes through
torch's dynamo exporter (it needs the ``onnx`` and ``onnxscript`` packages). Both take ``z``
(B, z_dim) float32 and, for a class-conditional generator, ``y`` (B,) int64, with the batch
axis dynamic, and return images (B, C, H, W) in [-1, 1]. Each file carries its metadata
(`ExportMetadata`): ONNX as metadata props, ``.pt2`` as the extra file ``sngan.json``.

A file is built once per (checkpoint, format, EMA or not) beside the checkpoint, under an
exclusive file lock, so concurrent builders (threads or processes) build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import io
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .checkpoint import CheckpointError, _atomic_write, load_checkpoint, step_of
from .config import RunConfig
from .nets import build_generator

Format = Literal["onnx", "pt2"]
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}
METADATA_FILE = "sngan.json"  # the .pt2's extra file holding the metadata
MAX_BATCH = 65536  # the dynamic batch axis's upper bound (torch.export needs one)


class ExportUnavailable(Exception):
    """The format's exporter is not installed (ONNX needs onnx and onnxscript)."""


def check_available(fmt: Format) -> None:
    """Raise `ExportUnavailable` when `fmt` cannot be exported here."""
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise ExportUnavailable(
                f"ONNX export needs the packages {', '.join(missing)} (pip install onnx onnxscript)"
            )


@dataclass(frozen=True)
class ExportMetadata:
    arch: str
    z_dim: int
    num_classes: int  # 0: unconditional (no input y)
    resolution: int
    channels: int
    step: int
    ema: bool  # the EMA generator's weights (when the checkpoint has them)
    checkpoint_sha256: str
    inputs: str  # "z" or "z,y"
    output: str = "images (B, C, H, W) float32 in [-1, 1]"

    def as_strings(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


class _Unconditional(nn.Module):
    def __init__(self, netG: nn.Module) -> None:
        super().__init__()
        self.netG = netG

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.netG(z, None)  # type: ignore[no-any-return]


class _Conditional(nn.Module):
    def __init__(self, netG: nn.Module) -> None:
        super().__init__()
        self.netG = netG

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.netG(z, y)  # type: ignore[no-any-return]


def export_path(checkpoint: Path, sha256: str, fmt: Format, ema: bool) -> Path:
    """Where the export of `checkpoint` is cached: beside it, named after it, its sha256 (a
    checkpoint rewritten under the same name is exported again) and the weights."""
    weights = "ema" if ema else "netG"
    return checkpoint.with_name(f"{checkpoint.name}.{sha256[:16]}.{weights}{SUFFIX[fmt]}")


def load_for_export(
    checkpoint: Path, sha256: str, ema: bool
) -> tuple[nn.Module, RunConfig, ExportMetadata]:
    """The generator (CPU, eval) of a verified checkpoint, its config and the export's
    metadata."""
    state = load_checkpoint(checkpoint, sha256, "cpu")
    cfg = RunConfig.from_dict(state["config"])
    netG = build_generator(cfg.model)
    used_ema = ema and state.get("ema_G") is not None
    netG.load_state_dict(state["ema_G"] if used_ema else state["netG"])
    m = cfg.model
    classes = m.num_classes if m.conditional else 0
    step = step_of(checkpoint)
    meta = ExportMetadata(
        arch=m.arch,
        z_dim=m.z_dim,
        num_classes=classes,
        resolution=m.resolution,
        channels=m.channels,
        step=int(state.get("step", step if step is not None else -1)),
        ema=used_ema,
        checkpoint_sha256=sha256,
        inputs="z,y" if classes else "z",
    )
    return netG.eval(), cfg, meta


def _program(netG: nn.Module, meta: ExportMetadata) -> tuple[nn.Module, tuple[Any, ...], Any]:
    """The module to export, example inputs (batch 2) and the dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    z = torch.zeros(2, meta.z_dim)
    if meta.num_classes:
        y = torch.zeros(2, dtype=torch.long)
        return _Conditional(netG), (z, y), {"z": {0: batch}, "y": {0: batch}}
    return _Unconditional(netG), (z,), {"z": {0: batch}}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch's exporters warn about their own internals (deprecations inside torch.export and
    onnxscript) and print progress; neither is ours to act on."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export_bytes(netG: nn.Module, meta: ExportMetadata, fmt: Format) -> bytes:
    """The generator exported in `fmt`, with `meta` inside."""
    check_available(fmt)
    module, args, dynamic = _program(netG, meta)
    names = ["z", "y"][: len(args)]
    with torch.no_grad(), _quiet():
        if fmt == "pt2":
            program = torch.export.export(module, args, dynamic_shapes=dynamic)
            buf = io.BytesIO()
            extra = {METADATA_FILE: json.dumps(asdict(meta), sort_keys=True)}
            torch.export.save(program, buf, extra_files=extra)
            return buf.getvalue()
        if fmt != "onnx":
            raise ValueError(f"unknown export format {fmt!r}")
        onnx_program = torch.onnx.export(
            module,
            args,
            input_names=names,
            output_names=["images"],
            dynamic_shapes=dynamic,
            dynamo=True,
            verbose=False,
        )
    assert onnx_program is not None
    proto = onnx_program.model_proto
    for key, value in meta.as_strings().items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = f"sngan.{key}", value
    return bytes(proto.SerializeToString())


def read_pt2_metadata(path: Path) -> dict[str, Any]:
    """The metadata inside a ``.pt2`` (`ExportMetadata` as a dict)."""
    extra = {METADATA_FILE: ""}
    torch.export.load(path, extra_files=extra)
    meta: dict[str, Any] = json.loads(extra[METADATA_FILE])
    return meta


def cached_export(
    checkpoint: Path, sha256: str, fmt: Format, ema: bool, isolated: bool = False
) -> tuple[Path, ExportMetadata]:
    """The export of `checkpoint` (`export_path`) and its metadata (kept beside it as JSON),
    built if it is not there yet; builders of one file wait for each other (an exclusive lock
    on a file beside it), so it is built once. Raises `CheckpointError` for a checkpoint that
    does not verify.

    `isolated`: build it in a child process (`python -m models.export`), as a server should:
    the exporters silence their noise through process-wide state (stdout, warning filters)
    that other threads share, and an ONNX export's memory and its onnxscript import are
    given back when the child exits."""
    target = export_path(checkpoint, sha256, fmt, ema)
    meta_path = target.with_name(f"{target.name}.json")
    if not target.is_file():
        fd = os.open(target.with_name(f"{target.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not target.is_file():  # nobody built it while this waited
                if isolated:
                    _build_in_child(checkpoint, sha256, fmt, ema)
                else:
                    _build(checkpoint, sha256, fmt, ema)
        finally:
            os.close(fd)  # releases the lock
    return target, ExportMetadata(**json.loads(meta_path.read_text()))


def _build(checkpoint: Path, sha256: str, fmt: Format, ema: bool) -> None:
    target = export_path(checkpoint, sha256, fmt, ema)
    netG, _cfg, meta = load_for_export(checkpoint, sha256, ema)
    data = export_bytes(netG, meta, fmt)
    _atomic_write(target.with_name(f"{target.name}.json"), json.dumps(asdict(meta)).encode())
    _atomic_write(target, data)  # last: its presence means both are complete


_CHILD_FAILED = 3  # the child's exit status for a CheckpointError (its message on stderr)


def _build_in_child(checkpoint: Path, sha256: str, fmt: Format, ema: bool) -> None:
    check_available(fmt)  # said here, in the caller's terms, rather than by a child's failure
    args = [str(checkpoint), sha256, fmt, "ema" if ema else "netG"]
    done = subprocess.run(
        [sys.executable, "-m", "models.export", *args], capture_output=True, text=True
    )
    if done.returncode == _CHILD_FAILED:
        raise CheckpointError(done.stderr.strip().splitlines()[-1])
    if done.returncode != 0:
        raise RuntimeError(f"exporting {checkpoint} as {fmt} failed: {done.stderr[-2000:]}")


def main(argv: list[str]) -> int:
    """``python -m models.export CHECKPOINT SHA256 onnx|pt2 ema|netG``: `_build`."""
    checkpoint, sha256, fmt, weights = argv
    if fmt not in SUFFIX:
        raise SystemExit(f"unknown format {fmt!r}")
    try:
        _build(Path(checkpoint), sha256, fmt, weights == "ema")  # type: ignore[arg-type]
    except CheckpointError as e:
        print(e, file=sys.stderr)
        return _CHILD_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
