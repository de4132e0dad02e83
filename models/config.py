"""Typed configs of a model and a training run.

The API validates the same fields with pydantic; these dataclasses are what the trainer,
the checkpoints and the generator loader read, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

# arch name -> image resolution (the paper's CIFAR-10 and STL-10 models)
ARCHS: dict[str, int] = {"cnn32": 32, "resnet32": 32, "cnn48": 48, "resnet48": 48}
LOSSES = ("hinge", "ns")
LR_DECAYS = ("linear", "none")
PRECISIONS = ("auto", "fp32", "bf16")
DATA_SOURCES = ("synthetic", "cifar10", "stl10", "npz", "zip", "folder")
EVAL_METRICS = ("is", "fid", "kid")


def option(
    default: Any = MISSING,
    *,
    doc: str,
    request: bool = True,
    flag: str | None = None,
    factory: Any = MISSING,
) -> Any:
    """A config field with its help text, which the API schema's docs and the CLI's flags
    reuse. `request=False` marks a field a job request does not set (read from the data, or
    the service's choice); `flag` names the CLI flag when it is not the field's name
    (``a/b``: a boolean's on and off flags)."""
    metadata = {"doc": doc, "request": request, "flag": flag}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def request_fields(kind: type) -> list[Field[Any]]:
    """The fields of a config dataclass that a job request sets, in declaration order."""
    return [f for f in fields(kind) if f.metadata.get("request", True)]


def default_of(f: Field[Any]) -> Any:
    """A field's default value (a fresh one for fields with a default factory)."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


@dataclass
class ModelConfig:
    arch: str = option(
        "resnet32", doc="cnn32 or resnet32 (32x32 images), cnn48 or resnet48 (48x48 images)."
    )
    z_dim: int = option(128, doc="Dimension of the generator's noise input.")
    g_ch: int | None = option(None, doc="Generator base width; unset = the paper's for the arch.")
    d_ch: int | None = option(
        None, doc="Discriminator base width; unset = the paper's for the arch."
    )
    conditional: bool = option(
        False,
        doc="Class-conditional G and projection D; needs a labelled dataset.",
        flag="conditional/unconditional",
    )
    channels: int = option(3, doc="Image channels, 1 or 3 (from the dataset).", request=False)
    num_classes: int = option(
        0, doc="Classes of a labelled dataset, 0 without labels (from the dataset).", request=False
    )

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
    steps: int = option(50_000, doc="Generator updates.")
    batch_size: int = option(
        64, doc="Images per D update (the G update uses twice as many samples)."
    )
    n_dis: int = option(5, doc="Discriminator updates per generator update.")
    loss: str = option("hinge", doc="hinge, or ns (non-saturating).")
    lr_g: float = option(2e-4, doc="Generator learning rate (Adam).")
    lr_d: float = option(2e-4, doc="Discriminator learning rate (Adam).")
    betas: tuple[float, float] = option((0.0, 0.9), doc="Adam's betas for both networks.")
    lr_decay: str = option("linear", doc="linear (to 0 over `steps`) or none.")
    ema_decay: float | None = option(
        None, doc="Keep an EMA of G's weights with this decay (e.g. 0.999); unset = no EMA."
    )
    ema_rampup: float | None = option(
        None,
        doc="Cap the EMA's half-life at this share of the steps done (e.g. 0.05), so early "
        "weights leave the average; unset = the decay's half-life from step 1.",
    )
    ema_start: int = option(0, doc="The EMA copies G until this step, then averages.")
    ema_standing_stats: bool = option(
        False,
        doc="Recompute the EMA generator's batch-norm statistics for its own weights before "
        "it makes samples, evaluations or checkpoints (else they are copied from G).",
        flag="ema-standing-stats/no-ema-standing-stats",
    )
    seed: int = option(0, doc="Random seed of the run.")
    precision: str = option("auto", doc="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.")
    log_every: int = option(
        10, doc="Losses are read back from the device every k steps.", request=False
    )

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.loss not in LOSSES:
            raise ValueError(f"train.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"train.lr_decay must be one of {LR_DECAYS}")
        if self.steps < 1 or self.batch_size < 1 or self.n_dis < 1:
            raise ValueError("train.steps, train.batch_size and train.n_dis must be >= 1")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError("train.ema_decay must be in (0, 1)")
        if self.ema_rampup is not None and self.ema_rampup <= 0:
            raise ValueError("train.ema_rampup must be > 0")
        if self.ema_start < 0:
            raise ValueError("train.ema_start must be >= 0")


def _default_metrics() -> list[str]:
    return ["is", "fid"]


@dataclass
class EvalConfig:
    every: int = option(0, doc="Evaluate every N steps; 0 turns it off.", flag="eval-every")
    num_samples: int = option(10_000, doc="Images generated per evaluation.", flag="eval-samples")
    metrics: list[str] = option(factory=_default_metrics, doc="Among is, fid and kid.")

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
    # a request names its dataset instead; the worker resolves it to a DataSpec
    data: DataSpec = field(default_factory=DataSpec, metadata={"request": False})
    speed: SpeedConfig = field(default_factory=SpeedConfig, metadata={"request": False})
    checkpoint_every: int = option(1000, doc="Save a checkpoint every N steps.")
    sample_every: int = option(500, doc="Save a training grid every N steps.")
    keep_last: int = option(5, doc="Checkpoints kept: the newest K.", request=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"]["betas"] = list(self.train.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from `to_dict`'s shape (any part may be left out; None means the default).

        An unknown key raises ValueError naming it, so a misspelt or misplaced option (or a
        job body's own `name` and `dataset`) is never dropped and trained with the default.
        """
        unknown = [k for k in d if k not in _names(cls)]
        for name, kind in SECTIONS.items():
            unknown += [f"{name}.{k}" for k in d.get(name) or {} if k not in _names(kind)]
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")

        def build(kind: type, sub: dict[str, Any] | None) -> Any:
            return kind(**{k: v for k, v in (sub or {}).items() if v is not None})

        sections = {name: build(kind, d.get(name)) for name, kind in SECTIONS.items()}
        top = {k: v for k, v in d.items() if k not in SECTIONS and v is not None}
        return cls(**sections, **top)


# the nested sections of RunConfig, by field name
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "data": DataSpec,
    "speed": SpeedConfig,
}


def _names(kind: type) -> set[str]:
    return {f.name for f in fields(kind)}
