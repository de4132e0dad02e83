"""The embedded service end to end: ``sngan serve`` (API + worker child, SQLite, filesystem
broker) in a temporary data directory, driven by the ``sngan`` client commands and httpx."""

from __future__ import annotations

import io
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.cli.cli_helpers import Server, alive, descendants, run_sngan, write_npz

pytestmark = pytest.mark.slow

STEPS = 30
TINY_JOB = [
    "--arch", "cnn32", "--g-ch", "8", "--d-ch", "8", "--batch-size", "8", "--n-dis", "1",
    "--steps", str(STEPS), "--checkpoint-every", "10", "--sample-every", "10",
]  # fmt: skip


def wait_for_status(url: str, job_id: str, wanted: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in wanted:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not in {wanted} after {timeout} s: {job}")


# The worker child trains on one torch thread, as the stacks' workers do (tests/stacks.py):
# the tests share two cores with it, and OpenMP threads spin-waiting for a descheduled peer
# make a training step many times slower on a loaded box.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def test_embedded_serve_trains_serves_stops_and_restarts(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory(**ONE_THREAD)
    server.start()
    url, env, cwd = server.url, server.env, server.workdir
    assert "SNGAN_AUTH=off" in server.log()  # embedded + loopback: said out loud

    # Upload and submit with the CLI; both print the new id alone on the last line.
    upload = run_sngan(
        "datasets", "upload", str(write_npz(tmp_path / "tiny.npz")), "--url", url,
        env=env, cwd=cwd,
    )  # fmt: skip
    assert upload.returncode == 0, upload.stderr
    dataset_id = upload.stdout.strip().splitlines()[-1]
    assert "64 images 32x32" in upload.stderr

    submit = run_sngan(
        "jobs", "submit", "--dataset", dataset_id, "--name", "tiny", *TINY_JOB, "--url", url,
        env=env, cwd=cwd,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().splitlines()[-1]

    # Watch it to the end: plain lines (stdout is a pipe), exit 0 on success.
    watch = run_sngan("jobs", "watch", job_id, "--url", url, env=env, cwd=cwd, timeout=300)
    assert watch.returncode == 0, f"{watch.stdout}\n{watch.stderr}\n{server.log()}"
    step_lines = [line for line in watch.stdout.splitlines() if re.search(r"step \d+/30", line)]
    assert step_lines, watch.stdout
    assert step_lines[-1].startswith(f"succeeded step {STEPS}/{STEPS} (100%)")
    assert "succeeded" in watch.stderr

    job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
    assert job["status"] == "succeeded"
    assert job["progress"]["step"] == STEPS
    assert {"loss_d", "loss_g"} <= set(job["latest_metrics"])

    # A sample grid over HTTP, and the same bytes through `sngan samples`.
    grid = httpx.get(f"{url}/v1/jobs/{job_id}/samples", params={"n": 16, "seed": 3}, timeout=60)
    assert grid.status_code == 200, grid.text
    width, height = png_size(grid.content)
    assert width == height and width >= 4 * 32
    out_file = tmp_path / "grid.png"
    samples = run_sngan(
        "samples", job_id, "-n", "16", "--seed", "3", "-o", str(out_file), "--url", url,
        env=env, cwd=cwd,
    )  # fmt: skip
    assert samples.returncode == 0, samples.stderr
    assert out_file.read_bytes() == grid.content

    listed = run_sngan("jobs", "list", "--json", "--url", url, env=env, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout

    # SIGINT stops the API and the worker child; the command exits 0.
    assert server.proc is not None
    children = descendants(server.proc.pid)
    assert children, "sngan serve started no worker process"
    assert server.stop(signal.SIGINT) == 0, server.log()
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)], server.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)

    # Restart on the same data directory: the job, its checkpoints and its samples are there.
    server.start()
    again = wait_for_status(url, job_id, {"succeeded"}, timeout=10)
    assert again["progress"]["step"] == STEPS
    checkpoints = httpx.get(f"{url}/v1/jobs/{job_id}/checkpoints", timeout=10).json()["data"]
    assert STEPS in [c["step"] for c in checkpoints]
    regrid = httpx.get(f"{url}/v1/jobs/{job_id}/samples", params={"n": 16, "seed": 3}, timeout=60)
    assert regrid.status_code == 200, regrid.text
    assert regrid.content == grid.content
    assert server.stop(signal.SIGTERM) == 0, server.log()


