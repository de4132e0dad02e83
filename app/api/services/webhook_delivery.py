"""The webhook deliverer: a loop in each API process that sends the outbox's due messages.

Why here and not in Celery: the embedded stack's worker runs one prefork child per training
job, so a delivery task there would wait behind hours of training or take a child from it;
the API process is always up, idle most of the time, and already runs the reaper's loop.
Several API processes (``sngan serve --workers N``, or several hosts) share the work safely:
a message is taken with a conditional UPDATE that sets a lease (``lease_owner`` until
``lease_until``), so one process sends it; a process killed mid-send leaves a lease that
expires, and the message is sent again, with the same ``webhook-id``: at least once.

Rules: a ``webhook_timeout_s`` timeout, no redirects followed, 2xx is delivered, 410 disables
the endpoint, 5xx / 429 / timeouts / connection errors are retried on the schedule
(``webhook_retry_schedule_s``, ±10% jitter, at most ``webhook_max_attempts``), any other
answer fails the message (a redeliver sends it again). One job's messages to one endpoint go
out in order: a message waits while an earlier one of the same job and endpoint is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import httpcore
import httpx
from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.core import webhooks
from app.core.config import Settings
from app.core.leases import worker_name
from app.core.tables import WebhookAttempt, WebhookEndpoint, WebhookMessage, utcnow
from app.core.webhooks import DELIVERED, FAILED, PENDING, UnsafeUrl

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH = 50  # messages taken per round
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Outgoing:
    seq: int
    id: str
    url: str
    body: str
    signature_secrets: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: float
    retry: bool  # a 5xx, 429, timeout or connection error


def lease_s(settings: Settings) -> float:
    """How long a taken message is ours: past its send's timeout (and its name's resolution),
    with room to record it. A process killed mid-send delays the message this long."""
    return 2 * settings.webhook_timeout_s + 5.0


def take_due(sessions: sessionmaker[Session], settings: Settings, me: str) -> list[Outgoing]:
    """Lease up to BATCH due messages (the oldest first, one per job and endpoint)."""
    M = WebhookMessage
    earlier = aliased(WebhookMessage)
    now = utcnow()
    free = or_(M.lease_until.is_(None), M.lease_until < now)
    with sessions() as session:
        waiting = exists().where(
            earlier.endpoint_id == M.endpoint_id,
            earlier.job_id == M.job_id,
            earlier.seq < M.seq,
            earlier.status == PENDING,
        )
        due = session.scalars(
            select(M.seq)
            .join(WebhookEndpoint, WebhookEndpoint.id == M.endpoint_id)
            .where(
                M.status == PENDING,
                M.next_attempt_at <= now,
                free,
                WebhookEndpoint.disabled_at.is_(None),
                ~waiting,
            )
            .order_by(M.seq)
            .limit(BATCH)
        ).all()
        taken: list[int] = []
        until = now + timedelta(seconds=lease_s(settings))
        for seq in due:
            # under concurrency only one process's UPDATE still matches `free`
            result = session.execute(
                update(M)
                .where(M.seq == seq, M.status == PENDING, free)
                .values(lease_owner=me, lease_until=until)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                taken.append(seq)
        session.commit()
        out: list[Outgoing] = []
        for message, endpoint in session.execute(
            select(M, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == M.endpoint_id)
            .where(M.seq.in_(taken))
            .order_by(M.seq)
        ):
            secret = webhooks.secret_of(session, endpoint.owner)
            keys = tuple(webhooks.signing_secrets(secret, utcnow()))
            out.append(Outgoing(message.seq, message.id, endpoint.url, message.body, keys))
        session.commit()  # a secret made just now
        return out


async def send(client: httpx.AsyncClient, out: Outgoing, settings: Settings) -> Outcome:
    """One attempt: POST the body, signed now; the answer's status only (its body unread)."""
    start = time.perf_counter()

    def took() -> float:
        return round((time.perf_counter() - start) * 1000, 1)

    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "sngan-service-webhooks/1",
        "webhook-id": out.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhooks.sign(out.signature_secrets, out.id, timestamp, out.body),
    }
    try:
        async with client.stream("POST", out.url, content=out.body, headers=headers) as response:
            code = response.status_code
    except UnsafeUrl as e:  # the connection's addresses, checked by `CheckedBackend`
        return Outcome(None, f"refused: {e}"[:MAX_ERROR_CHARS], took(), retry=False)
    except httpx.TimeoutException:
        return Outcome(None, f"timeout after {settings.webhook_timeout_s:g} s", took(), True)
    except httpx.HTTPError as e:
        error = f"connection error: {type(e).__name__}: {e}"[:MAX_ERROR_CHARS]
        return Outcome(None, error, took(), retry=True)
    return Outcome(code, None, took(), retry=code >= 500 or code == 429)


