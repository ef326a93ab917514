"""Webhooks' HTTP API (`/v1/webhooks`): a partner's endpoints, their delivery log and resends.

Every route needs the `webhooks:manage` scope (an API client's token with it, or a console admin's) and sees only the
token's partner's endpoints: another partner's endpoint is a 404, as one that does not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import BaseModel, Field

from contracts.primitives import UtcDatetime
from servicekit.app import parts_dependency, runtime_of
from servicekit.auth import WebhooksManager
from servicekit.errors import problems
from servicekit.http import version_from_if_match, with_etag
from servicekit.pagination import decode_cursor, encode_cursor, page_of
from webhooks.delivery import Dispatcher
from webhooks.domain import Clock, Endpoint, EndpointCreated, EndpointPatch, MessageState, NewEndpoint, RotatedSecret
from webhooks.repository import attempt_log
from webhooks.services import Endpoints
from webhooks.settings import WebhooksSettings
from webhooks.targets import TargetGuard


@dataclass(frozen=True)
class WebhooksParts:
    """What start-up builds for the routes."""

    guard: TargetGuard
    clock: Clock
    dispatcher: Dispatcher
    client: httpx.AsyncClient  # the deliveries', closed at stop


Parts = Annotated[WebhooksParts, Depends(parts_dependency(WebhooksParts))]

router = APIRouter(prefix="/v1/webhooks", tags=["Webhooks"])

TARGET_REFUSALS = (
    "`target_not_allowed`: the URL's host resolves to a loopback, private, link-local, multicast, reserved or "
    "metadata address; `target_unresolvable`: it resolves to nothing; `validation_failed`: the body is wrong"
)


def _endpoints(request: Request, who: WebhooksManager, parts: WebhooksParts) -> Endpoints:
    settings: WebhooksSettings = request.app.state.settings
    return Endpoints(
        runtime_of(request).pool,
        who.partner_id,
        parts.guard,
        parts.clock,
        timedelta(seconds=settings.secret_grace_s),
    )


class EndpointPage(BaseModel):
    items: list[Endpoint]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class AttemptView(BaseModel):
    attempted_at: datetime
    response_status: int | None = Field(description="The endpoint's HTTP status; null: no answer (see `error`)")
    latency_ms: int
    response_excerpt: str | None = Field(description="The start of the answer's body (at most 1 KiB by default)")
    error: str | None = Field(description="Why there was no answer: timeout, connection, refused address...")


class MessageView(BaseModel):
    id: str = Field(description="The `webhook-id` of every attempt")
    event_id: str
    event_type: str
    order_id: str | None
    sequence: int | None = Field(description="The order's status sequence number (status changes only)")
    state: MessageState = Field(description="pending (to be sent, at next_attempt_at), succeeded, failed (given up)")
    next_attempt_at: datetime | None = Field(
        description="When a pending message is sent next; null for a pending status change waiting for an earlier "
        "one of its order (sent once that one has succeeded or been given up), and once finished"
    )
    created_at: datetime
    finished_at: datetime | None
    payload: dict[str, Any] = Field(description="The body as sent")
    attempts: list[AttemptView] = Field(description="Every attempt, oldest first")


class MessagePage(BaseModel):
    items: list[MessageView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class ResendFailed(BaseModel):
    since: UtcDatetime = Field(description="Every message given up on that was created at or after this instant")


class Resent(BaseModel):
    resent: int = Field(description="How many messages are due again")


@router.post(
    "/endpoints",
    status_code=status.HTTP_201_CREATED,
    response_model=EndpointCreated,
    responses=problems(422, s422=TARGET_REFUSALS),
)
async def create_endpoint(
    new: NewEndpoint, request: Request, response: Response, who: WebhooksManager, parts: Parts
) -> EndpointCreated:
    """A new endpoint and its signing secret, shown in this answer only."""
    created = await _endpoints(request, who, parts).create(new)
    response.headers["Location"] = f"/v1/webhooks/endpoints/{created.id}"
    response.headers["Cache-Control"] = "no-store"
    return with_etag(response, created)


@router.get("/endpoints", response_model=EndpointPage)
async def list_endpoints(
    request: Request,
    who: WebhooksManager,
    parts: Parts,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EndpointPage:
    after = decode_cursor(cursor, datetime, str) if cursor else None
    rows = await _endpoints(request, who, parts).page(after=after, limit=limit + 1)
    items, next_cursor = page_of(rows, limit, lambda endpoint: (endpoint.created_at, endpoint.id))
    return EndpointPage(items=items, next_cursor=next_cursor)


@router.get("/endpoints/{endpoint_id}", response_model=Endpoint, responses=problems(404))
async def get_endpoint(
    endpoint_id: str, request: Request, response: Response, who: WebhooksManager, parts: Parts
) -> Endpoint:
    return with_etag(response, await _endpoints(request, who, parts).get(endpoint_id))


@router.patch(
    "/endpoints/{endpoint_id}",
    response_model=Endpoint,
    responses=problems(404, 412, 422, 428, s422=TARGET_REFUSALS),
)
async def update_endpoint(
    endpoint_id: str,
    patch: EndpointPatch,
    request: Request,
    response: Response,
    who: WebhooksManager,
    parts: Parts,
    if_match: Annotated[str | None, Header()] = None,
) -> Endpoint:
    """Change the fields sent. Needs `If-Match` with the ETag read (or `*`); enabling a disabled endpoint clears its
    disabled reason, and its pending messages go out again. A new `url` clears the failure streak and the pause
    (`failing_since`, `paused_until`: a new target has no history); other changes keep them."""
    version = version_from_if_match(if_match, required=True, what="the endpoint")
    return with_etag(response, await _endpoints(request, who, parts).update(endpoint_id, patch, version))


@router.delete("/endpoints/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(404))
async def delete_endpoint(endpoint_id: str, request: Request, who: WebhooksManager, parts: Parts) -> Response:
    """The endpoint, its secrets and its delivery log; nothing more is sent to it."""
    await _endpoints(request, who, parts).delete(endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/endpoints/{endpoint_id}/rotate-secret", response_model=RotatedSecret, responses=problems(404))
async def rotate_secret(
    endpoint_id: str, request: Request, response: Response, who: WebhooksManager, parts: Parts
) -> RotatedSecret:
    """A new secret, shown in this answer only. The current one goes on signing beside it (two signatures in
    `webhook-signature`) for 24 hours; an older one stops at once."""
    rotated = await _endpoints(request, who, parts).rotate_secret(endpoint_id)
    response.headers["Cache-Control"] = "no-store"
    return with_etag(response, rotated)


@router.get("/endpoints/{endpoint_id}/messages", response_model=MessagePage, responses=problems(404))
async def list_messages(
    endpoint_id: str,
    request: Request,
    who: WebhooksManager,
    parts: Parts,
    state: MessageState | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> MessagePage:
    """The delivery log, newest first: each message with every attempt (time, status, latency, answer excerpt)."""
    after = decode_cursor(cursor, datetime, str) if cursor else None
    rows = await _endpoints(request, who, parts).messages(
        endpoint_id, after=after, limit=limit + 1, state=state.value if state else None
    )
    items = [_message_view(row) for row in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1]["created_at"], rows[limit - 1]["id"]) if len(rows) > limit else None
    return MessagePage(items=items, next_cursor=next_cursor)


def _message_view(row: Any) -> MessageView:
    return MessageView(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        order_id=row["order_id"],
        sequence=row["sequence"],
        state=row["state"],
        next_attempt_at=row["next_attempt_at"] if row["state"] == MessageState.PENDING else None,
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        payload=json.loads(row["payload"]),
        attempts=[AttemptView(**attempt) for attempt in attempt_log(row["attempt_log"])],
    )


@router.post(
    "/endpoints/{endpoint_id}/messages/{message_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Resent,
    responses=problems(404, 409, s409="`message_in_flight`: an attempt of it is under way; resend once it is logged"),
)
async def resend_message(
    endpoint_id: str, message_id: str, request: Request, who: WebhooksManager, parts: Parts
) -> Resent:
    """Send the message again now, with the same `webhook-id` (a receiver that has it already can ignore it)."""
    await _endpoints(request, who, parts).resend(endpoint_id, message_id)
    parts.dispatcher.wake()
    return Resent(resent=1)


@router.post(
    "/endpoints/{endpoint_id}/resend-failed",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Resent,
    responses=problems(404),
)
async def resend_failed(
    endpoint_id: str, body: ResendFailed, request: Request, who: WebhooksManager, parts: Parts
) -> Resent:
    """Send again every message given up on (`failed`) created since `since`, each with its own `webhook-id`."""
    resent = await _endpoints(request, who, parts).resend_failed(endpoint_id, body.since)
    parts.dispatcher.wake()
    return Resent(resent=resent)
