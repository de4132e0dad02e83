"""Inception Score, FID and KID through torch-fidelity, with local Inception weights only.

The weights file (torch-fidelity's `pt_inception-2015-12-05-6726825d.pth`) is never
downloaded at run time: its path comes from the caller (the `SNGAN_INCEPTION_WEIGHTS`
setting in the service). Real-data features are cached per dataset under `cache_dir`, so
they are computed once.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from .config import RunConfig
from .data import ImageDataset
from .generate import to_uint8_nchw

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
)


class EvaluationUnavailable(Exception):
    """IS/FID/KID cannot run here: the weights file or torch-fidelity is missing."""


def check_evaluation_available(weights: Path | None) -> Path:
    """Fail early, naming the setting, the file and where to get it."""
    if weights is None:
        raise EvaluationUnavailable(
            "evaluation needs the Inception weights: set SNGAN_INCEPTION_WEIGHTS to a local copy "
            f"of {INCEPTION_FILE} (download it once from {INCEPTION_URL})"
        )
    if not Path(weights).is_file():
        raise EvaluationUnavailable(
            f"Inception weights not found at {weights} (SNGAN_INCEPTION_WEIGHTS); "
            f"download {INCEPTION_FILE} from {INCEPTION_URL}"
        )
    try:
        import torch_fidelity  # noqa: F401
    except Exception as e:  # ImportError, or torchvision built for another torch
        raise EvaluationUnavailable(
            f"evaluation needs torch-fidelity (pip install 'sngan-service[eval]'): {e}"
        ) from e
    return Path(weights)


class _Uint8Images(Dataset):
    """uint8 (N, C, H, W) as torch-fidelity wants them: 3-channel uint8 tensors."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i].cpu()


@torch.no_grad()
def generate_uint8(
    netG: nn.Module, cfg: RunConfig, n: int, device: torch.device, seed: int, batch: int = 250
) -> torch.Tensor:
    """n samples as uint8 (N, C, H, W), from a dedicated RNG so training's stream is untouched."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        z = torch.randn(m, cfg.model.z_dim, generator=gen).to(device)
        y = None
        if cfg.model.conditional:
            y = torch.randint(cfg.model.num_classes, (m,), generator=gen).to(device)
        out.append(to_uint8_nchw(netG(z, y)).cpu())
    return torch.cat(out)


def evaluate(
    netG: nn.Module,
    cfg: RunConfig,
    dataset: ImageDataset,
    weights: Path | None,
    cache_dir: Path,
    dataset_key: str,
    device: torch.device,
    seed: int = 0,
) -> dict[str, float]:
    """{is_mean, is_std, fid, kid_mean, kid_std} for the metrics named in cfg.eval."""
    weights = check_evaluation_available(weights)
    import torch_fidelity

    n = cfg.eval.num_samples
    was_training = netG.training
    netG.eval()
    try:
        fake = generate_uint8(netG, cfg, n, device, seed)
    finally:
        netG.train(was_training)
    wanted = set(cfg.eval.metrics)
    cache_dir.mkdir(parents=True, exist_ok=True)
    res = torch_fidelity.calculate_metrics(
        input1=_Uint8Images(fake),
        input2=_Uint8Images(dataset.images),
        cuda=device.type == "cuda",
        isc="is" in wanted,
        fid="fid" in wanted,
        kid="kid" in wanted,
        kid_subset_size=min(1000, n, len(dataset)),
        feature_extractor_weights_path=str(weights),
        cache=True,
        cache_root=str(cache_dir),
        input2_cache_name=f"sngan-real-{dataset_key}",
        verbose=False,
    )
    names = {
        "inception_score_mean": "is_mean",
        "inception_score_std": "is_std",
        "frechet_inception_distance": "fid",
        "kernel_inception_distance_mean": "kid_mean",
        "kernel_inception_distance_std": "kid_std",
    }
    return {names[k]: float(v) for k, v in res.items() if k in names}
