"""Many watchers of one job: the event streams share one database reader per job in a
process, hundreds of them opening at once leave other requests answered, and `sngan jobs
watch` polls with If-None-Match."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.api.services.event_hub import EventHub, EventRow, Feed, Read
from app.cli.client import Api
from app.cli.watch import JobPoller
from app.core import events
from app.core.db import get_engine
from tests.builders import insert_job
from tests.clients import run_async
from tests.stacks import Stack

VIEWERS = 50
STREAMS = 300


def add_event(stack: Stack, job_id: str, type_: str, data: dict[str, Any]) -> None:
    with stack.sessions()() as session:
        events.append(session, job_id, type_, data)
        session.commit()


def test_viewers_of_a_job_share_one_reader(stack: Stack, owner: str) -> None:
    job_id = insert_job(stack, owner, status="queued")
    add_event(stack, job_id, "status", {"status": "queued", "error": None})
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM events" in statement and job_id in str(parameters):
            reads.append(statement)

    async def watch() -> tuple[int, int, list[list[EventRow]]]:
        hub = EventHub(interval_s=0.05)
        received: list[list[EventRow]] = [[] for _ in range(VIEWERS)]

        async def viewer(i: int) -> None:
            async for row in hub.follow(job_id, 0):
                received[i].append(row)
                if len(received[i]) == 2:
                    return

        tasks = [asyncio.create_task(viewer(i)) for i in range(VIEWERS)]
        async with asyncio.timeout(60):
            while not all(received):
                await asyncio.sleep(0.01)
            feeds, feed = len(hub.feeds), hub.feeds[job_id]
            await asyncio.to_thread(add_event, stack, job_id, "progress", {"step": 1})
            await asyncio.gather(*tasks)
            while hub.feeds:  # the reader stops once its last viewer is gone
                await asyncio.sleep(0.01)
        return feeds, feed.polls, received

    engine = get_engine(None)  # the served app's database (the key session_scope uses)
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert stack.served is not None
        feeds, polls, received = stack.served.portal.call(watch)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert feeds == 1
    assert [[row[1] for row in rows] for rows in received] == [["status", "progress"]] * VIEWERS
    # every read of the job's events was the one reader's (its first also looked up the
    # newest id): none per viewer
    assert len(reads) == polls + 1, reads


def test_a_poll_that_found_nothing_wakes_no_viewer() -> None:
    """1,000 viewers of a quiet job cost the event loop nothing between events: a viewer
    waiting on its feed wakes for new events and for the job's end, not for every poll."""

    async def check() -> None:
        feed = Feed("job", 0, 0)
        feed.add(Read([], "running", True, 0))  # the first read: where the feed starts
        waiter = asyncio.create_task(feed.changed(timeout=30))
        await asyncio.sleep(0.01)
        for _ in range(3):
            feed.add(Read([], "running", True, 0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        feed.add(Read([(1, "progress", '{"step": 1}')], "running", True, 0))
        await asyncio.wait_for(waiter, 1)

        waiter = asyncio.create_task(feed.changed(timeout=30))
        await asyncio.sleep(0.01)
        feed.add(Read([], "succeeded", True, 1))  # finished, nothing more to read
        await asyncio.wait_for(waiter, 1)
        assert feed.ended and feed.polls == 6

    run_async(check())


def test_a_viewer_behind_the_buffer_or_past_the_end_still_gets_every_event(
    stack: Stack, owner: str
) -> None:
    """A feed keeps its newest 3 events here: a viewer joining from the start replays the
    older ones from the database, in order, then follows the feed. The feed was started by a
    viewer with a made-up Last-Event-ID past the newest event (which, as before, gets
    nothing): it starts from the newest event instead, so the others still see new ones."""
    job_id = insert_job(stack, owner, status="queued")
    for step in range(10):
        add_event(stack, job_id, "progress", {"step": step})

    async def watch() -> tuple[list[int], list[int], list[int], int]:
        hub = EventHub(interval_s=0.05, buffer_size=3)
        seen: dict[str, list[int]] = {"past": [], "first": [], "late": []}

        async def viewer(name: str, after_id: int, wanted: int) -> None:
            async for _, _, data in hub.follow(job_id, after_id):
                seen[name].append(json.loads(data)["step"])
                if len(seen[name]) == wanted:
                    return

        async with asyncio.timeout(60):
            past = asyncio.create_task(viewer("past", 10**12, 1))  # the feed starts here
            while job_id not in hub.feeds or hub.feeds[job_id].polls == 0:
                await asyncio.sleep(0.01)
            await viewer("first", 0, 10)  # all ten: the feed moved back to the newest
            for step in range(10, 15):
                await asyncio.to_thread(add_event, stack, job_id, "progress", {"step": step})
            feed = hub.feeds[job_id]
            while not feed.rows or json.loads(feed.rows[-1][2])["step"] != 14:
                await asyncio.sleep(0.01)
            kept = len(feed.rows)
            await viewer("late", 0, 15)  # 12 replayed from the database, then the buffer
            past.cancel()
        return seen["past"], seen["first"], seen["late"], kept

    assert stack.served is not None
    past, first, late, kept = stack.served.portal.call(watch)
    assert kept == 3  # the feed dropped the older of the five new events
    assert first == list(range(10))
    assert late == list(range(15))
    assert past == []


@pytest.fixture(scope="module")
def api_process(stack: Stack) -> Iterator[str]:
    """The API as a uvicorn process of its own (streams need a real socket), one per stack
    for this module's tests."""
    url = stack.start_api("api-streams")
    try:
        yield url
    finally:
        proc = stack.procs.pop("api-streams")
        proc.terminate()
        proc.wait(timeout=30)


def test_hundreds_of_streams_opening_leave_the_api_answering(
    stack: Stack, api_process: str, owner: str
) -> None:
    key = stack.new_key(owner)
    job_id = insert_job(stack, owner, status="queued")
    add_event(stack, job_id, "status", {"status": "queued", "error": None})
    auth = {"Authorization": f"Bearer {key}"}

    async def run() -> tuple[list[list[str]], list[int]]:
        seen: list[list[str]] = [[] for _ in range(STREAMS)]
        answers: list[int] = []
        release = asyncio.Event()
        limits = httpx.Limits(max_connections=STREAMS + 5)

        async with httpx.AsyncClient(
            base_url=api_process, headers=auth, limits=limits, timeout=60
        ) as client:

            async def stream(i: int) -> None:
                async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            seen[i].append(line.removeprefix("event: "))
                            if len(seen[i]) == 2:
                                break
                    await release.wait()

            async def probe() -> None:
                async with httpx.AsyncClient(
                    base_url=api_process, headers=auth, timeout=30
                ) as other:
                    while not all(seen):  # while the streams are opening
                        response = await other.get(f"/v1/jobs/{job_id}")
                        answers.append(response.status_code)

            tasks = [asyncio.create_task(stream(i)) for i in range(STREAMS)]
            async with asyncio.timeout(120):
                await probe()
                await asyncio.to_thread(add_event, stack, job_id, "progress", {"step": 1})
                while not all(len(s) == 2 for s in seen):
                    await asyncio.sleep(0.05)
                release.set()
                await asyncio.gather(*tasks)
        return seen, answers

    seen, answers = run_async(run())
    # every stream got the history and then the new event; no stream was cut
    assert seen == [["status", "progress"]] * STREAMS
    # the job was answered meanwhile, each GET within the client's 30 s (a stall times out)
    assert answers and set(answers) == {200}


def test_watch_polls_with_if_none_match(stack: Stack, api_process: str, owner: str) -> None:
    job_id = insert_job(stack, owner, status="queued")
    api = Api(api_process, stack.new_key(owner))
    poller = JobPoller(api, job_id)
    first = poller.get()
    assert poller.get() == first
    assert poller.not_modified == 1  # the API answered 304: the tag was sent
    api.client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
    assert poller.get()["status"] == "canceled"
    assert poller.not_modified == 1
    api.client.close()
