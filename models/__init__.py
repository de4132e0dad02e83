"""Pure-PyTorch SN-GAN (Miyato et al. 2018): layers, the paper's architectures, losses,
trainer, checkpoints, data and evaluation. Imports no web, database or queue library."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule; imported lazily so the torch-free parts (models.sources) stay light
_EXPORTS = {
    "ARCHS": "config",
    "CheckpointError": "checkpoint",
    "DataSpec": "config",
    "DatasetError": "data",
    "DivergedError": "sinks",
    "EvalConfig": "config",
    "EvaluationUnavailable": "evaluation",
    "ImageDataset": "data",
    "ModelConfig": "config",
    "RunConfig": "config",
    "SpeedConfig": "config",
    "TrainConfig": "config",
    "TrainResult": "sinks",
    "Trainer": "trainer",
    "TrainerSinks": "sinks",
    "build_discriminator": "nets",
    "build_generator": "nets",
    "cached_export": "export",
    "check_evaluation_available": "evaluation",
    "count_parameters": "nets",
    "generate_images": "generate",
    "image_grid": "generate",
    "latest_valid_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_dataset": "data",
    "load_generator": "checkpoint",
    "newest_verified": "checkpoint",
    "png_bytes": "generate",
    "resolve_device": "device",
    "save_png": "generate",
    "slerp": "latents",
    "synthetic_shapes": "data",
    "truncated_normal": "latents",
    "verify_checkpoint": "checkpoint",
    "walk_inputs": "generate",
}
__all__ = [
    "ARCHS",
    "CheckpointError",
    "DataSpec",
    "DatasetError",
    "DivergedError",
    "EvalConfig",
    "EvaluationUnavailable",
    "ImageDataset",
    "ModelConfig",
    "RunConfig",
    "SpeedConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainerSinks",
    "build_discriminator",
    "build_generator",
    "cached_export",
    "check_evaluation_available",
    "count_parameters",
    "generate_images",
    "image_grid",
    "latest_valid_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_dataset",
    "load_generator",
    "newest_verified",
    "png_bytes",
    "resolve_device",
    "save_png",
    "slerp",
    "synthetic_shapes",
    "truncated_normal",
    "verify_checkpoint",
    "walk_inputs",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .checkpoint import (
        CheckpointError,
        latest_valid_checkpoint,
        list_checkpoints,
        load_checkpoint,
        load_generator,
        newest_verified,
        verify_checkpoint,
    )
    from .config import (
        ARCHS,
        DataSpec,
        EvalConfig,
        ModelConfig,
        RunConfig,
        SpeedConfig,
        TrainConfig,
    )
    from .data import DatasetError, ImageDataset, load_dataset, synthetic_shapes
    from .device import resolve_device
    from .evaluation import EvaluationUnavailable, check_evaluation_available
    from .export import cached_export
    from .generate import generate_images, image_grid, png_bytes, save_png, walk_inputs
    from .latents import slerp, truncated_normal
    from .nets import build_discriminator, build_generator, count_parameters
    from .trainer import DivergedError, Trainer, TrainerSinks, TrainResult
