"""Webhooks' use cases: a partner's endpoints (each change in one transaction), the delivery log and resends, and
the consumers' fan-out of platform events into messages (in the transaction that claims the events)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from contracts.base import Contract
from contracts.envelope import Envelope
from contracts.webhooks import order_position, status_type_of, webhook_payload
from servicekit.consumer import claim_new
from servicekit.errors import Conflict, FieldError, NotFound, PreconditionFailed, Unprocessable
from webhooks.domain import (
    Clock,
    Endpoint,
    EndpointCreated,
    EndpointPatch,
    NewEndpoint,
    RotatedSecret,
    apply_patch,
    held_back,
    new_endpoint_id,
    new_message_id,
    new_secret,
    wants,
)
from webhooks.repository import Deliveries, EndpointRepository, NewMessage, Subscriber
from webhooks.targets import TargetGuard, TargetRefused


@dataclass(frozen=True)
class Endpoints:
    """A partner's endpoints."""

    pool: asyncpg.Pool
    partner_id: str
    guard: TargetGuard
    clock: Clock
    secret_grace: timedelta

    async def create(self, new: NewEndpoint) -> EndpointCreated:
        await self._check_target(new.url)
        secret = new_secret()
        async with self.pool.acquire() as conn, conn.transaction():
            endpoint = await EndpointRepository(conn, self.partner_id).insert(
                new_endpoint_id(), new.model_dump(), secret
            )
        return EndpointCreated(**endpoint.model_dump(), secret=secret)

    async def get(self, endpoint_id: str) -> Endpoint:
        async with self.pool.acquire() as conn:
            return _found(await EndpointRepository(conn, self.partner_id).get(endpoint_id), endpoint_id)

    async def page(self, *, after: tuple[datetime, str] | None, limit: int) -> list[Endpoint]:
        async with self.pool.acquire() as conn:
            return await EndpointRepository(conn, self.partner_id).page(after=after, limit=limit)

    async def update(self, endpoint_id: str, patch: EndpointPatch, if_match: int | None) -> Endpoint:
        """Change an endpoint at the version the caller read (None: `If-Match: *`, whatever is current). Writes of one
        endpoint run one after another (its row is locked), so of two PATCHes sent with the same ETag one changes it
        and the other is refused (412)."""
        if patch.url is not None:
            await self._check_target(patch.url)
        async with self.pool.acquire() as conn, conn.transaction():
            endpoints = EndpointRepository(conn, self.partner_id)
            current = _found(await endpoints.get(endpoint_id, for_update=True), endpoint_id)
            if if_match is not None and current.version != if_match:
                raise PreconditionFailed(f"the endpoint is at version {current.version}, not {if_match}")
            changes = apply_patch(current, patch)
            return await endpoints.update(endpoint_id, changes) if changes else current

    async def delete(self, endpoint_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if not await EndpointRepository(conn, self.partner_id).delete(endpoint_id):
                raise NotFound(f"no endpoint {endpoint_id!r}")

    async def rotate_secret(self, endpoint_id: str) -> RotatedSecret:
        """A new secret signs from now on; the one it replaces signs beside it for the grace period."""
        secret = new_secret()
        async with self.pool.acquire() as conn, conn.transaction():
            endpoints = EndpointRepository(conn, self.partner_id)
            _found(await endpoints.get(endpoint_id, for_update=True), endpoint_id)
            await endpoints.rotate_secret(endpoint_id, secret, self.secret_grace.total_seconds())
            updated = await endpoints.update(endpoint_id, {})
        return RotatedSecret(
            secret=secret, previous_secret_expires_at=updated.previous_secret_expires_at, version=updated.version
        )

    async def messages(
        self, endpoint_id: str, *, after: tuple[datetime, str] | None, limit: int, state: str | None
    ) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            endpoints = EndpointRepository(conn, self.partner_id)
            _found(await endpoints.get(endpoint_id), endpoint_id)
            return await endpoints.messages_page(endpoint_id, after=after, limit=limit, state=state)

    async def resend(self, endpoint_id: str, message_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            endpoints = EndpointRepository(conn, self.partner_id)
            _found(await endpoints.get(endpoint_id), endpoint_id)
            outcome = await endpoints.resend(endpoint_id, message_id, self.clock.now())
        if outcome == "missing":
            raise NotFound(f"no message {message_id!r} to endpoint {endpoint_id!r}")
        if outcome == "in_flight":
            raise Conflict(
                f"message {message_id!r} is being sent right now; resend it once its attempt is in the log",
                code="message_in_flight",
            )

    async def resend_failed(self, endpoint_id: str, since: datetime) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            endpoints = EndpointRepository(conn, self.partner_id)
            _found(await endpoints.get(endpoint_id), endpoint_id)
            return await endpoints.resend_failed(endpoint_id, since, self.clock.now())

    async def _check_target(self, url: str) -> None:
        try:
            await self.guard.check(url)
        except TargetRefused as exc:
            error = FieldError(location="body", field="url", message=exc.detail, type=exc.code)
            raise Unprocessable(exc.detail, code=exc.code, errors=[error]) from exc


def _found(endpoint: Endpoint | None, endpoint_id: str) -> Endpoint:
    if endpoint is None:
        raise NotFound(f"no endpoint {endpoint_id!r}")
    return endpoint


async def subscribers_of(pool: asyncpg.Pool, partner_ids: Iterable[str]) -> list[Subscriber]:
    """The enabled endpoints of these partners, read outside any transaction: under READ COMMITTED the claim's
    transaction would read the same endpoints."""
    async with pool.acquire() as conn:
        return await Deliveries(conn).subscribers(sorted(set(partner_ids)))


async def fan_out(
    pool: asyncpg.Pool,
    consumer: str,
    envelopes: Sequence[Envelope[Contract]],
    clock: Clock,
    subscribers: Sequence[Subscriber] | None = None,
) -> int:
    """One message per event and enabled endpoint that wants it, due at once, in the transaction that claims the
    events for `consumer` (a redelivered event finds its claim and adds nothing). Returns the messages made.
    `subscribers`: the enabled endpoints of every partner of `envelopes`, when the caller read them already.

    Most partners have no endpoint, or none that wants most events: a batch no endpoint wants is one read and no
    transaction (it cost a transaction of four statements, for every batch of every consumer: docs/performance.md,
    issue 34). Nothing is claimed then, so should such an event be delivered again after an endpoint that wants it
    was created, that endpoint gets it, once (its claim and the unique message per endpoint and event)."""
    if not envelopes:
        return 0
    if subscribers is None:
        subscribers = await subscribers_of(pool, (envelope.partnerid for envelope in envelopes))
    made = [message for envelope in envelopes for message in _messages_of(envelope, subscribers)] if subscribers else []
    if not made:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        new_ids = await claim_new(conn, consumer, sorted({message.event_id for message in made}))
        messages = [message for message in made if message.event_id in new_ids]
        if messages:
            deliveries = Deliveries(conn)
            await deliveries.insert_messages(await _scheduled(deliveries, messages, clock.now()))
        return len(messages)


async def _scheduled(deliveries: Deliveries, messages: list[NewMessage], now: datetime) -> list[NewMessage]:
    """The messages with their first due time: now, or held (None) behind a pending earlier change of their order
    (one in the database, or one of this batch)."""
    keys = sorted({(m.endpoint_id, m.order_id) for m in messages if m.order_id is not None})
    pending = await deliveries.pending_sequences(keys)
    for message in messages:
        if message.order_id is not None and message.sequence is not None:
            pending.setdefault((message.endpoint_id, message.order_id), []).append(message.sequence)
    return [replace(message, next_attempt_at=None if _held(message, pending) else now) for message in messages]


def _held(message: NewMessage, pending: dict[tuple[str, str], list[int]]) -> bool:
    if message.order_id is None or message.sequence is None:
        return False
    return held_back(message.sequence, pending[(message.endpoint_id, message.order_id)])


def _messages_of(envelope: Envelope[Contract], subscribers: Sequence[Any]) -> list[NewMessage]:
    payload = webhook_payload(envelope)
    status_type = status_type_of(payload)
    position = order_position(payload)
    body = payload.to_bytes().decode()
    return [
        NewMessage(
            id=new_message_id(),
            partner_id=envelope.partnerid,
            endpoint_id=subscriber.id,
            event_id=envelope.id,
            event_type=payload.type.value,
            order_id=position[0] if position else None,
            sequence=position[1] if position else None,
            payload=body,
            next_attempt_at=None,
        )
        for subscriber in subscribers
        if subscriber.partner_id == envelope.partnerid
        and wants(subscriber.event_types, subscriber.status_type, payload.type.value, status_type)
    ]
