"""Health, readiness, Prometheus metrics, the OpenAPI document, and start-up behaviour."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.served import serve
from tests.stacks import REPO, Stack, base_env, free_port


def test_health_readiness_and_metrics(stack: Stack, api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}

    api.get("/v1/jobs")
    text = api.get("/metrics").text
    assert re.search(
        r'sngan_http_requests_total\{method="GET",route="/v1/jobs",status="200"\} \d', text
    )
    assert (
        'sngan_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/jobs"}'
        in text
    )
    for status in ("queued", "running", "succeeded", "failed", "canceling", "canceled"):
        assert f'sngan_jobs{{status="{status}"}}' in text
    assert re.search(r'sngan_queue_depth\{queue="gpu"\} \d', text)
    assert "sngan_generation_batch_size_bucket" in text


def test_openapi_describes_the_contract(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    wanted = {
        "/v1/datasets": {"get", "post"},
        "/v1/datasets/{dataset_id}": {"get", "delete"},
        "/v1/jobs": {"get", "post"},
        "/v1/jobs/{job_id}": {"get", "delete"},
        "/v1/jobs/{job_id}/cancel": {"post"},
        "/v1/jobs/{job_id}/resume": {"post"},
        "/v1/jobs/{job_id}/metrics": {"get"},
        "/v1/jobs/{job_id}/events": {"get"},
        "/v1/jobs/{job_id}/checkpoints": {"get"},
        "/v1/jobs/{job_id}/checkpoints/{step}": {"get"},
        "/v1/jobs/{job_id}/samples": {"get"},
        "/v1/jobs/{job_id}/training-samples/{step}": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in wanted.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), path
    upload = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert "file" in upload["multipart/form-data"]["schema"]["properties"]
    job = spec["components"]["schemas"]["JobPublic"]["properties"]
    for field in (
        "id",
        "name",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "config",
        "progress",
        "latest_metrics",
        "error",
        "attempts",
        "links",
    ):
        assert field in job


def test_readyz_is_503_while_the_database_and_broker_are_unreachable(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    env = base_env(tmp_path / "data") | {
        "SNGAN_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{closed}/none",
        "SNGAN_BROKER_URL": f"redis://127.0.0.1:{closed}/0",
    }
    with serve(env, tmp_path / "api.log") as app, app.client(timeout=30) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "not_ready"
        assert "database" in error["message"] and "broker" in error["message"]
        assert client.get("/healthz").status_code == 200


def test_auth_off_acts_as_local_and_says_so_at_start(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data") | {"SNGAN_AUTH": "off", "SNGAN_MIGRATE_ON_STARTUP": "true"}
    with serve(env, tmp_path / "api.log") as app, app.client() as client:
        response = client.get("/v1/jobs")
        assert response.status_code == 200 and response.json() == {"data": [], "next_cursor": None}
        assert client.get("/readyz").status_code == 200  # embedded: SQLite + filesystem
    assert "SNGAN_AUTH=off" in (tmp_path / "api.log").read_text()


@pytest.mark.parametrize(
    "module",
    [
        "app.main",
        "app.api.routes.outputs",
        "app.api.services.jobs",
        "app.core.leases",
        "worker.celery_app",
    ],
)
def test_modules_import_without_torch(module: str) -> None:
    """The API process and the worker's parent process start without loading torch."""
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=base_env(REPO / "none"),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
