"""Per-key request rate limit: a token bucket per API key.

The buckets live in this API process's memory: with several API processes behind a load
balancer each one allows ``rate_limit_per_minute`` per key on its own (a shared limit would
need Redis). A key's bucket holds up to a minute's worth of requests and refills continuously.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from app.api.errors import ApiError

_MAX_KEYS = 10_000  # buckets kept; the least recently used key is forgotten (starts full again)


class TokenBuckets:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # sync dependencies run in a thread pool
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, key: str, per_minute: int) -> float:
        """Take one token of `key`'s bucket; 0.0 when allowed, else the seconds to wait."""
        now = self._clock()
        rate = per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / rate if rate > 0 else 60.0
            while len(self._buckets) > _MAX_KEYS:
                self._buckets.popitem(last=False)
        return wait


_buckets = TokenBuckets()


def check_rate(key_id: str, per_minute: int) -> None:
    """Raise a 429 with ``Retry-After`` when `key_id` has used up its requests."""
    wait = _buckets.take(key_id, per_minute)
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests: the limit is {per_minute} per minute per API key "
            f"(SNGAN_RATE_LIMIT_PER_MINUTE); retry in {retry_after}s",
            details={"limit": per_minute, "retry_after_s": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
