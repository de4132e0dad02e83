"""Webhooks of job events: endpoints, signing secrets, URL safety and the outbox writes.

A message is written to the outbox (``webhook_messages``) by `on_event`, which
``events.append`` calls in the transaction of the change it describes (a status change, a
checkpoint or sample row): the message exists exactly when the change was committed, whoever
made it (the API, the worker, the reaper). The API process's deliverer
(app/api/services/webhook_delivery.py) sends it and records every attempt.

Signing follows Standard Webhooks v1 through the ``standardwebhooks`` library: headers
``webhook-id`` (the message id, the same on every attempt), ``webhook-timestamp`` (unix seconds
of the attempt) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
one per signing secret, space-separated). Secrets are per owner.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Dialect, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from app.core.status import FINISHED_STATUSES
from app.core.tables import Job, WebhookEndpoint, WebhookMessage, WebhookSecret, utcnow

# what a subscription may ask for; "finished" is a status change to a final status only
EVENTS = ("status", "finished", "checkpoint", "sample", "evaluation")
DEFAULT_EVENTS = ("finished",)
# the event-log types that can become a webhook (progress and metrics never do)
_SOURCES = frozenset({"status", "checkpoint", "sample", "evaluation"})
MAX_BODY_BYTES = 64 * 1024  # a body past this carries the job's id only (never seen in practice)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


# --- URL safety ----------------------------------------------------------------------------


class UnsafeUrl(ValueError):
    """A webhook URL this service will not call; the message says why."""


_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def refused_kind(address: str) -> str | None:
    """What makes `address` off limits by default ("loopback", "private", ...), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    checks = (
        ("metadata", ip in _METADATA),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("non-global", not ip.is_global),  # e.g. 100.64.0.0/10, carrier-grade NAT's
    )
    return next((kind for kind, hit in checks if hit), None)


def check_url(url: str, allow_private: bool) -> None:
    """Raise `UnsafeUrl` unless `url` is http(s) with a host that resolves, when private
    addresses are not allowed, to public addresses only. Called at subscription time; at send
    time the deliverer checks the addresses it resolves for each connection and connects to
    one of them (`check_addresses`), so a name that resolves elsewhere later is caught then."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("must be an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("must not carry credentials (they would be logged and stored)")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeUrl("has an invalid port") from None
    if allow_private:
        return
    try:
        addresses = resolve(host, port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError):
        raise UnsafeUrl(f"host {host} does not resolve") from None
    check_addresses(host, addresses)


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to for TCP, in the resolver's order, each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(host: str, addresses: Iterable[str]) -> None:
    """Raise `UnsafeUrl` if any address `host` resolved to is off limits (one is enough: a
    connection could go to any of them)."""
    for address in addresses:
        kind = refused_kind(address)
        if kind is not None:
            raise UnsafeUrl(
                f"host {host} is {address}, a {kind} address; deliveries there are refused "
                "(SNGAN_WEBHOOK_ALLOW_PRIVATE=true allows them)"
            )


# --- secrets -------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_of(session: Session, owner: str) -> WebhookSecret:
    """The owner's secret row, made on first use (two first uses at once make one)."""
    row = session.get(WebhookSecret, owner)
    if row is not None:
        return row
    dialect: Dialect = session.get_bind().dialect
    insert: Any = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(WebhookSecret)
        .values(owner=owner, secret=new_secret(), created_at=utcnow())
        .on_conflict_do_nothing()
    )
    row = session.get(WebhookSecret, owner, populate_existing=True)
    assert row is not None
    return row


def rotate(session: Session, owner: str, overlap_s: float) -> WebhookSecret:
    """A new secret; the current one keeps signing beside it for `overlap_s`. The caller
    commits."""
    row = secret_of(session, owner)
    postgres = session.get_bind().dialect.name == "postgresql"
    session.refresh(row, with_for_update=True if postgres else None)  # two rotations: in turn
    row.previous_secret = row.secret
    row.previous_until = utcnow() + timedelta(seconds=overlap_s)
    row.secret = new_secret()
    return row