def record(
    sessions: sessionmaker[Session], settings: Settings, me: str, seq: int, outcome: Outcome
) -> None:
    """The attempt's row, and what it means for the message (and its endpoint, on a 410)."""
    now = utcnow()
    with sessions() as session:
        message = session.get(WebhookMessage, seq)
        if message is None:  # its job or endpoint was deleted meanwhile
            return
        session.add(
            WebhookAttempt(
                message_seq=seq,
                at=now,
                status_code=outcome.status_code,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
            )
        )
        message.attempts += 1
        message.last_status_code = outcome.status_code
        message.last_error = outcome.error
        if message.lease_owner != me:  # taken over after our lease ran out: its owner decides
            session.commit()
            return
        message.lease_owner = None
        message.lease_until = None
        code = outcome.status_code
        schedule = settings.webhook_schedule
        if code is not None and 200 <= code < 300:
            message.status, message.delivered_at, message.next_attempt_at = DELIVERED, now, None
        elif code == 410:
            disable(session, message.endpoint_id, "the endpoint answered 410 Gone")
        elif outcome.retry and message.retries + 1 < len(schedule):
            message.retries += 1
            delay = schedule[message.retries] * random.uniform(0.9, 1.1)
            message.next_attempt_at = now + timedelta(seconds=delay)
        else:
            message.status, message.next_attempt_at = FAILED, None
        session.commit()


def disable(session: Session, endpoint_id: str, reason: str) -> None:
    """Stop calling an endpoint: it is marked disabled and its pending messages fail."""
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.disabled_at.is_(None))
        .values(disabled_at=utcnow(), disabled_reason=reason)
    )
    session.execute(
        update(WebhookMessage)
        .where(WebhookMessage.endpoint_id == endpoint_id, WebhookMessage.status == PENDING)
        .values(status=FAILED, next_attempt_at=None, lease_owner=None, lease_until=None)
    )
    log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)


async def deliver(
    client: httpx.AsyncClient,
    sessions: sessionmaker[Session],
    settings: Settings,
    me: str,
    out: Outgoing,
) -> None:
    outcome = await send(client, out, settings)
    await _in_thread(record, sessions, settings, me, out.seq, outcome)


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn` in the thread pool, finished even when the loop is cancelled meanwhile (the API
    stopping): a session is never left open mid-transaction in a thread nobody waits for. A
    cancelled send is only lost work: its lease runs out and the message is sent again."""
    task = asyncio.ensure_future(run_in_threadpool(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # the cancel stands whatever the call ended with: a failure here (the database
        # unreachable) would otherwise replace it, be taken for a failed round, and the loop
        # would go on, holding the API's shutdown forever
        with contextlib.suppress(Exception):
            await task
        raise


Resolver = Callable[[str, int], list[str]]
Check = Callable[[str, list[str]], None]  # raises UnsafeUrl


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, except that a connection goes to an address resolved for
    it and checked: the name is resolved once, every address it gave is checked, and one of
    them is connected to. Checking the URL and then letting the client resolve the name again
    would leave a window where the name points elsewhere (DNS rebinding: a public address for
    the check, 127.0.0.1 for the connection). TLS is unchanged: httpcore starts it with the
    URL's host as the server name, so SNI and the certificate check use the hostname."""

    def __init__(self, check: Check | None, resolve: Resolver) -> None:
        self.check = check  # None: every address allowed (SNGAN_WEBHOOK_ALLOW_PRIVATE)
        self.resolve = resolve
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # one deadline for resolving and connecting: the lease allows for one timeout here
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with anyio.fail_after(timeout):
                addresses = await anyio.to_thread.run_sync(
                    self.resolve, host, port, abandon_on_cancel=True
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g} s") from None
        except (OSError, UnicodeError) as e:  # retried: a resolver may fail for a while
            raise httpcore.ConnectError(f"host {host} does not resolve: {e}") from None
        if self.check is not None:
            self.check(host, addresses)  # UnsafeUrl: the message is refused
        error: Exception = httpcore.ConnectError(f"host {host} resolves to no address")
        for address in addresses:  # in the resolver's order, as a client would try them
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                return await self.inner.connect_tcp(
                    address, port, left, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        raise error

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a connection pool that connects through `CheckedBackend`. httpx
    0.28 takes no network backend (encode/httpx#3749), so the pool it made is replaced by one
    with the same settings and ours; requests, responses and errors stay httpx's. `resolve`
    and `verify` are the system's unless a test brings its own names or certificates."""

    def __init__(
        self,
        check: Check | None,
        resolve: Resolver = webhooks.resolve,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        super().__init__(verify=verify, trust_env=False)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedBackend(check, resolve),
        )


def client_for(settings: Settings, transport: CheckedTransport | None = None) -> httpx.AsyncClient:
    """The deliverer's client. No redirects (a 3xx fails the message: following one could reach
    an address the check refused), no proxies or credentials from the environment, and every
    connection made to an address checked for it (`CheckedBackend`)."""
    if transport is None:
        check = None if settings.webhook_allow_private else webhooks.check_addresses
        transport = CheckedTransport(check)
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        timeout=settings.webhook_timeout_s,
        trust_env=False,
    )


async def run(sessions: sessionmaker[Session], settings: Settings) -> None:
    """Send due messages until cancelled; a round that sent something is followed at once
    by the next (a job's next message waits for the one before it)."""
    me = f"{worker_name()}:{uuid.uuid4().hex[:8]}"
    async with client_for(settings) as client:
        while True:
            batch: list[Outgoing] = []
            try:
                batch = await _in_thread(take_due, sessions, settings, me)
                await asyncio.gather(
                    *(deliver(client, sessions, settings, me, out) for out in batch)
                )
            except Exception:  # the database may be down for a while; try again next round
                log.exception("webhook delivery round failed")
                batch = []
            if not batch:
                await asyncio.sleep(settings.webhook_poll_interval_s)
