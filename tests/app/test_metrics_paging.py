"""Paging and downsampling of /metrics against a brute-force reading of the same rows, on a
run with a dense series (every step) beside a sparse one (every 7th step, like an evaluation),
so the windowed look-up and its fallback scan are both exercised; in both of its forms (a
point per object, and ``format=columns``), which must say the same page for page."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.core.tables import Metric, utcnow
from tests.builders import insert_job
from tests.stacks import Stack

STEPS = 120


def _pages(client: httpx.Client, job_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of /metrics followed to the end."""
    pages = []
    after: int | None = None
    while True:
        query = {**params, **({"after_step": after} if after is not None else {})}
        body = client.get(f"/v1/jobs/{job_id}/metrics", params=query).raise_for_status().json()
        pages.append(body)
        after = body["next_after_step"]
        if after is None:
            return pages


def _points_of(page: dict[str, Any]) -> list[tuple[int, str, float]]:
    """(step, name, value) of a page in either form, in step then name order."""
    if "data" in page:
        return [(p["step"], p["name"], p["value"]) for p in page["data"]]
    assert page["steps"] == sorted(set(page["steps"]))
    assert all(len(values) == len(page["steps"]) for values in page["series"].values())
    return sorted(
        (step, name, values[i])
        for name, values in page["series"].items()
        for i, step in enumerate(page["steps"])
        if values[i] is not None
    )


@pytest.mark.parametrize("every", [None, 5, 7, 1000])
@pytest.mark.parametrize("names", [None, "fid", "loss_d,fid"])
def test_every_page_together_is_the_brute_force_answer(
    stack: Stack, api: httpx.Client, owner: str, every: int | None, names: str | None
) -> None:
    job_id = insert_job(stack, owner, status="succeeded", steps=STEPS)
    now = utcnow()
    rows = [(s, "loss_d", s / 8) for s in range(1, STEPS + 1)] + [
        (s, "fid", 100 - s / 4) for s in range(7, STEPS + 1, 7)
    ]
    with stack.sessions()() as session:
        session.add_all(
            Metric(job_id=job_id, name=n, step=s, value=v, time=now) for s, n, v in rows
        )
        session.commit()

    wanted = set(names.split(",")) if names else {"loss_d", "fid"}
    expected = sorted(
        (s, n, v) for s, n, v in rows if n in wanted and (every is None or s % every == 0)
    )
    params: dict[str, Any] = {"limit": 4}
    if every is not None:
        params["every"] = every
    if names is not None:
        params["names"] = names
    # and from the middle of the run, as the dashboard asks when it zooms
    for start in ({}, {"after_step": 60}):
        points = _pages(api, job_id, **params, **start)
        columns = _pages(api, job_id, **params, **start, format="columns")
        want = [p for p in expected if p[0] > start.get("after_step", -1)]
        assert [p for page in points for p in _points_of(page)] == want
        # the columns form: the same pages (steps, points, where the next one starts)
        assert len(columns) == len(points)
        for column_page, point_page in zip(columns, points, strict=True):
            assert _points_of(column_page) == _points_of(point_page)
            assert column_page["steps"] == sorted({p["step"] for p in point_page["data"]})
            assert column_page["next_after_step"] == point_page["next_after_step"]
            assert set(column_page["series"]) == {p["name"] for p in point_page["data"]}
