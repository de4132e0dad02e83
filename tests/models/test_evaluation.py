"""Evaluation needs local Inception weights; without them it fails early and says where."""

import pytest

from models import EvaluationUnavailable, Trainer, check_evaluation_available

from .conftest import tiny_config


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
