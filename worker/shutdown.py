"""A worker's warm shutdown hands its running job back instead of finishing it.

On SIGTERM (``docker stop``, systemd, ``sngan serve`` stopping) Celery's main process stops
taking tasks and waits for the running one, which may have hours left; past the stop timeout
the job would be killed and only re-queued once its lease expires, losing the steps since
its last checkpoint. Instead the main process passes `SIGNAL` on to its pool children; the
one training stops at the next step, writes a checkpoint, marks the job queued again (the
API's reaper publishes its task within SNGAN_REAPER_INTERVAL_S, for the next worker), and
returns, so the shutdown completes within about a step and a checkpoint.

While a job trains, SIGTERM sent to the pool child itself means the same (Celery sends it on
some stop paths, and systemd or a terminal may signal the whole process group); otherwise
billiard's handler would exit the child mid-step and the job would wait for its lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

SIGNAL = signal.SIGUSR2
_requested = threading.Event()


def _request_hand_back(*_: Any) -> None:
    _requested.set()


def install_in_child() -> None:
    """In a pool child: `SIGNAL` asks the job it trains (now or later) to be handed back."""
    _requested.clear()
    signal.signal(SIGNAL, _request_hand_back)


def requested() -> bool:
    return _requested.is_set()


@contextlib.contextmanager
def handing_back_on_signals() -> Iterator[None]:
    """While training: `SIGNAL` and SIGTERM ask for the hand-back. Installed here, at the
    task's start, because billiard resets the pool child's handlers after its initializer
    (all of them, SIGUSR2 included, for some brokers). Main thread only; elsewhere (tests
    that train on a thread) nothing changes."""
    previous = {}
    try:
        for sig in (SIGNAL, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _request_hand_back)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def notify_children(pids: Iterable[int]) -> None:
    """In the main process, on warm shutdown: pass the request on to these pool children."""
    for pid in pids:
        try:
            os.kill(pid, SIGNAL)
        except ProcessLookupError:
            continue
        log.info("asked pool process %d to hand its job back", pid)
