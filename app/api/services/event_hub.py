"""One database reader per followed job in each API process, fanning its events out to every
open stream of that job (``GET /v1/jobs/{id}/events``).

Each stream used to poll the database on its own: 300 viewers of one job made ~600 thread-pool
trips a second, and the thread pool (40 threads, first come first served) then made every other
request wait behind them. Here a job's `Feed` polls once per ``sse_poll_interval_s`` whatever
the number of its viewers, keeps the events it read in a bounded buffer, and wakes the viewers
waiting on it: the database cost grows with followed jobs, not viewers.

An in-process reader rather than PostgreSQL LISTEN/NOTIFY or Redis pub/sub: it needs nothing
the embedded stack lacks (SQLite, no Redis), the worker is unchanged (it already writes events
in the transaction of the change they describe), and one poll per job per process is the same
order of cost as one notification listener per process.

A viewer resuming from an event older than the buffer reads that part itself (`replay`), once,
then follows the feed; ``Last-Event-ID`` means what it meant before.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from app.core import events
from app.core.config import get_settings
from app.core.db import session_scope
from app.core.status import FINISHED_STATUSES
from app.core.tables import Event, Job

log = logging.getLogger(__name__)

EventRow = tuple[int, str, str]  # (id, type, data as JSON text)
READ_LIMIT = 500  # events one read returns
BUFFER_SIZE = 2000  # events a feed keeps for viewers that are behind or just joined
WAKE_BOUND_S = 10.0  # the longest a viewer waits for its feed's wake-up before looking itself


@dataclass(frozen=True)
class Read:
    rows: list[EventRow]
    status: str | None  # None: the job was deleted
    complete: bool  # fewer than READ_LIMIT rows: nothing more to read for now
    after_id: int  # what the read started from (a start past the newest event is moved back)


def read(job_id: str, after_id: int, clamp: bool = False) -> Read:
    """The job's events after `after_id` (at most READ_LIMIT) and its status. The status is
    read first: the worker writes a final status with its ``status``/``done`` events in one
    transaction, so a final status here means the read that follows sees those events. With
    `clamp`, a start past the job's newest event (a made-up Last-Event-ID) is moved back to
    it, so a feed started there still sees the events written next."""
    with session_scope() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        if clamp:
            newest = session.scalar(select(func.max(Event.id)).where(Event.job_id == job_id))
            after_id = min(after_id, newest or 0)
        rows = events.after(session, job_id, after_id, READ_LIMIT)
        found = [(e.id, e.type, json.dumps(e.data)) for e in rows]
        return Read(found, status, len(found) < READ_LIMIT, after_id)


@dataclass(eq=False)
class Feed:
    """The events of one job as read by its one poller. Every event with an id in
    (`base_id`, `last_id`] is in `rows`; `ended` once the job is finished (or deleted) and
    every event written before that was read."""

    job_id: str
    base_id: int
    last_id: int
    rows: list[EventRow] = field(default_factory=list)
    ended: bool = False
    viewers: int = 0
    polls: int = 0  # database reads made by this feed's poller
    buffer_size: int = BUFFER_SIZE
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def since(self, after_id: int) -> list[EventRow]:
        """The buffered events after `after_id` (the caller checked `after_id >= base_id`)."""
        start = bisect.bisect_right(self.rows, after_id, key=lambda row: row[0])
        return self.rows[start:]

    def add(self, got: Read) -> None:
        if self.polls == 0:
            self.base_id = self.last_id = got.after_id
        self.polls += 1
        if got.rows:
            self.rows.extend(got.rows)
            self.last_id = got.rows[-1][0]
            if len(self.rows) > self.buffer_size:
                dropped = len(self.rows) - self.buffer_size
                self.base_id = self.rows[dropped - 1][0]
                del self.rows[:dropped]
        ended = got.complete and (got.status is None or got.status in FINISHED_STATUSES)
        if got.rows or ended != self.ended or self.polls == 1:
            # wakes the viewers waiting now; they look for what is new. A poll that found
            # nothing wakes none: 1,000 viewers of a quiet job cost the loop nothing.
            self.ended = ended
            self._changed.set()
            self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # no task per wait, as wait_for made
                await self._changed.wait()


class EventHub:
    """The feeds of one API process (one event loop), by job id; a feed's poller runs while
    the job has viewers."""

    def __init__(self, interval_s: float, buffer_size: int = BUFFER_SIZE) -> None:
        self.interval_s = interval_s
        self.buffer_size = buffer_size
        self.feeds: dict[str, Feed] = {}
        self._pollers: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def _joined(self, job_id: str, after_id: int) -> Iterator[Feed]:
        feed = self.feeds.get(job_id)
        if feed is None:
            # the first viewer's position is where the feed starts reading
            feed = Feed(job_id, after_id, after_id, buffer_size=self.buffer_size)
            self.feeds[job_id] = feed
            task = asyncio.create_task(self._poll(feed), name=f"events of job {job_id}")
            self._pollers.add(task)
            task.add_done_callback(self._pollers.discard)
        feed.viewers += 1
        try:
            yield feed
        finally:
            feed.viewers -= 1

    async def _poll(self, feed: Feed) -> None:
        try:
            while feed.viewers > 0:
                try:
                    got = await run_in_threadpool(read, feed.job_id, feed.last_id, feed.polls == 0)
                except Exception:  # the database may be down a while: the viewers wait
                    log.exception("reading the events of job %s failed", feed.job_id)
                    await asyncio.sleep(self.interval_s)
                    continue
                feed.add(got)
                if got.complete:
                    await asyncio.sleep(self.interval_s)
        finally:
            if self.feeds.get(feed.job_id) is feed:
                del self.feeds[feed.job_id]

    async def follow(self, job_id: str, after_id: int) -> AsyncIterator[EventRow]:
        """Every event of the job after `after_id`, then the new ones, until the job is
        finished and its events were all sent."""
        with self._joined(job_id, after_id) as feed:
            while feed.polls == 0:  # where the feed starts is known after its first read
                await feed.changed(timeout=self.interval_s)
            while True:
                if after_id < feed.base_id:  # behind the buffer: read that part alone
                    base_id = feed.base_id
                    got = await run_in_threadpool(read, job_id, after_id)
                    rows = [row for row in got.rows if row[0] <= base_id]
                    caught_up = got.complete or len(rows) < len(got.rows)
                else:
                    rows, caught_up, base_id = feed.since(after_id), False, after_id
                for row in rows:
                    yield row
                    after_id = row[0]
                if caught_up:
                    after_id = max(after_id, base_id)
                if rows or caught_up:
                    continue
                if feed.ended and after_id >= feed.last_id:
                    return
                # bounded, so a viewer never depends on a wake-up alone
                await feed.changed(timeout=WAKE_BOUND_S)


def hub_of(app: Any) -> EventHub:
    """The app's hub, made on first use inside its event loop (one per API process)."""
    hub: EventHub | None = getattr(app.state, "event_hub", None)
    if hub is None:
        hub = app.state.event_hub = EventHub(get_settings().sse_poll_interval_s)
    return hub
