"""/v1/webhooks (endpoints for all the key's jobs, the signing secret) and a job's deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import PrincipalDep, SessionDep
from app.api.schemas import (
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookSecretPublic,
    WebhooksPublic,
    WebhookSubscription,
    error_responses,
)
from app.api.services import jobs, webhooks

router = APIRouter(tags=["webhooks"])


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=WebhookPublic,
    responses=error_responses(401, 409, 422),
)
def create_webhook(
    body: WebhookSubscription, principal: PrincipalDep, session: SessionDep
) -> WebhookPublic:
    """Send the events of all this key's jobs to a URL (signed; see the secret)."""
    endpoint = webhooks.create(session, principal.owner, body.url, body.events)
    return webhooks.endpoint_public(endpoint)


@router.get("/v1/webhooks", response_model=WebhooksPublic, responses=error_responses(401))
def list_webhooks(principal: PrincipalDep, session: SessionDep) -> WebhooksPublic:
    """This key's endpoints (a disabled one says when and why)."""
    rows = webhooks.list_(session, principal.owner)
    return WebhooksPublic(data=[webhooks.endpoint_public(e) for e in rows])


@router.get(
    "/v1/webhooks/secret", response_model=WebhookSecretPublic, responses=error_responses(401)
)
def get_webhook_secret(principal: PrincipalDep, session: SessionDep) -> WebhookSecretPublic:
    """The secret this key's webhooks are signed with (made on first use)."""
    return webhooks.secret(session, principal.owner)


@router.post(
    "/v1/webhooks/secret/rotate",
    response_model=WebhookSecretPublic,
    responses=error_responses(401),
)
def rotate_webhook_secret(principal: PrincipalDep, session: SessionDep) -> WebhookSecretPublic:
    """A new secret; the old one keeps signing beside it until ``previous_secret_expires_at``."""
    return webhooks.rotate(session, principal.owner)


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 404),
)
def delete_webhook(webhook_id: str, principal: PrincipalDep, session: SessionDep) -> Response:
    """Stop sending to an endpoint; its undelivered messages are dropped."""
    webhooks.delete_(session, principal.owner, webhook_id)
    return Response(status_code=204)


@router.get(
    "/v1/jobs/{job_id}/webhook-deliveries",
    response_model=WebhookDeliveriesPublic,
    responses=error_responses(401, 404, 422),
)
def list_webhook_deliveries(
    job_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WebhookDeliveriesPublic:
    """The job's webhook messages, newest first: status, attempts, last answer, next try."""
    jobs.get(session, principal.owner, job_id)
    return WebhookDeliveriesPublic(data=webhooks.deliveries(session, job_id, limit))


@router.post(
    "/v1/jobs/{job_id}/webhook-deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=WebhookDeliveryPublic,
    responses=error_responses(401, 404, 409),
)
def redeliver_webhook(
    job_id: str, delivery_id: str, principal: PrincipalDep, session: SessionDep
) -> WebhookDeliveryPublic:
    """Send a message again (same ``webhook-id``, signed anew)."""
    jobs.get(session, principal.owner, job_id)
    return webhooks.redeliver(session, job_id, delivery_id)
