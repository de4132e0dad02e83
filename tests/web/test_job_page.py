"""The job page in a real Chromium: the sample timeline's slider, generating images
(same seed, same bytes), cancel and delete; and the jobs page with auth off."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.web.helpers import (
    Live,
    cancel_all,
    insert_long_job,
    job_body,
    wait_status,
)

# the bytes of an <img>'s current (object URL) source, hashed in the page
IMAGE_SHA256 = """async (selector) => {
    const img = document.querySelector(selector);
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}"""

# the steps of a chart's trace, as plotly holds them
STEPS_OF = """([chart, name]) =>
    document.querySelector(chart).data.find((t) => t.name === name).x"""


@pytest.fixture(scope="module")
def trained(live: Live) -> dict[str, Any]:
    """A tiny job trained to the end (per stack), with grids at steps 10, 20, ..., 60."""
    key = live.new_key()
    with live.client(key) as api:
        job = api.post("/v1/jobs", json=job_body(name="trained")).json()
        wait_status(api, job["id"], "succeeded")
    return {"key": key, "id": job["id"]}


def test_dragging_the_slider_loads_another_training_grid(live, trained, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    page = open_page(f"{live.url}/jobs/{trained['id']}", trained["key"])
    grid = page.locator("#grid")
    page.wait_for_selector('#grid[data-step="60"]')  # the newest grid first
    page.wait_for_function("document.querySelector('#grid').naturalWidth > 0")
    newest = page.evaluate(IMAGE_SHA256, "#grid")

    slider = page.locator("#grid-step")
    slider.scroll_into_view_if_needed()  # the mouse reaches only what is on screen
    box = slider.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] - 4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + 2, y, steps=12)
    page.mouse.up()
    page.wait_for_selector('#grid[data-step="10"]')
    page.wait_for_function("document.querySelector('#grid').naturalWidth > 0")
    assert grid.evaluate("img => img.complete && img.naturalWidth") > 0
    first = page.evaluate(IMAGE_SHA256, "#grid")
    assert first != newest
    assert "step 10" in page.locator("#grid-caption").inner_text()
    # the page showed exactly the API's grid of step 10
    with live.client(trained["key"]) as api:
        png = api.get(f"/v1/jobs/{trained['id']}/training-samples/10").content
    assert first == hashlib.sha256(png).hexdigest()
    # the dataset's real images are beside it
    page.wait_for_function("document.querySelector('#real').naturalWidth > 0")
    shot(page)

    # play runs through the grids from the slider's place to the newest, then stops
    page.click("#play")
    page.wait_for_selector('#grid[data-step="60"]')
    page.wait_for_function("document.querySelector('#play').textContent === '▶'")
    assert page.locator("#grid-step").input_value() == "5"


def generate(page, seed: int, n: int = 4) -> str:  # type: ignore[no-untyped-def]
    """Generate with `seed` through the panel; the sha256 the page shows for the image."""
    before = page.locator("#generated-image").get_attribute("src")
    page.fill('#generate-form [name="seed"]', str(seed))
    page.fill('#generate-form [name="n"]', str(n))
    page.click('#generate-form button[type="submit"]')
    page.wait_for_function(
        "([before]) => { const img = document.querySelector('#generated-image');"
        " return img.getAttribute('src') !== before && img.dataset.sha256; }",
        arg=[before],
    )
    shown = str(page.locator("#generated-image").get_attribute("data-sha256"))
    assert page.evaluate(IMAGE_SHA256, "#generated-image") == shown  # the bytes on screen
    assert page.locator("#generated-hash").inner_text() == shown[:16]
    return shown


def test_the_same_seed_gives_the_same_image_and_another_seed_another(
    live, trained, open_page, shot
) -> None:  # type: ignore[no-untyped-def]
    page = open_page(f"{live.url}/jobs/{trained['id']}", trained["key"])
    page.wait_for_selector(
        '#generate-form select[name="checkpoint"] option[value="60"]', state="attached"
    )
    first = generate(page, seed=7)
    again = generate(page, seed=7)
    other = generate(page, seed=8)
    assert first == again
    assert other != first
    # what a script gets for the same request
    with live.client(trained["key"]) as api:
        response = api.get(
            f"/v1/jobs/{trained['id']}/samples",
            params={"seed": 7, "n": 4, "checkpoint": "latest", "format": "grid"},
        )
    assert hashlib.sha256(response.content).hexdigest() == first
    generate(page, seed=7)
    assert "checkpoint step 60 · seed 7" in page.locator("#generated-info").inner_text()
    shot(page)

    # downloads need the key too: fetched with it, saved from an object URL
    with page.expect_download() as png:
        page.click('#generated [data-format="grid"]')
    assert hashlib.sha256(png.value.path().read_bytes()).hexdigest() == first
    with page.expect_download() as npy:
        page.click('#generated [data-format="npy"]')
    assert npy.value.suggested_filename.endswith("-step60-seed7.npy")
    assert npy.value.path().read_bytes().startswith(b"\x93NUMPY")
    with live.client(trained["key"]) as api:
        listed = api.get(f"/v1/jobs/{trained['id']}/checkpoints").json()["data"]
    with page.expect_download() as checkpoint:
        page.click('#checkpoints button[data-step="60"]')
    sha = hashlib.sha256(checkpoint.value.path().read_bytes()).hexdigest()
    assert sha == next(c["sha256"] for c in listed if c["step"] == 60)


def test_cancel_and_delete_from_the_job_page(live, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    key = live.new_key()
    with live.client(key) as api:
        job = api.post("/v1/jobs", json=job_body(steps=5000, name="to-cancel")).json()
        try:
            wait_status(api, job["id"], "running")
            page = open_page(f"{live.url}/jobs/{job['id']}", key)
            status = page.locator('#head [data-role="status"]')
            page.wait_for_selector('#head [data-role="status"]:has-text("running")')
            page.click('#head [data-action="cancel"]')
            page.wait_for_selector('#head [data-role="status"]:has-text("canceled")')
            assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"
            assert page.locator('#head [data-action="resume"]').is_visible()
            assert not page.locator('#head [data-action="cancel"]').is_visible()
            shot(page, "canceled")

            # delete asks first; "Keep it" keeps the job
            page.click('#head [data-action="delete"]')
            page.locator("#confirm-delete").wait_for()
            page.click('#confirm-delete button[value="keep"]')
            assert api.get(f"/v1/jobs/{job['id']}").status_code == 200
            assert status.inner_text() == "canceled"
            page.click('#head [data-action="delete"]')
            page.click('#confirm-delete button[value="delete"]')
            page.wait_for_url(f"{live.url}/")
            assert api.get(f"/v1/jobs/{job['id']}").status_code == 404
        finally:
            cancel_all(api)


def test_with_auth_off_the_jobs_page_opens_without_a_key(live, open_page, shot) -> None:  # type: ignore[no-untyped-def]
    """As `sngan serve` runs embedded: SNGAN_AUTH=off, every request acts as owner local."""
    if live.stack.kind != "embedded":
        pytest.skip("auth off is the embedded `sngan serve` mode")
    url = live.stack.start_api("web-api-auth-off", {"SNGAN_AUTH": "off"})
    with httpx.Client(base_url=url, timeout=60) as api:
        job = api.post("/v1/jobs", json=job_body(name="no-key-needed")).json()
        api.post(f"/v1/jobs/{job['id']}/cancel")
    page = open_page(f"{url}/")
    page.locator("#jobs a.job-name", has_text="no-key-needed").wait_for()
    assert page.locator("dialog.key-dialog").count() == 0
    assert not page.locator('[data-role="forget-key"]').is_visible()
    assert page.evaluate("sessionStorage.length") == 0  # no key asked, none kept
    shot(page)


def test_a_long_run_loads_downsampled_and_zooming_fetches_full_detail(
    live, open_page, shot
) -> None:  # type: ignore[no-untyped-def]
    owner = f"long-{secrets.token_hex(3)}"
    key = live.new_key(owner)
    job_id = insert_long_job(live.stack, owner, steps=5000, eval_every=1000)
    metric_requests: list[str] = []
    page = open_page(f"{live.url}/jobs/{job_id}", key)
    page.on("request", lambda r: metric_requests.append(r.url) if "/metrics?" in r.url else None)
    page.wait_for_function("document.body.dataset.chartsReady === '1'")
    # 5000 steps over MAX_POINTS 1000: every 5th step, chosen by the server, in the columns
    # form (a list of steps and a list of values per name)
    overview = page.evaluate(STEPS_OF, ["#chart-losses", "loss_d"])
    assert overview == list(range(5, 5001, 5))
    assert "1 step in 5" in page.locator("#curves-note").inner_text()
    assert all(parse_qs(urlsplit(u).query)["format"] == ["columns"] for u in metric_requests)
    # the values drawn are the stored ones (the faint raw trace; insert_long_job's values)
    raw = page.evaluate(
        "document.querySelector('#chart-losses').data.find((t) => t.name === 'loss_d (raw)').y"
    )
    assert raw == [1.0 + (s % 7) / 10 for s in overview]
    # IS and FID are evaluated every 1000 steps (fetched without `every`): none is skipped
    evaluated = [1000, 2000, 3000, 4000, 5000]
    assert page.evaluate(STEPS_OF, ["#chart-is", "is_mean"]) == evaluated
    assert page.evaluate(STEPS_OF, ["#chart-fid", "fid"]) == evaluated

    # a zoom (what a drag on the chart does) fetches steps 1000..1100 at full detail
    page.evaluate(
        "Plotly.relayout(document.querySelector('#chart-losses'),"
        " {'xaxis.range[0]': 1000, 'xaxis.range[1]': 1100})"
    )
    page.wait_for_function(
        "([c, n]) => document.querySelector(c).data.find((t) => t.name === n).x.includes(1001)",
        arg=["#chart-losses", "loss_d"],
    )
    detailed = page.evaluate(STEPS_OF, ["#chart-losses", "loss_d"])
    assert [s for s in detailed if 1000 <= s <= 1100] == list(range(1000, 1101))
    assert [s for s in detailed if s < 1000 or s > 1100] == [
        s for s in overview if s < 1000 or s > 1100
    ]
    detail_query = parse_qs(urlsplit(metric_requests[-1]).query)
    assert detail_query["after_step"] == ["999"] and "every" not in detail_query
    # the other charts follow the zoom
    assert page.evaluate("document.querySelector('#chart-d').layout.xaxis.range") == [1000, 1100]
    shot(page)

    # log scale, and smoothing off (the faint raw traces go: the curves are the raw values)
    page.check("#log-scale")
    assert page.evaluate("document.querySelector('#chart-losses').layout.yaxis.type") == "log"
    page.eval_on_selector(
        "#smoothing", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }"
    )
    names = page.evaluate("document.querySelector('#chart-losses').data.map((t) => t.name)")
    assert names == ["loss_d", "loss_g"]


def test_a_dropped_event_stream_is_resumed_with_last_event_id(
    live, trained, open_page, shot
) -> None:  # type: ignore[no-untyped-def]
    """The page reads /events with fetch (the key in a header); when the connection drops,
    it opens it again with Last-Event-ID, so it misses and repeats nothing."""
    with live.client(trained["key"]) as api:
        stream = api.get(f"/v1/jobs/{trained['id']}/events").text
    events = [e for e in re.split(r"\r?\n\r?\n", stream) if e.startswith(("id:", "event:"))]
    cut = "\r\n\r\n".join(events[:3]) + "\r\n\r\n"  # three events, then the connection drops
    cut_id = re.search(r"^id: ?(\d+)", events[2], re.M)
    assert cut_id is not None

    requests: list[dict[str, str]] = []

    def drop_first(route) -> None:  # type: ignore[no-untyped-def]
        requests.append(route.request.headers)
        if len(requests) == 1:
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=cut)
        else:
            route.continue_()

    page = open_page(
        f"{live.url}/jobs/{trained['id']}",
        trained["key"],
        setup=lambda p: p.route("**/v1/jobs/*/events", drop_first),
    )
    page.wait_for_function("document.body.dataset.chartsReady === '1'")
    for _ in range(150):  # Playwright runs the route handler only while the page is waited on
        if len(requests) >= 2:
            break
        page.wait_for_timeout(200)
    first, second = requests[0], requests[1]
    assert "last-event-id" not in first
    assert second["last-event-id"] == cut_id.group(1)
    assert second["authorization"] == f"Bearer {trained['key']}"
    assert trained["key"] not in page.url
    page.wait_for_selector('#head [data-role="status"]:has-text("succeeded")')
    shot(page)
