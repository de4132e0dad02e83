"""Typed configs of a model and a training run.

The API validates the same fields with pydantic; these dataclasses are what the trainer,
the checkpoints and the generator loader read, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# arch name -> image resolution (the paper's CIFAR-10 and STL-10 models)
ARCHS: dict[str, int] = {"cnn32": 32, "resnet32": 32, "cnn48": 48, "resnet48": 48}
LOSSES = ("hinge", "ns")
PRECISIONS = ("auto", "fp32", "bf16")
DATA_SOURCES = ("synthetic", "cifar10", "stl10", "npz", "zip", "folder")
EVAL_METRICS = ("is", "fid", "kid")


@dataclass
class ModelConfig:
    arch: str = "resnet32"
    z_dim: int = 128
    g_ch: int | None = None  # None = the paper's base width for the arch
    d_ch: int | None = None
    conditional: bool = False
    channels: int = 3
    num_classes: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {sorted(ARCHS)}, got {self.arch!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"model.channels must be 1 or 3, got {self.channels}")
        if self.conditional and self.num_classes < 1:
            raise ValueError("model.conditional needs num_classes >= 1 (a labelled dataset)")

    @property
    def resolution(self) -> int:
        return ARCHS[self.arch]


@dataclass
class TrainConfig:
    steps: int = 50_000  # generator updates
    batch_size: int = 64
    n_dis: int = 5
    loss: str = "hinge"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    lr_decay: str = "linear"  # "linear" to 0 over `steps`, or "none"
    ema_decay: float | None = None
    seed: int = 0
    precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    log_every: int = 10  # losses are read back from the device every k steps

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.loss not in LOSSES:
            raise ValueError(f"train.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}")
        if self.lr_decay not in ("linear", "none"):
            raise ValueError("train.lr_decay must be 'linear' or 'none'")
        if self.steps < 1 or self.batch_size < 1 or self.n_dis < 1:
            raise ValueError("train.steps, train.batch_size and train.n_dis must be >= 1")


@dataclass
class EvalConfig:
    every: int = 0  # 0 = off
    num_samples: int = 10_000
    metrics: list[str] = field(default_factory=lambda: ["is", "fid"])

    def __post_init__(self) -> None:
        unknown = set(self.metrics) - set(EVAL_METRICS)
        if unknown:
            raise ValueError(f"eval.metrics must be among {EVAL_METRICS}, got {sorted(unknown)}")


@dataclass
class DataSpec:
    source: str = "synthetic"
    path: str | None = None  # file or directory for cifar10/stl10/npz/zip/folder
    num_images: int = 10_000  # synthetic only

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {DATA_SOURCES}, got {self.source!r}")


@dataclass
class SpeedConfig:
    """How the step executes, never what it computes. None = on where it helps (CUDA)."""

    joint_d_forward: bool = True  # real and fake through D in one forward (D has no BN)
    channels_last: bool | None = None
    fused_adam: bool | None = None
    cuda_graphs: bool | None = None  # capture the whole D step and G step
    compile: bool | None = None  # torch.compile G and D: fused kernels, ~1 min to compile

    @classmethod
    def eager(cls) -> SpeedConfig:
        """The plain mode: two D forwards, unfused Adam, no graphs, no compile, NCHW."""
        return cls(
            joint_d_forward=False,
            channels_last=False,
            fused_adam=False,
            cuda_graphs=False,
            compile=False,
        )

    @classmethod
    def fast_on_cpu(cls) -> SpeedConfig:
        """Every switch a CPU can run (what the CPU tests compare with the plain mode)."""
        return cls(joint_d_forward=True, channels_last=True, fused_adam=True, compile=False)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataSpec = field(default_factory=DataSpec)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    checkpoint_every: int = 1000
    sample_every: int = 500
    keep_last: int = 5

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"]["betas"] = list(self.train.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from the job body's shape; unknown keys are ignored (e.g. `dataset`, `name`)."""

        def pick(kind: type, sub: dict[str, Any] | None) -> Any:
            names = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in (sub or {}).items() if k in names and v is not None})

        top = {k: d[k] for k in ("checkpoint_every", "sample_every", "keep_last") if k in d}
        return cls(
            model=pick(ModelConfig, d.get("model")),
            train=pick(TrainConfig, d.get("train")),
            eval=pick(EvalConfig, d.get("eval")),
            data=pick(DataSpec, d.get("data")),
            speed=pick(SpeedConfig, d.get("speed")),
            **top,
        )
