"""The compare page in a real Chromium: two finished runs' curves overlaid on shared step axes
(one chart per metric, one trace per job) and their training grids at one step side by side."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import numpy as np

from tests.builders import insert_job

METRICS = ("loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s")
READY = "document.body.dataset.chartsReady === '1'"


def finished_run(live, owner: str, steps: int, grid_steps: tuple[int, ...], shade: int) -> str:  # type: ignore[no-untyped-def]
    """A succeeded job with every training series at each step and a grid at `grid_steps`,
    written as the worker's sinks write them (metric rows, PNG files and their rows). The
    grids fade from noise into synthetic shapes, as a run's samples would."""
    from sqlalchemy import insert

    from app.core.tables import Metric, SampleGrid
    from models.data import synthetic_shapes
    from models.generate import image_grid, save_png

    job_id = insert_job(live.stack, owner, status="succeeded", steps=steps, step=steps)
    start = datetime.now(UTC) - timedelta(minutes=5)
    rows = [
        {
            "job_id": job_id,
            "name": name,
            "step": step,
            "value": (1.0 + shade / 100) / (1 + step / 50) + 0.01 * i,
            "time": start + timedelta(seconds=step),
        }
        for step in range(1, steps + 1)
        for i, name in enumerate(METRICS)
    ]
    folder = live.stack.data_dir / "jobs" / job_id / "samples"
    folder.mkdir(parents=True)
    shapes, _ = synthetic_shapes(16, 32, seed=shade)  # (16, 3, 32, 32)
    noise = np.random.default_rng(shade).integers(0, 256, shapes.shape)
    with live.stack.sessions()() as session:
        session.execute(insert(Metric), rows)
        for step in grid_steps:
            path = folder / f"step_{step:08d}.png"
            images = (step / steps) * shapes + (1 - step / steps) * noise
            save_png(image_grid(images.astype(np.uint8).transpose(0, 2, 3, 1)), str(path))
            rel = str(path.relative_to(live.stack.data_dir))
            session.add(SampleGrid(job_id=job_id, step=step, path=rel))
        session.commit()
    return job_id


def traces(page, metric: str) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    """(name, points) of each trace of the chart of `metric`."""
    return [
        (name, n)
        for name, n in page.evaluate(
            """(metric) => {
                const div = document.getElementById(`chart-${metric}`);
                return div && div.data ? div.data.map((t) => [t.name, t.x.length]) : [];
            }""",
            metric,
        )
    ]


def loaded_grid(page, job_id: str, step: int) -> None:  # type: ignore[no-untyped-def]
    """Wait until the job's figure shows its grid of `step`."""
    page.wait_for_selector(f'#grids figure[data-job="{job_id}"] img[data-loaded="{step}"]')


def job_names(live, key: str, *ids: str) -> list[str]:  # type: ignore[no-untyped-def]
    with live.client(key) as api:
        return [api.get(f"/v1/jobs/{job_id}").json()["name"] for job_id in ids]


def test_two_runs_side_by_side(live, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    owner = f"compare-{secrets.token_hex(4)}"
    key = live.new_key(owner)
    a = finished_run(live, owner, steps=200, grid_steps=(50, 100, 150, 200), shade=0)
    b = finished_run(live, owner, steps=120, grid_steps=(40, 80, 120), shade=90)
    unpicked = insert_job(live.stack, owner, status="failed")
    name_a, name_b = job_names(live, key, a, b)

    page = open_page(f"{live.url}/compare?jobs={a},{b}", key)
    page.wait_for_function(READY)
    for metric in METRICS:  # one chart per metric, one trace per job, every step of each
        assert traces(page, metric) == [(name_a, 200), (name_b, 120)], metric
    picked = page.eval_on_selector_all(
        "#picker input:checked", "boxes => boxes.map((b) => b.value)"
    )
    assert sorted(picked) == sorted([a, b])  # the picker lists newest first
    assert page.locator(f'#picker input[value="{unpicked}"]').is_checked() is False

    # the slider starts at the newest grid step (200): b's nearest grid is its last one
    loaded_grid(page, a, 200)
    loaded_grid(page, b, 120)
    before = page.eval_on_selector(f'#grids figure[data-job="{a}"] img', "img => img.src")
    # to the first step of any grid (40): each job shows its grid nearest to it
    page.eval_on_selector(
        "#step", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }"
    )
    loaded_grid(page, a, 50)
    loaded_grid(page, b, 40)
    after = page.eval_on_selector(f'#grids figure[data-job="{a}"] img', "img => img.src")
    assert after != before
    assert page.inner_text("#step-value") == "40"
    shot(page, "two-runs")

    # unpicking one redraws with the other alone, and the URL follows the picker
    page.locator(f'#picker input[value="{b}"]').uncheck()
    page.wait_for_function(READY)
    assert traces(page, "loss_d") == [(name_a, 200)]
    assert page.url.endswith(f"/compare?jobs={a}")
    assert page.locator("#grids figure").count() == 1
    assert page.inner_text("#step-value") == "50"  # the slider stays near the step picked
    loaded_grid(page, a, 50)


def test_another_keys_jobs_stay_invisible(live, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    owner = f"compare-{secrets.token_hex(4)}"
    a = finished_run(live, owner, steps=30, grid_steps=(30,), shade=10)
    b = finished_run(live, owner, steps=30, grid_steps=(30,), shade=20)

    page = open_page(f"{live.url}/compare?jobs={a},{b}", live.new_key())
    page.wait_for_function(READY)
    assert page.locator(f'#picker input[value="{a}"]').count() == 0
    assert traces(page, "loss_d") == []
    assert page.locator("#grids figure").count() == 0
    assert "not found" in page.inner_text(".toast")  # the API's 404, shown
    shot(page, "stranger")
