"""IS, FID and KID through torch-fidelity's InceptionV3, with a weights file the tests make.

Inception runs at 299x299 whatever the image size (~0.4 s an image on a loaded 2-core CPU),
so each test measures tens of images. The tests that need torch-fidelity skip in the main
.venv (its CPU torch has no matching torchvision) and run in .venv-eval (scripts/run test).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from models import (
    EvaluationUnavailable,
    ImageDataset,
    Trainer,
    check_evaluation_available,
    list_checkpoints,
    load_checkpoint,
)
from models.evaluation import Evaluator, fid_from_features, frechet_distance, gaussian_stats
from models.nets import build_generator

from .conftest import tiny_config
from .inception_weights import fidelity_or_skip, shared_weights

N = 24  # images per set: the features' covariance is rank-deficient, FID still compares


def test_missing_weights_setting_names_the_setting_and_the_file():
    with pytest.raises(EvaluationUnavailable) as err:
        check_evaluation_available(None)
    assert "SNGAN_INCEPTION_WEIGHTS" in str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in str(err.value)


def test_weights_path_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(EvaluationUnavailable, match=str(missing)):
        check_evaluation_available(missing)


def test_trainer_refuses_eval_without_weights_before_training(tmp_path):
    with pytest.raises(EvaluationUnavailable):
        Trainer(tiny_config(eval={"every": 5}), tmp_path, device="cpu")
    assert not (tmp_path / "checkpoints").exists()


def test_frechet_distance_matches_scipy_sqrtm_on_known_gaussians():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    d = 16
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # and the closed form for diagonal covariances: sum (sqrt(s1) - sqrt(s2))^2
    v1, v2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    closed = float((mu1 - mu2) @ (mu1 - mu2) + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(closed, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)


def test_fid_of_few_samples_equals_the_covariance_route():
    """Fewer samples than dimensions: the N x N route gives the D x D route's value (to the
    D x D eigensolver's noise on the zero eigenvalues)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 64, generator=g, dtype=torch.float64)
    y = 2 * torch.randn(12, 64, generator=g, dtype=torch.float64) + 0.5
    assert fid_from_features(x, y) == pytest.approx(
        frechet_distance(*gaussian_stats(x), *gaussian_stats(y)), rel=1e-7
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fidelity_or_skip()
    return shared_weights(tmp_path_factory.getbasetemp())


def noise_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """Horizontal colour ramps: an image family unlike uniform noise."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(n, 3, 1, 1, generator=g)
    ramp = torch.linspace(0.2, 1, 32).view(1, 1, 1, 32)
    return (colour * ramp * 255).round().to(torch.uint8).expand(-1, -1, 32, -1).contiguous()


@pytest.fixture(scope="module")
def features(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    ev = Evaluator(weights, torch.device("cpu"), tmp_path_factory.mktemp("cache"))
    return {
        "noise": ev.features(noise_images(2 * N, 1))[0],
        "smooth": ev.features(smooth_images(2 * N, 2))[0],
    }


def test_wrong_shape_weights_are_refused_naming_the_setting(weights, tmp_path):
    state = torch.load(weights, weights_only=True)
    state["fc.weight"] = state["fc.weight"][:10]  # a 10-class head: not InceptionV3's 1008
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(EvaluationUnavailable) as err:
        Evaluator(bad, torch.device("cpu"), tmp_path)
    assert "SNGAN_INCEPTION_WEIGHTS" in str(err.value) and "fc.weight" in str(err.value)
    with pytest.raises(EvaluationUnavailable, match="not a PyTorch state dict"):
        (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
        Evaluator(tmp_path / "junk.pth", torch.device("cpu"), tmp_path)
    # and a job refuses to start on them, before any step
    with pytest.raises(EvaluationUnavailable):
        Trainer(
            tiny_config(eval={"every": 5}), tmp_path / "job", device="cpu", inception_weights=bad
        )
    assert not (tmp_path / "job" / "checkpoints").exists()


def test_test_weights_are_informative(features):
    """Default init would give ~0 everywhere; these tell two image families apart."""
    noise, smooth = features["noise"], features["smooth"]
    assert noise.std() > 1e-2 and smooth.std() > 1e-2  # not collapsed
    assert torch.isfinite(noise).all() and torch.isfinite(smooth).all()  # not exploded
    within = max(fid_from_features(noise[:N], noise[N:]), fid_from_features(smooth[:N], smooth[N:]))
    between = fid_from_features(noise, smooth)
    assert between > 1.5 * within, (between, within)


def test_fid_of_a_dataset_against_itself_is_zero_and_far_below_noise(features):
    smooth, noise = features["smooth"], features["noise"]
    itself = fid_from_features(smooth, smooth)
    assert itself == pytest.approx(0, abs=1e-6)
    assert fid_from_features(smooth, noise) > 100 * max(itself, 1e-3)


def test_evaluate_a_tiny_generator_and_compute_real_features_once(weights, tmp_path):
    cfg = tiny_config(eval={"every": 5, "num_samples": N, "metrics": ["is", "fid", "kid"]})
    data = ImageDataset(smooth_images(N, 3), torch.zeros(N, dtype=torch.long), 0)
    torch.manual_seed(0)
    netG = build_generator(cfg.model)
    cache = tmp_path / "cache"
    ev = Evaluator(weights, torch.device("cpu"), cache)
    first = ev.evaluate(netG, cfg, data, "smooth", seed=0)
    assert set(first) == {"is_mean", "is_std", "fid", "kid_mean", "kid_std"}
    assert all(np.isfinite(v) for v in first.values())
    assert first["is_mean"] >= 1.0 and first["fid"] >= 0.0 and first["kid_std"] >= 0.0
    assert ev.real_images_seen == N  # the dataset went through Inception once ...
    again = ev.evaluate(netG, cfg, data, "smooth", seed=0)
    assert ev.real_images_seen == N  # ... and not again
    assert again == first  # same generator, same seed: the same samples
    fresh = Evaluator(weights, torch.device("cpu"), cache)  # a new process, say: a resume
    fresh.real_features(data, "smooth")
    assert fresh.real_images_seen == 0  # read back from the disk cache
    assert netG.training  # put back in the mode it was in


def test_resume_with_evaluation_is_bit_identical_and_the_best_checkpoint_is_pinned(
    weights, tmp_path
):
    from .test_trainer import Recorder, _assert_same_state

    class Best(Recorder):
        def __init__(self, stop_at: int | None = None) -> None:
            super().__init__(stop_at)
            self.best: list[tuple[int, float]] = []

        def on_best(self, step, fid):
            self.best.append((step, fid))

    def config(every: int):
        return tiny_config(
            train={"steps": 8, "ema_decay": 0.9},
            data={"source": "synthetic", "num_images": 16},
            eval={"every": every, "num_samples": 8, "metrics": ["fid"]},
            checkpoint_every=2,
            keep_last=1,
        )

    # the reference: evaluation off, straight through
    plain = Trainer(config(0), tmp_path / "plain", device="cpu")
    plain.fit()

    first = Best(stop_at=4)  # evaluates at 4 and stops there
    part = Trainer(
        config(4), tmp_path / "part", sinks=first, device="cpu", inception_weights=weights
    )
    stopped = part.fit()
    assert stopped.stopped and stopped.step == 4
    second = Best()
    resumed = Trainer(
        config(4), tmp_path / "part", sinks=second, device="cpu", inception_weights=weights
    )
    resumed.fit(resume_from=stopped.checkpoint)
    _assert_same_state(plain, resumed)  # evaluation drew nothing from the training RNG

    fids = {s: m["fid"] for r in (first, second) for s, m in r.metrics.items() if "fid" in m}
    assert sorted(fids) == [4, 8]
    # the EMA generator is evaluated too; the best stays G's FID (`fid`)
    assert [s for r in (first, second) for s, m in r.metrics.items() if "fid_ema" in m] == [4, 8]
    assert first.best == [(4, fids[4])]  # the first FID is the best so far
    assert second.best[0] == (4, fids[4])  # reported again on resume
    best_step = min(fids, key=lambda s: fids[s])
    assert resumed.best == (best_step, fids[best_step])
    # keep_last=1: 6 went when 8 was written; 4, the best, stayed while it was the best
    assert 6 in second.removed
    assert (4 in second.removed) == (best_step == 8)
    kept = [s for s, _ in list_checkpoints(tmp_path / "part" / "checkpoints")]
    assert kept == sorted({best_step, 8})
    state = load_checkpoint(tmp_path / "part" / "checkpoints" / f"step_{best_step:08d}.pt")
    assert state["best"] == [best_step, fids[best_step]]


EVALUATED = {"is_mean", "is_std", "fid", "kid_mean", "kid_std"}


def test_with_an_ema_both_generators_are_evaluated_each_under_its_own_names(weights, tmp_path):
    """`fid`, `is_mean`, ... are G's and `fid_ema`, `is_mean_ema`, ... the EMA generator's
    (with its standing BN statistics): each equals a direct evaluation of that generator
    after the run, the two differ, the real images went through Inception once, and the
    best checkpoint follows G's FID. An EMA that is still a copy of G scores exactly as G."""
    from .test_trainer import Recorder

    def config(steps: int, **ema: object):
        return tiny_config(
            train={"steps": steps, **ema},
            data={"source": "synthetic", "num_images": 16},
            eval={"every": 2, "num_samples": 8, "metrics": ["is", "fid", "kid"]},
        )

    cfg = config(4, ema_decay=0.9, ema_standing_stats=True)
    sinks = Recorder()
    trainer = Trainer(cfg, tmp_path / "ema", sinks=sinks, device="cpu", inception_weights=weights)
    trainer.fit()
    names = EVALUATED | {f"{n}_ema" for n in EVALUATED}
    assert {s for s, m in sinks.metrics.items() if names & set(m)} == {2, 4}
    assert all(names <= set(sinks.metrics[s]) for s in (2, 4))
    ev = trainer.evaluator
    assert ev is not None and ev.real_images_seen == 16  # once, for two generators twice

    last, seed = sinks.metrics[4], cfg.train.seed
    assert trainer.ema_G is not None
    plain = ev.evaluate(trainer.netG, cfg, trainer.dataset, trainer.eval_key, seed=seed)
    averaged = ev.evaluate(trainer.ema_G, cfg, trainer.dataset, trainer.eval_key, seed=seed)
    print("G:", plain, "EMA:", averaged)
    assert {n: last[n] for n in plain} == plain
    assert {n: last[f"{n}_ema"] for n in averaged} == averaged
    # (IS is 1 for both: 8 samples in 8 splits of one)
    assert plain["fid"] != averaged["fid"] and plain["kid_mean"] != averaged["kid_mean"]
    fids = {s: sinks.metrics[s]["fid"] for s in (2, 4)}
    best = min(fids, key=lambda s: fids[s])
    assert trainer.best == (best, fids[best])

    # ema_start past the run: the average is G's copy (weights and BN buffers), and both get
    # the same noise, so every number is the same
    copy = Recorder()
    Trainer(
        config(2, ema_decay=0.9, ema_start=2),
        tmp_path / "copy",
        sinks=copy,
        device="cpu",
        inception_weights=weights,
    ).fit()
    evaluated = copy.metrics[2]
    assert {n: evaluated[f"{n}_ema"] for n in EVALUATED} == {n: evaluated[n] for n in EVALUATED}
