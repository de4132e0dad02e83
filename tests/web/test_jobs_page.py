"""The jobs page in a real Chromium: a job submitted through its form trains live on the job
page, a bad value is shown beside its field, and the key decides what is seen."""

from __future__ import annotations

import io
import re

import numpy as np

from tests.web.helpers import cancel_all, job_body, wait_status

LOSSES = "#chart-losses"
PROGRESS = "document.querySelector('#head .progress')"
# a predicate for page.wait_for_function(..., arg=[chart, trace name, n]): at least n points
POINTS = """([chart, name, n]) => {
    const trace = document.querySelector(chart)?.data?.find((t) => t.name === name);
    return trace !== undefined && trace.x.length >= n;
}"""


def trace_points(page, chart: str, name: str) -> int:  # type: ignore[no-untyped-def]
    """Points of the trace `name` as plotly holds them (0 before the chart exists)."""
    return int(
        page.evaluate(
            """([chart, name]) => {
                const div = document.querySelector(chart);
                const trace = div && div.data && div.data.find((t) => t.name === name);
                return trace ? trace.x.length : 0;
            }""",
            [chart, name],
        )
    )


def form_ready(page) -> None:  # type: ignore[no-untyped-def]
    """Wait until the form holds the defaults and choices of /openapi.json."""
    page.wait_for_selector(
        '#new-job select[name="model.arch"] option[value="cnn32"]', state="attached"
    )


def fill_form(page, values: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    form = page.locator("#new-job")
    for name, value in values.items():
        field = form.locator(f'[name="{name}"]')
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)