def signing_secrets(row: WebhookSecret, now: datetime) -> list[str]:
    """The secrets a message is signed with now: the current one, and the previous one while
    its overlap lasts."""
    if row.previous_secret and row.previous_until and row.previous_until > now:
        return [row.secret, row.previous_secret]
    return [row.secret]


def sign(secrets_: Iterable[str], msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space-separated."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets_)


# --- endpoints and the outbox --------------------------------------------------------------


def subscribe(
    session: Session, owner: str, url: str, events: Iterable[str], job_id: str | None = None
) -> WebhookEndpoint:
    """An endpoint for all the owner's jobs (`job_id` None) or one job; the caller commits."""
    secret_of(session, owner)  # so the secret shown before the first event is the one used
    endpoint = WebhookEndpoint(
        id=uuid.uuid4().hex,
        owner=owner,
        job_id=job_id,
        url=url,
        events=sorted(set(events)),
        created_at=utcnow(),
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def wanted(event: str, data: dict[str, Any], subscribed: Iterable[str]) -> bool:
    chosen = set(subscribed)
    if event == "status":
        return "status" in chosen or (
            "finished" in chosen and data.get("status") in FINISHED_STATUSES
        )
    return event in chosen


def on_event(session: Session, job_id: str, event: str, data: dict[str, Any]) -> None:
    """Write a message per endpoint that wants this event of the job, in the caller's
    transaction (``events.append`` calls this; an evaluation result calls it itself)."""
    if event not in _SOURCES:
        return
    owner = select(Job.owner).where(Job.id == job_id).scalar_subquery()
    endpoints = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.disabled_at.is_(None),
            or_(
                WebhookEndpoint.job_id == job_id,
                (WebhookEndpoint.job_id.is_(None)) & (WebhookEndpoint.owner == owner),
            ),
        )
    ).all()
    targets = [e for e in endpoints if wanted(event, data, e.events)]
    if not targets:
        return
    now = utcnow()
    payload = (
        job_summary(session, job_id, data) if event == "status" else {"job_id": job_id, **data}
    )
    body = json.dumps(
        {"type": f"job.{event}", "timestamp": now.isoformat(), "data": payload},
        separators=(",", ":"),
        default=_iso,
    )
    if len(body.encode()) > MAX_BODY_BYTES:
        body = json.dumps(
            {"type": f"job.{event}", "timestamp": now.isoformat(), "data": {"id": job_id}},
            separators=(",", ":"),
        )
    for endpoint in targets:
        session.add(
            WebhookMessage(
                id=f"msg_{uuid.uuid4().hex}",
                endpoint_id=endpoint.id,
                job_id=job_id,
                type=f"job.{event}",
                body=body,
                status=PENDING,
                attempts=0,
                retries=0,
                next_attempt_at=now,
                created_at=now,
            )
        )


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def job_summary(session: Session, job_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """The job as this transaction sees it (its status update included): the main fields of
    ``GET /v1/jobs/{id}``, and the status event's reason when there is one."""
    job = session.execute(
        select(
            Job.id,
            Job.name,
            Job.status,
            Job.created_at,
            Job.started_at,
            Job.finished_at,
            Job.step,
            Job.total_steps,
            Job.latest_metrics,
            Job.error_code,
            Job.error_message,
            Job.best_fid,
            Job.best_step,
            Job.attempts,
        ).where(Job.id == job_id)
    ).one()
    summary: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "status": event.get("status", job.status),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": {"step": job.step, "total_steps": job.total_steps},
        "latest_metrics": job.latest_metrics or {},
        "error": (
            {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None
        ),
        "best_fid": job.best_fid,
        "best_step": job.best_step,
        "attempts": job.attempts,
        "links": {"self": f"/v1/jobs/{job.id}"},
    }
    if "reason" in event:
        summary["reason"] = event["reason"]
    return summary
