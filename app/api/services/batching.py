"""Batching of sample requests: one thread per device runs the forward passes, and concurrent
requests to one generator share them (see app.api.services.generation for why an image's
pixels never depend on its batch). Torch is imported by the thread, not at module import."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CacheKey = tuple[str, str, bool]  # (checkpoint path, sha256, ema): one generator


@dataclass(frozen=True)
class Generated:
    """One request's images and the batch they were generated in."""

    images: np.ndarray  # uint8 (N, H, W, C)
    batch_images: int  # images of every request in the batch (padding not counted)
    batch_requests: int
    leader: bool  # the batch's first request: the one that reports the batch in metrics


@dataclass
class _Request:
    key: CacheKey
    netG: Any
    z: Any  # torch.Tensor (n, z_dim), on the CPU
    y: Any  # torch.Tensor: labels (n,), or class weights (n, num_classes) of a walk; or None
    future: Future[Generated] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def n(self) -> int:
        return int(self.z.shape[0])


class Announcement:
    """One request on its way; ends when it is queued (or refused)."""

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
        self.ended = False

    def end(self) -> None:
        self._arrivals._end(self)


class Arrivals:
    """Sample requests on their way to a batcher: announced when their route starts, ended
    when they are queued (or refused). Batches being formed wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()
        self._listeners: list[threading.Condition] = []

    @property
    def count(self) -> int:
        return self._count

    def listen(self, cond: threading.Condition) -> None:
        with self._lock:
            self._listeners.append(cond)

    @contextlib.contextmanager
    def expecting(self) -> Iterator[Announcement]:
        """An announcement for the block; `Batcher.submit(..., announcement)` ends it as the
        request is queued (so a batch never waits for a request already in it), else the
        block's end does."""
        announcement = Announcement(self)
        with self._lock:
            self._count += 1
        try:
            yield announcement
        finally:
            announcement.end()

    def _end(self, announcement: Announcement) -> None:
        with self._lock:
            if announcement.ended:
                return
            announcement.ended = True
            self._count -= 1
            listeners = list(self._listeners)
        for cond in listeners:  # a batch waiting for this request need not any more
            with cond:
                cond.notify_all()


class Batcher:
    """The forward passes of one device, run by one thread, requests batched per generator.

    A batch takes the oldest waiting request, waits until `max_wait_s` after it arrived (or
    until `max_size` images are waiting, or until no other request is expected) for
    requests to the same generator, and takes them in arrival order while they fit. A
    request larger than `max_size` runs alone. With `batching` off each request is a batch
    of its own and nobody waits.
    """

    def __init__(
        self,
        device: str,
        *,
        batching: bool,
        max_wait_s: float,
        max_size: int,
        chunk: int,
        threads: int | None = None,
        arrivals: Arrivals | None = None,
    ) -> None:
        self.device = device
        self.threads = threads  # torch's CPU threads for the forwards (None: torch's default)
        self.batching = batching
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_size = max(1, max_size)
        self.chunk = max(1, chunk)
        self._cond = threading.Condition()
        self._pending: OrderedDict[CacheKey, deque[_Request]] = OrderedDict()
        self.arrivals = arrivals or Arrivals()
        self.arrivals.listen(self._cond)
        self._thread = threading.Thread(target=self._run, name=f"generation-{device}", daemon=True)
        self._thread.start()

    def submit(
        self,
        key: CacheKey,
        netG: Any,
        z: Any,
        y: Any,
        announcement: Announcement | None = None,
    ) -> Future[Generated]:
        request = _Request(key, netG, z, y)
        with self._cond:
            self._pending.setdefault(key, deque()).append(request)
            self._cond.notify()
        if announcement is not None:  # queued: no longer on its way
            announcement.end()
        return request.future

    def _next_batch(self) -> list[_Request]:
        with self._cond:
            while not self._pending:
                self._cond.wait()
            key, queue = next(iter(self._pending.items()))  # the generator waiting longest
            if self.batching:
                deadline = queue[0].enqueued + self.max_wait_s
                while sum(r.n for r in queue) < self.max_size:
                    if self.arrivals.count <= 0:  # nobody else on the way: nobody to wait for
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch = [queue.popleft()]
            total = batch[0].n
            while self.batching and queue and total + queue[0].n <= self.max_size:
                total += queue[0].n
                batch.append(queue.popleft())
            del self._pending[key]
            if queue:  # the rest waits behind other generators' requests
                self._pending[key] = queue
            return batch

    def _run(self) -> None:
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        while True:
            batch = self._next_batch()
            try:
                self._forward(batch)
            except BaseException as e:  # the callers get the error; this thread goes on
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(e)

    def _forward(self, batch: list[_Request]) -> None:
        import torch

        from models.generate import to_uint8

        netG = batch[0].netG
        z = torch.cat([r.z for r in batch])  # (B, z_dim)
        y = None if batch[0].y is None else torch.cat(_same_kind([r.y for r in batch]))
        total, chunk = z.shape[0], self.chunk
        padded = -total % chunk
        if padded:
            z = torch.cat([z, z.new_zeros(padded, z.shape[1])])
            y = None if y is None else torch.cat([y, y.new_zeros((padded, *y.shape[1:]))])
        ends = list(itertools.accumulate(r.n for r in batch))  # each request's last image + 1
        images: list[np.ndarray] = []
        ready = 0  # requests answered so far
        with torch.no_grad():
            for start in range(0, z.shape[0], chunk):
                zc = z[start : start + chunk].to(self.device)
                yc = None if y is None else y[start : start + chunk].to(self.device)
                images.append(to_uint8(netG(zc, yc)))  # (chunk, H, W, C)
                done = start + chunk  # images generated so far
                if ready == len(batch) or ends[ready] > done:
                    continue
                # answer each request as soon as its last image exists
                out = np.concatenate(images) if len(images) > 1 else images[0]
                while ready < len(batch) and ends[ready] <= done:
                    first = ends[ready] - batch[ready].n
                    batch[ready].future.set_result(
                        Generated(
                            np.ascontiguousarray(out[first : ends[ready]]),
                            total,
                            len(batch),
                            leader=ready == 0,
                        )
                    )
                    ready += 1


def _same_kind(ys: list[Any]) -> list[Any]:
    """Labels (n,) of sample requests and class weights (n, K) of walks, in one batch: the
    labels as one-hot weights, which give the same gamma/beta exactly (models.layers)."""
    if all(y.dim() == ys[0].dim() for y in ys):
        return ys
    import torch

    k = next(y.shape[1] for y in ys if y.dim() == 2)
    return [y if y.dim() == 2 else torch.nn.functional.one_hot(y, k).float() for y in ys]