def test_a_job_submitted_through_the_form_trains_live_on_its_page(live, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    key = live.new_key()
    with live.client(key) as api:
        # a long job holds the stack's one worker, so the form's job waits `queued` until
        # its page is open: the page then sees every point arrive
        blocker = api.post("/v1/jobs", json=job_body(steps=5000, name="blocker")).json()
        wait_status(api, blocker["id"], "running")
        try:
            page = open_page(f"{live.url}/", key)
            form_ready(page)
            # the paper's defaults came from /openapi.json
            assert page.input_value('[name="train.steps"]') == "50000"
            assert page.input_value('[name="train.n_dis"]') == "5"
            fill_form(
                page,
                {
                    "name": "form-tiny",
                    "dataset": "source:synthetic",
                    "model.arch": "cnn32",
                    "model.g_ch": "16",
                    "model.d_ch": "16",
                    "train.steps": "60",
                    "train.batch_size": "16",
                    "train.n_dis": "1",
                    "checkpoint_every": "20",
                    "sample_every": "10",
                },
            )
            page.click('#new-job button[type="submit"]')
            link = page.locator("#jobs a.job-name", has_text="form-tiny")
            link.wait_for()
            row = page.locator("#jobs tbody tr", has=page.locator("a", has_text="form-tiny"))
            assert row.locator('[data-role="status"]').inner_text() == "queued"
            shot(page, "jobs")

            link.click()
            page.wait_for_url(re.compile(r"/jobs/[0-9a-f]+$"))
            job_id = page.url.rsplit("/", 1)[1]
            page.wait_for_selector('#head [data-role="status"]:has-text("queued")')
            assert trace_points(page, LOSSES, "loss_d") == 0
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads

            api.post(f"/v1/jobs/{blocker['id']}/cancel")
            # the progress bar moves and the curves gain points, fed by the event stream
            page.wait_for_function(f"Number({PROGRESS}.getAttribute('aria-valuenow')) > 0")
            page.wait_for_function(POINTS, arg=[LOSSES, "loss_d", 1])
            page.wait_for_selector('#head [data-role="status"]:has-text("succeeded")')
            page.wait_for_function(POINTS, arg=[LOSSES, "loss_d", 60])
            assert trace_points(page, LOSSES, "loss_d") == 60  # each step once
            assert page.evaluate("window.__sameDocument") is True
            progress = page.locator("#head .progress")
            assert progress.get_attribute("aria-valuenow") == "60"
            assert "60 / 60" in page.locator('#head [data-role="progress-text"]').inner_text()
            for chart, name in (
                ("#chart-d", "d_fake"),
                ("#chart-lr", "lr"),
                ("#chart-speed", "steps_per_s"),
            ):
                assert trace_points(page, chart, name) == 60, (chart, name)
            # the API has the same 60 steps the page drew
            points = api.get(f"/v1/jobs/{job_id}/metrics", params={"names": "loss_d"}).json()
            assert [p["step"] for p in points["data"]] == list(range(1, 61))
            page.wait_for_selector("#grid[data-step]")
            shot(page, "job")

            # back on the list: the job's newest training grid is its thumbnail
            page.click("header.top >> text=Jobs")
            thumb = page.locator("#jobs tbody tr", has=page.locator("a", has_text="form-tiny"))
            thumb.locator("td.thumb img").wait_for()
            page.wait_for_function(
                "[...document.querySelectorAll('#jobs td.thumb img')]"
                ".some((img) => img.naturalWidth > 0 && img.title.endsWith('step 60'))"
            )
            shot(page, "jobs-done")
        finally:
            cancel_all(api)


def test_a_bad_value_is_shown_beside_its_field(live, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    key = live.new_key()
    page = open_page(f"{live.url}/", key)
    form_ready(page)
    fill_form(page, {"train.steps": "0", "train.batch_size": "100000"})
    page.click('#new-job button[type="submit"]')

    steps_error = page.locator('.field-error[data-field="train.steps"]')
    steps_error.wait_for()
    assert "greater than or equal to 1" in steps_error.inner_text()
    batch_error = page.locator('.field-error[data-field="train.batch_size"]')
    assert "SNGAN_MAX_BATCH_SIZE" in batch_error.inner_text()
    # beside its field: the message follows the label holding the input
    assert steps_error.evaluate("el => el.closest('label').querySelector('input').name") == (
        "train.steps"
    )
    assert page.locator('[name="train.steps"]').evaluate("el => el.classList.contains('invalid')")
    with live.client(key) as api:
        assert api.get("/v1/jobs").json()["data"] == []  # nothing was created
    shot(page)

    # fixed, the errors go and the job is queued
    fill_form(page, {"train.steps": "40", "train.batch_size": "16", "name": "fixed"})
    page.click('#new-job button[type="submit"]')
    page.locator("#jobs a.job-name", has_text="fixed").wait_for()
    assert page.locator(".field-error").count() == 0
    with live.client(key) as api:
        cancel_all(api)


def test_the_page_asks_for_a_key_once_and_shows_only_that_keys_jobs(live, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    first, second = live.new_key(), live.new_key()
    with live.client(first) as api:
        job = api.post("/v1/jobs", json=job_body(name="first-keys-job")).json()
        api.post(f"/v1/jobs/{job['id']}/cancel")  # queued: canceled at once, never trained

    urls: list[str] = []
    auth_headers: list[str | None] = []
    page = open_page(f"{live.url}/")
    page.on("request", lambda r: urls.append(r.url))
    page.on(
        "request",
        lambda r: auth_headers.append(r.headers.get("authorization")) if "/v1/" in r.url else None,
    )
    dialog = page.locator("dialog.key-dialog")
    dialog.wait_for()
    assert "missing API key" in dialog.inner_text()
    dialog.locator('input[name="key"]').fill(first)
    dialog.locator('button[type="submit"]').click()
    page.locator("#jobs a.job-name", has_text="first-keys-job").wait_for()
    page.locator("#jobs").get_by_text("canceled").wait_for()
    assert page.locator("dialog.key-dialog").count() == 0  # asked once
    # the status filter asks the API for that status only
    page.select_option("#status-filter", "running")
    page.locator("#jobs-empty").wait_for()
    page.select_option("#status-filter", "canceled")
    page.locator("#jobs a.job-name", has_text="first-keys-job").wait_for()
    shot(page, "first-key")

    # the key travels in the Authorization header only: never in a URL, kept for the tab
    page.reload()
    page.locator("#jobs a.job-name", has_text="first-keys-job").wait_for()
    assert page.locator("dialog.key-dialog").count() == 0
    assert urls and not any(first in u or first.split("_")[-1] in u for u in urls)
    assert auth_headers and all(h == f"Bearer {first}" for h in auth_headers)

    # another key sees none of those jobs, in the list or by the job's own URL
    other = open_page(f"{live.url}/", second)
    other.locator("#jobs-empty").wait_for()
    assert other.locator("#jobs tbody tr").count() == 0
    shot(other, "second-key")
    other.goto(f"{live.url}/jobs/{job['id']}")
    other.wait_for_selector('#head h1:has-text("No such job")')

    # a wrong key is refused and asked for again
    wrong = open_page(f"{live.url}/", "sngan_0000_not-a-key")
    wrong.locator("dialog.key-dialog").wait_for()
    assert "invalid or revoked" in wrong.locator("dialog.key-dialog").inner_text()


def npz(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, images=images)
    return buffer.getvalue()


def test_a_dataset_uploaded_through_the_form_is_trained_on(live, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    key = live.new_key()
    page = open_page(f"{live.url}/", key)
    form_ready(page)
    page.select_option('#new-job [name="dataset"]', "upload")
    # a file that is not a dataset: the API's 422 is shown beside the file field
    page.set_input_files(
        '#new-job [name="file"]',
        {"name": "notes.npz", "mimeType": "application/octet-stream", "buffer": b"not a zip"},
    )
    page.click('#new-job button[type="submit"]')
    error = page.locator('.field-error[data-field="file"]')
    error.wait_for()
    assert "not a .npz or .zip" in error.inner_text()

    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    page.set_input_files(
        '#new-job [name="file"]',
        {"name": "mine.npz", "mimeType": "application/octet-stream", "buffer": npz(images)},
    )
    fill_form(
        page,
        {
            "name": "on-my-images",
            "model.arch": "cnn32",
            "model.g_ch": "16",
            "model.d_ch": "16",
            "train.steps": "40",
            "train.batch_size": "16",
            "train.n_dis": "1",
        },
    )
    page.click('#new-job button[type="submit"]')
    page.locator("#jobs a.job-name", has_text="on-my-images").wait_for()
    with live.client(key) as api:
        [dataset] = api.get("/v1/datasets").json()["data"]
        [job] = api.get("/v1/jobs").json()["data"]
        assert (dataset["filename"], dataset["num_images"]) == ("mine.npz", 64)
        assert job["config"]["dataset"]["id"] == dataset["id"]
        cancel_all(api)
    # the upload is now one of the form's datasets, and chosen
    assert page.input_value('#new-job [name="dataset"]') == f"id:{dataset['id']}"
    assert page.locator(".field-error").count() == 0
    shot(page)
