"""Inception Score, FID and KID on torch-fidelity's InceptionV3, with local weights only.

The weights file (torch-fidelity's `pt_inception-2015-12-05-6726825d.pth`) is never
downloaded at run time: its path comes from the caller (the `SNGAN_INCEPTION_WEIGHTS`
setting in the service), and it is checked (keys and shapes) before a job trains.

An `Evaluator` loads the network once and keeps each dataset's real-image features: in
memory for the run, and on disk under `cache_dir` (one file per dataset key), so a
dataset's real images go through Inception once, whatever the number of evaluations or
resumes. IS and KID use torch-fidelity's estimators (its splits, subsets and kernel); the
Fréchet distance is computed here, from an eigendecomposition (see `frechet_distance`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import RunConfig
from .data import ImageDataset
from .generate import to_uint8_nchw

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
)
FEATURES = ("2048", "logits_unbiased")  # pool features (FID, KID) and logits (IS)


class EvaluationUnavailable(Exception):
    """IS/FID/KID cannot run here: the weights file or torch-fidelity is missing, or the
    file is not torch-fidelity's InceptionV3."""


def _inception_class() -> Any:
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as e:  # ImportError, or torchvision built for another torch
        raise EvaluationUnavailable(
            "evaluation needs torch-fidelity and a torchvision built for this torch "
            f"({torch.__version__}): run the service from the evaluation environment "
            f"(scripts/setup builds .venv-eval when SNGAN_INCEPTION_WEIGHTS is set): {e}"
        ) from e
    return FeatureExtractorInceptionV3


def check_evaluation_available(weights: Path | None) -> Path:
    """Fail early, naming the setting, the file and where to get it (its keys and shapes are
    checked when an `Evaluator` loads it, before training starts)."""
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
    _inception_class()
    return Path(weights)


def load_inception(weights: Path, device: torch.device) -> nn.Module:
    """torch-fidelity's InceptionV3 with `weights`, or EvaluationUnavailable saying what in
    the file does not fit (rather than a size-mismatch traceback hours into a queue)."""
    cls = _inception_class()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EvaluationUnavailable(
            f"{weights} (SNGAN_INCEPTION_WEIGHTS) is not a PyTorch state dict: {e}"
        ) from e
    if not isinstance(state, dict):
        raise EvaluationUnavailable(f"{weights} (SNGAN_INCEPTION_WEIGHTS) holds no state dict")
    # torch-fidelity's constructor loads what it is given with weights_only=False (pickle):
    # it gets the plain tensors read above instead, and its strict load says what does not fit
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    try:
        net = cls("inception-v3-compat", list(FEATURES), feature_extractor_weights_path=buf)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise EvaluationUnavailable(
            f"{weights} (SNGAN_INCEPTION_WEIGHTS) is not torch-fidelity's InceptionV3 "
            f"({INCEPTION_FILE}): " + " ".join(lines[:3])
        ) from e
    return net.to(device).eval()


class Evaluator:
    """Inception loaded once; real features computed once per dataset key."""

    def __init__(self, weights: Path, device: torch.device, cache_dir: Path, batch: int = 50):
        self.device = device
        self.net = load_inception(weights, device)
        self.cache_dir = cache_dir
        self.batch = batch
        self._real: dict[str, torch.Tensor] = {}
        self.real_images_seen = 0  # real images that went through Inception (tests count)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, C, H, W) -> pool features (N, 2048) and logits (N, 1008), float64 CPU."""
        pool, logits = [], []
        for i in range(0, len(images), self.batch):
            x = images[i : i + self.batch].to(self.device)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            f, lg = self.net(x)
            pool.append(f.double().cpu())
            logits.append(lg.double().cpu())
        return torch.cat(pool), torch.cat(logits)

    def real_features(self, dataset: ImageDataset, key: str) -> torch.Tensor:
        """The dataset's pool features (N, 2048): from memory, the disk cache, or Inception."""
        if key in self._real:
            return self._real[key]
        path = self.cache_dir / f"real-{key}.pt"
        if path.is_file():
            feats = torch.load(path, map_location="cpu", weights_only=True)
        else:
            feats = self.features(dataset.images)[0]
            self.real_images_seen += len(dataset)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            torch.save(feats, tmp)
            tmp.replace(path)  # atomic: two workers computing it race harmlessly
        self._real[key] = feats
        return feats

    def evaluate(
        self, netG: nn.Module, cfg: RunConfig, dataset: ImageDataset, key: str, seed: int = 0
    ) -> dict[str, float]:
        """{is_mean, is_std, fid, kid_mean, kid_std}, for the metrics named in cfg.eval."""
        was_training = netG.training
        netG.eval()
        try:
            fake = generate_uint8(netG, cfg, cfg.eval.num_samples, self.device, seed)
        finally:
            netG.train(was_training)
        pool, logits = self.features(fake)
        wanted = set(cfg.eval.metrics)
        out: dict[str, float] = {}
        if "is" in wanted:
            out.update(inception_score(logits))
        if wanted & {"fid", "kid"}:
            real = self.real_features(dataset, key)
            if "fid" in wanted:
                out["fid"] = fid_from_features(pool, real)
            if "kid" in wanted:
                out.update(kernel_inception_distance(pool, real))
        return out


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


def inception_score(logits: torch.Tensor) -> dict[str, float]:
    from torch_fidelity.metric_isc import isc_features_to_metric

    res = isc_features_to_metric(logits, splits=min(10, len(logits)))
    return {"is_mean": res["inception_score_mean"], "is_std": res["inception_score_std"]}


def kernel_inception_distance(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    from torch_fidelity.metric_kid import kid_features_to_metric

    res = kid_features_to_metric(
        fake,
        real,
        kid_subsets=100,
        kid_subset_size=min(1000, len(fake), len(real)),
        kid_kernel="poly",
        kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
        rng_seed=2020,
        verbose=False,
    )
    return {
        "kid_mean": res["kernel_inception_distance_mean"],
        "kid_std": res["kernel_inception_distance_std"],
    }


def gaussian_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = features.double().numpy()
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of
    S1^(1/2) S2 S1^(1/2), a symmetric PSD matrix, so two `eigh` calls give it without a
    general matrix square root (whose iterations can return complex noise).
    """
    w1, v1 = np.linalg.eigh(sigma1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    inner = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(fake: torch.Tensor, real: torch.Tensor) -> float:
    """FID of two feature sets (N, D). With fewer samples than dimensions (small evaluations,
    the tests) the covariances have rank < N and the same value comes from N x N matrices:
    with S1 = A^T A and S2 = B^T B (A, B the centred features over sqrt(N - 1)), the
    eigenvalues of S1 S2 are the squared singular values of A B^T, so tr((S1 S2)^(1/2)) is
    the sum of those singular values: no D x D eigendecomposition."""
    n1, n2, d = len(fake), len(real), fake.shape[1]
    if n1 + n2 > d:
        return max(0.0, frechet_distance(*gaussian_stats(fake), *gaussian_stats(real)))
    x, y = fake.double().numpy(), real.double().numpy()
    a = (x - x.mean(axis=0)) / np.sqrt(n1 - 1)
    b = (y - y.mean(axis=0)) / np.sqrt(n2 - 1)
    diff = x.mean(axis=0) - y.mean(axis=0)
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    fid = diff @ diff + (a * a).sum() + (b * b).sum() - 2 * tr_covmean
    return max(0.0, float(fid))
