"""A job's statuses, written once: the table, the events, the API schema and the CLI use these.

``queued`` -> ``running`` -> ``succeeded`` | ``failed``; a cancel makes a queued job
``canceled`` at once and a running one ``canceling`` until its worker has written its last
checkpoint. A failed or canceled job may be resumed (back to ``queued``).
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"


# still owned by the system: counted against a key's concurrent-job limit, not deletable
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELING})
# final: the event stream ends with ``done``, the job may be deleted
FINISHED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})
# a worker holds the lease: its writes are fenced by the lease token
LEASED_STATUSES = (JobStatus.RUNNING, JobStatus.CANCELING)
# what `resume` accepts
RESUMABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELED})
