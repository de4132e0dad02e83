"""Paging and downsampling of /metrics against a brute-force reading of the same rows, on a
run with a dense series (every step) beside a sparse one (every 7th step, like an evaluation),
so the windowed look-up and its fallback scan are both exercised."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.core.tables import Metric, utcnow
from tests.builders import insert_job
from tests.stacks import Stack

STEPS = 120


def _points(client: httpx.Client, job_id: str, **params: Any) -> list[tuple[int, str]]:
    """Every page of /metrics followed to the end."""
    seen: list[tuple[int, str]] = []
    after: int | None = None
    while True:
        query = {**params, **({"after_step": after} if after is not None else {})}
        body = client.get(f"/v1/jobs/{job_id}/metrics", params=query).raise_for_status().json()
        seen += [(p["step"], p["name"]) for p in body["data"]]
        after = body["next_after_step"]
        if after is None:
            return seen


@pytest.mark.parametrize("every", [None, 5, 7, 1000])
@pytest.mark.parametrize("names", [None, "fid"])
def test_every_page_together_is_the_brute_force_answer(
    stack: Stack, api: httpx.Client, owner: str, every: int | None, names: str | None
) -> None:
    job_id = insert_job(stack, owner, status="succeeded", steps=STEPS)
    now = utcnow()
    rows = [(s, "loss_d") for s in range(1, STEPS + 1)] + [
        (s, "fid") for s in range(7, STEPS + 1, 7)
    ]
    with stack.sessions()() as session:
        session.add_all(Metric(job_id=job_id, name=n, step=s, value=0.5, time=now) for s, n in rows)
        session.commit()

    wanted = set(names.split(",")) if names else {"loss_d", "fid"}
    expected = sorted((s, n) for s, n in rows if n in wanted and (every is None or s % every == 0))
    params: dict[str, Any] = {"limit": 4}
    if every is not None:
        params["every"] = every
    if names is not None:
        params["names"] = names
    assert _points(api, job_id, **params) == expected
    # and from the middle of the run, as the dashboard asks when it zooms
    after_middle = [(s, n) for s, n in expected if s > 60]
    assert _points(api, job_id, **params, after_step=60) == after_middle
