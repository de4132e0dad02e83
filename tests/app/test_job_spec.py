"""One job spec: the API's schema and models/config.py's dataclasses name the same fields with
the same defaults, and the config refuses what it does not know."""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

import pytest
from pydantic import BaseModel

from app.api import fields as api_fields
from app.api.schemas import EvalSpec, JobCreate, ModelSpec, TrainSpec
from app.core.tables import JOB_FIELDS, Job
from models import config
from models.config import EvalConfig, ModelConfig, RunConfig, TrainConfig, default_of

SECTIONS: list[tuple[type[BaseModel], type]] = [
    (ModelSpec, ModelConfig),
    (TrainSpec, TrainConfig),
    (EvalSpec, EvalConfig),
]


def _request_names(kind: type) -> set[str]:
    return {f.name for f in config.request_fields(kind)}


@pytest.mark.parametrize(("schema", "kind"), SECTIONS, ids=lambda x: x.__name__)
def test_each_section_has_the_same_fields_and_defaults(schema: type[BaseModel], kind: type) -> None:
    # a field added to one side only fails here: the API would accept what the trainer
    # ignores, or the trainer would have an option no request can set
    assert set(schema.model_fields) == _request_names(kind)
    for f in config.request_fields(kind):
        api_field = schema.model_fields[f.name]
        assert api_field.get_default(call_default_factory=True) == default_of(f), f.name
        assert api_field.description == f.metadata["doc"], f.name
    # the fields a request does not set still construct (channels, classes: from the data)
    kind()


def test_the_job_body_is_the_run_spec_plus_the_jobs_own_fields() -> None:
    assert set(JobCreate.model_fields) == _request_names(RunConfig) | JOB_FIELDS
    for f in config.request_fields(RunConfig):
        if f.name not in config.SECTIONS:
            assert JobCreate.model_fields[f.name].get_default() == default_of(f), f.name


def test_a_default_request_trains_with_the_trainers_defaults() -> None:
    body = JobCreate.model_validate({"dataset": {"source": "synthetic"}}).model_dump(mode="json")
    job = Job(config=body)
    cfg = RunConfig.from_dict(job.run_spec())
    assert cfg == RunConfig()


def test_a_full_request_reaches_the_config_unchanged() -> None:
    body: dict[str, Any] = {
        "name": "x",
        "dataset": {"source": "synthetic", "num_images": 64},
        "model": {"arch": "cnn48", "z_dim": 64, "g_ch": 32, "d_ch": 48, "conditional": False},
        "train": {
            "steps": 7,
            "batch_size": 3,
            "n_dis": 2,
            "loss": "ns",
            "lr_g": 1e-3,
            "lr_d": 3e-4,
            "betas": [0.5, 0.99],
            "lr_decay": "none",
            "ema_decay": 0.99,
            "seed": 11,
            "precision": "fp32",
        },
        "eval": {"every": 5, "num_samples": 100, "metrics": ["kid"]},
        "checkpoint_every": 3,
        "sample_every": 4,
    }
    validated = JobCreate.model_validate(body).model_dump(mode="json")
    cfg = RunConfig.from_dict(Job(config=validated).run_spec())
    spec = cfg.to_dict()
    for section in ("model", "train", "eval"):
        for key, value in body[section].items():
            assert spec[section][key] == value, f"{section}.{key}"
    assert (cfg.checkpoint_every, cfg.sample_every) == (3, 4)


def test_the_schemas_choices_are_the_configs() -> None:
    def choices(name: str) -> set[str]:
        return set(typing.get_args(getattr(api_fields, name)))

    assert choices("Arch") == set(config.ARCHS)
    assert choices("Loss") == set(config.LOSSES)
    assert choices("LrDecay") == set(config.LR_DECAYS)
    assert choices("Precision") == set(config.PRECISIONS)
    assert choices("EvalMetric") == set(config.EVAL_METRICS)


def test_every_request_field_has_help_text() -> None:
    requested = [f.name for f in config.request_fields(RunConfig)]
    sections = [kind for name, kind in config.SECTIONS.items() if name in requested]
    for kind in (RunConfig, *sections):
        for f in config.request_fields(kind):
            if f.name not in config.SECTIONS:
                assert f.metadata.get("doc"), f"{kind.__name__}.{f.name} has no help text"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"dataset": {"source": "synthetic"}}, ["dataset"]),
        ({"name": "x", "train": {"steps": 3}}, ["name"]),
        ({"train": {"stpes": 3}}, ["train.stpes"]),
        ({"model": {"arch": "cnn32", "width": 8}, "eval": {"n": 1}}, ["eval.n", "model.width"]),
    ],
)
def test_from_dict_refuses_unknown_keys_naming_them(body: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ValueError, match="unknown config keys") as e:
        RunConfig.from_dict(body)
    assert str(e.value).endswith(", ".join(named))


def test_from_dict_reads_back_what_to_dict_wrote() -> None:
    cfg = RunConfig(
        model=ModelConfig(arch="cnn32", g_ch=8, conditional=True, num_classes=3, channels=1),
        train=TrainConfig(steps=9, betas=(0.1, 0.2), ema_decay=0.5, log_every=2),
        keep_last=2,
    )
    cfg.speed.compile = False
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert {f.name for f in fields(RunConfig)} == set(cfg.to_dict())
