"""The GAN must learn: samples of a small conditional SN-GAN trained briefly on the synthetic
shapes (by the project's trainer: tests/trained.py, shared with the class-sheet tests) are
recognised, as the class they were asked for, by a classifier trained on real data; samples
of the same generator before training are not."""

import numpy as np
import pytest
import torch

from models import build_generator, generate_images, load_generator, synthetic_shapes
from models.quality import classifier_statistics
from tests import trained
from tests.trained import SHAPES, TrainedGAN

pytestmark = pytest.mark.slow


def test_conditional_gan_learns_the_synthetic_shapes(trained_gan: TrainedGAN) -> None:
    classifier = trained.shape_classifier()
    real, real_labels = synthetic_shapes(400, 32, seed=7)
    real_stats = classifier_statistics(classifier, real.transpose(0, 2, 3, 1), real_labels)
    assert real_stats["label_match"] > 0.95  # the yardstick itself works

    cfg = trained.config(trained_gan.seed)
    torch.manual_seed(trained_gan.seed)  # as the trainer starts it
    untrained = build_generator(cfg.model).eval()
    netG, _ = load_generator(trained_gan.checkpoint)
    labels = np.arange(400) % SHAPES

    def stats(generator: torch.nn.Module) -> dict[str, float]:
        images = generate_images(generator, cfg, 400, seed=1, labels=labels.tolist())
        return classifier_statistics(classifier, images, labels)

    before, after = stats(untrained), stats(netG)
    print("before", before, "after", after)
    assert before["label_match"] < 0.3
    assert after["label_match"] > 0.6, after
    assert after["min_class_share"] > 0.1, after  # every class is produced
    assert after["label_match"] > before["label_match"] + 0.4