def test_ctrl_c_during_a_job_hands_it_back_and_a_restart_finishes_it(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while a job trains:
    `sngan serve` exits 0 within its grace period without a cold shutdown; the job is back
    in the queue with a checkpoint at the step it stopped; the next `sngan serve` picks it up
    at once and finishes it without training a step twice."""
    # A job still running at Ctrl-C: observed at step >= 20 (progress lags by one 1 s flush
    # period at most), stopped within a step of the signal, 200 steps leave >= 100 to spare.
    steps = 200
    server = server_factory(**ONE_THREAD)
    server.start()
    url, env, cwd = server.url, server.env, server.workdir
    job = TINY_JOB[: TINY_JOB.index("--steps")] + ["--steps", str(steps)]
    job += ["--checkpoint-every", "1000", "--sample-every", "1000"]
    submit = run_sngan(
        "jobs", "submit", "--source", "synthetic", *job, "--url", url, env=env, cwd=cwd
    )
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().splitlines()[-1]

    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()["progress"]["step"] < 20:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.3)
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGINT)
    assert server.proc.wait(timeout=30) == 0, server.log()
    assert "worker still busy" not in server.log()  # no cold shutdown was needed

    server.start()
    queued = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
    stopped_at = queued["progress"]["step"]
    assert 20 <= stopped_at < steps
    checkpoints = httpx.get(f"{url}/v1/jobs/{job_id}/checkpoints", timeout=10).json()["data"]
    assert [c["step"] for c in checkpoints] == [stopped_at]
    done = wait_for_status(url, job_id, {"succeeded"}, timeout=300)
    assert done["progress"]["step"] == steps and done["attempts"] == 2
    points = httpx.get(
        f"{url}/v1/jobs/{job_id}/metrics", params={"names": "loss_d", "limit": 10_000}, timeout=10
    ).json()["data"]
    assert sorted(p["step"] for p in points) == list(range(1, steps + 1))
    assert server.stop(signal.SIGTERM) == 0, server.log()


def test_several_api_processes_share_the_port_and_their_metrics(
    server_factory: Callable[..., Server],
) -> None:
    """`sngan serve --workers 2`: two API processes behind one port (with the worker child),
    /metrics of either counts the requests of both, Ctrl-C stops every process."""
    server = server_factory("--workers", "2")
    server.start()
    assert server.proc is not None
    assert "2 API processes" in server.log()

    def metric(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))

    healthz = 'sngan_http_requests_total{method="GET",route="/healthz",status="200"}'
    before = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert metric(before, "sngan_api_processes") == 2  # one per live process, summed
    for _ in range(60):  # a new connection each: the kernel hands them to either process
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    after = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert metric(after, healthz) - metric(before, healthz) == 60
    listed = httpx.get(f"{server.url}/v1/jobs", timeout=10)
    assert listed.status_code == 200, listed.text

    children = descendants(server.proc.pid)
    assert len(children) >= 4  # two API processes, the Celery worker and its pool child
    os.killpg(server.proc.pid, signal.SIGINT)
    assert server.proc.wait(timeout=30) == 0, server.log()
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)], server.log()


def test_auth_on_needs_a_key_and_errors_exit_non_zero(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(SNGAN_AUTH="on")
    server.start()
    url, env, cwd = server.url, server.env, server.workdir
    assert "SNGAN_AUTH=off" not in server.log()

    anonymous = run_sngan("jobs", "list", "--url", url, env=env, cwd=cwd)
    assert anonymous.returncode != 0
    assert "HTTP 401" in anonymous.stderr

    created = run_sngan("keys", "create", "--owner", "carol", env=env, cwd=cwd)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    keyed = {**env, "SNGAN_API_KEY": key}

    listed = run_sngan("jobs", "list", "--json", "--url", url, env=keyed, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    assert '"data": []' in listed.stdout

    missing = run_sngan("jobs", "watch", "no-such-job", "--url", url, env=keyed, cwd=cwd)
    assert missing.returncode != 0
    assert "HTTP 404" in missing.stderr

    invalid = run_sngan(
        "jobs", "submit", "--source", "synthetic", "--arch", "vgg", "--url", url,
        env=keyed, cwd=cwd,
    )  # fmt: skip
    assert invalid.returncode != 0
    assert "HTTP 422" in invalid.stderr

    assert server.stop(signal.SIGTERM) == 0, server.log()
