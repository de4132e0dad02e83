"""What the webhook routes do: endpoints, the signing secret, a job's deliveries, redelivery."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.api.errors import ApiError, invalid, not_found
from app.api.schemas import WebhookDeliveryPublic, WebhookPublic, WebhookSecretPublic
from app.core import webhooks
from app.core.config import get_settings
from app.core.tables import WebhookEndpoint, WebhookMessage, WebhookSecret, utcnow
from app.core.webhooks import PENDING, UnsafeUrl

MAX_ENDPOINTS_PER_OWNER = 16


def check_url(field: str, url: str) -> None:
    """A 422 naming the field (and the refused address) for a URL the deliverer would refuse."""
    try:
        webhooks.check_url(url, get_settings().webhook_allow_private)
    except UnsafeUrl as e:
        raise invalid(field, str(e)) from None


def create(session: Session, owner: str, url: str, events: Iterable[str]) -> WebhookEndpoint:
    check_url("url", url)
    count = len(list_(session, owner))
    if count >= MAX_ENDPOINTS_PER_OWNER:
        raise ApiError(
            409,
            "too_many_webhooks",
            f"this key has {count} webhooks; the limit is {MAX_ENDPOINTS_PER_OWNER}",
        )
    endpoint = webhooks.subscribe(session, owner, url, events)
    session.commit()
    return endpoint


def list_(session: Session, owner: str) -> list[WebhookEndpoint]:
    """The owner's endpoints for all its jobs (a job's own is listed with its deliveries)."""
    return list(
        session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.owner == owner, WebhookEndpoint.job_id.is_(None))
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
    )


def delete_(session: Session, owner: str, endpoint_id: str) -> None:
    """Remove an endpoint, and with it its messages (pending ones are not sent)."""
    result = session.execute(
        delete(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.owner == owner,
            WebhookEndpoint.job_id.is_(None),
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise not_found("webhook", endpoint_id)
    session.commit()


def secret(session: Session, owner: str) -> WebhookSecretPublic:
    row = webhooks.secret_of(session, owner)
    session.commit()
    return _secret_public(row)


def rotate(session: Session, owner: str) -> WebhookSecretPublic:
    row = webhooks.rotate(session, owner, get_settings().webhook_secret_overlap_s)
    session.commit()
    return _secret_public(row)


def _secret_public(row: WebhookSecret) -> WebhookSecretPublic:
    until = row.previous_until if row.previous_until and row.previous_until > utcnow() else None
    return WebhookSecretPublic(secret=row.secret, previous_secret_expires_at=until)


def deliveries(session: Session, job_id: str, limit: int) -> list[WebhookDeliveryPublic]:
    """The job's messages, newest first."""
    rows = session.execute(
        select(WebhookMessage, WebhookEndpoint.url)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
        .where(WebhookMessage.job_id == job_id)
        .order_by(WebhookMessage.seq.desc())
        .limit(limit)
    )
    return [delivery_public(message, url) for message, url in rows]


def redeliver(session: Session, job_id: str, delivery_id: str) -> WebhookDeliveryPublic:
    """Send a message again as soon as the deliverer comes by (same webhook-id, signed anew),
    on a fresh retry schedule; its earlier attempts stay recorded."""
    found = session.execute(
        select(WebhookMessage, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
        .where(WebhookMessage.job_id == job_id, WebhookMessage.id == delivery_id)
    ).first()
    if found is None:
        raise not_found("webhook delivery", delivery_id)
    message, endpoint = found
    if endpoint.disabled_at is not None:
        raise ApiError(
            409,
            "webhook_disabled",
            f"the endpoint of this delivery is disabled ({endpoint.disabled_reason}); "
            "subscribe the URL again to use it",
        )
    message.status = PENDING
    message.retries = 0
    message.next_attempt_at = utcnow()
    message.lease_owner = None
    message.lease_until = None
    session.commit()
    return delivery_public(message, endpoint.url)


def endpoint_public(endpoint: WebhookEndpoint) -> WebhookPublic:
    return WebhookPublic(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        job_id=endpoint.job_id,
        created_at=endpoint.created_at,
        disabled_at=endpoint.disabled_at,
        disabled_reason=endpoint.disabled_reason,
    )


def delivery_public(message: WebhookMessage, url: str) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        id=message.id,
        type=message.type,
        url=url,
        status=message.status,  # type: ignore[arg-type]
        attempts=message.attempts,
        last_status_code=message.last_status_code,
        last_error=message.last_error,
        next_attempt_at=message.next_attempt_at,
        created_at=message.created_at,
        delivered_at=message.delivered_at,
    )
