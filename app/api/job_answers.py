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
from sqlalchemy.orm import Session

from app.api.conditional import body_or_not_modified, etag_of
from app.api.schemas import JobPublic
from app.api.services import jobs
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
_drops = 0  # bumped by every drop (see `read`)


def fresh(job_id: str, owner: str) -> Answer | None:
    """The kept answer for `owner`'s `job_id`, while younger than SNGAN_JOB_CACHE_S."""
    answer = _answers.get(job_id)
    if answer is None or answer.owner != owner:
        return None
    if time.monotonic() - answer.read_at >= get_settings().job_cache_s:
        return None
    return answer


def read(session: Session, owner: str, job_id: str) -> Answer:
    """Read `owner`'s job (404 when it is not theirs) and keep its answer."""
    read_at, drops = time.monotonic(), _drops
    body = JobPublic.from_row(jobs.get(session, owner, job_id)).model_dump_json().encode()
    answer = Answer(owner, body, etag_of(body), read_at)
    # a read that began before a drop may hold the state from before the change: not kept
    if get_settings().job_cache_s > 0 and drops == _drops:
        if len(_answers) >= _MAX_JOBS:
            _answers.clear()
        _answers[job_id] = answer
    return answer


def drop(job_id: str) -> None:
    """Forget `job_id`'s answer: call after this process changed the job."""
    global _drops
    _drops += 1
    _answers.pop(job_id, None)
