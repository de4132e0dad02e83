"""A worker's warm shutdown hands its running job back instead of finishing it.

On SIGTERM (``docker stop``, systemd, ``sngan serve`` stopping) Celery's main process stops
taking tasks and waits for the running one, which may have hours left; past the stop timeout
the job would be killed and only re-queued once its lease expires, losing the steps since
its last checkpoint. Instead the main process passes `SIGNAL` on to its pool children; the
one training stops at the next step, writes a checkpoint, puts the job back in the queue for
the next worker, and returns, so the shutdown completes within about a step and a checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)

SIGNAL = signal.SIGUSR2
_requested = threading.Event()


def install_in_child() -> None:
    """In a pool child: `SIGNAL` asks the job it trains (now or later) to be handed back."""
    _requested.clear()
    signal.signal(SIGNAL, lambda *_: _requested.set())


def requested() -> bool:
    return _requested.is_set()


def notify_children(children: list[Any]) -> None:
    """In the main process, on warm shutdown: pass the request on to each pool child."""
    for child in children:
        pid = getattr(child, "pid", None)
        if pid is None:
            continue
        try:
            os.kill(pid, SIGNAL)
        except ProcessLookupError:
            continue
        log.info("asked pool process %d to hand its job back", pid)
