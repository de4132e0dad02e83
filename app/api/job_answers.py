"""Answers of ``GET /v1/jobs/{id}`` kept for a moment in each API process.

A running job is polled by every dashboard, script and ``sngan jobs watch`` following it, each
every second or so, while its row changes a few times a second at most (the worker's progress).
Rendering the answer once per ``SNGAN_JOB_CACHE_S`` and handing the same bytes and ETag to every
poller in between costs one database read per job per period instead of one per request, and
answers in the event loop without a thread-pool trip (measured by ``bench/load_wrk.py``).

What a poller gives up: an answer is at most ``SNGAN_JOB_CACHE_S`` behind the worker. A change
made through this process (cancel, resume, delete) drops the job's answer, so a client sees its
own change at once; through another API process it shows within the period. Answers are kept
per job together with the owner they were read for: another owner asking misses and is read
(and refused) as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Response

from app.api.conditional import body_or_not_modified
from app.core.config import get_settings

_MAX_JOBS = 10_000  # answers kept; past it the cache starts over


@dataclass(frozen=True, slots=True)
class Answer:
    owner: str
    body: bytes
    etag: str
    read_at: float  # time.monotonic() when the read that made it began

    def response(self, if_none_match: str | None) -> Response:
        return body_or_not_modified(self.body, self.etag, if_none_match)


_answers: dict[str, Answer] = {}
# Bumped by every drop: a read that began before a drop may hold the state from before the
# change, so it is not kept (see `keep`).
_drops = 0


def fresh(job_id: str, owner: str) -> Answer | None:
    """The kept answer for `owner`'s `job_id`, while younger than SNGAN_JOB_CACHE_S."""
    answer = _answers.get(job_id)
    if answer is None or answer.owner != owner:
        return None
    if time.monotonic() - answer.read_at >= get_settings().job_cache_s:
        return None
    return answer


def begin_read() -> tuple[float, int]:
    """Call before reading the job: what `keep` needs to know the read is still current."""
    return time.monotonic(), _drops


def keep(job_id: str, owner: str, body: bytes, etag: str, began: tuple[float, int]) -> None:
    read_at, drops = began
    if get_settings().job_cache_s <= 0 or drops != _drops:
        return
    if len(_answers) >= _MAX_JOBS:
        _answers.clear()
    _answers[job_id] = Answer(owner, body, etag, read_at)


def drop(job_id: str) -> None:
    """Forget `job_id`'s answer: call after this process changed the job."""
    global _drops
    _drops += 1
    _answers.pop(job_id, None)
