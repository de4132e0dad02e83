"""Pure-PyTorch SN-GAN (Miyato et al. 2018): layers, the paper's architectures, losses,
trainer, checkpoints, data and evaluation. Imports no web, database or queue library."""

from .checkpoint import (
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_generator,
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
from .evaluation import EvaluationUnavailable, check_evaluation_available
from .generate import generate_images, image_grid, save_png
from .nets import build_discriminator, build_generator, count_parameters
from .trainer import DivergedError, Trainer, TrainerSinks, TrainResult

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
    "check_evaluation_available",
    "count_parameters",
    "generate_images",
    "image_grid",
    "latest_valid_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_dataset",
    "load_generator",
    "save_png",
    "synthetic_shapes",
    "verify_checkpoint",
]
