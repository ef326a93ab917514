"""Use cases of the orders service: apply commands (upstream events or REST requests) in one transaction.

A batch of commands runs in ONE transaction: the orders it touches are locked in a fixed order, the
commands already processed are skipped, each remaining one is decided by the domain, and the new
state, the history rows (of statuses and of details), the processed-event claims and the outbox events
commit together. Refused commands write nothing; the caller dead-letters or retries them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter

from contracts.envelope import Envelope
from contracts.orders import OrderSnapshot, OrderStatusChanged
from contracts.statuses import CurrentStatuses, StatusType
from contracts.topics import order_key
from orders.domain import (
    Change,
    DetailsChange,
    DetailsOutcome,
    Order,
    OrderDetails,
    Outcome,
    Reason,
    Refused,
    Requested,
    decide_all,
    decide_details,
    initial_finder,
    new_order,
)
from orders.repository import (
    BatchWrites,
    DetailsEntry,
    HistoryEntry,
    OrderKey,
    claim_request_key,
    load_batch,
    lock_order_keys,
    save_batch,
    store_response,
)
from servicekit import outbox
from servicekit.catalog import StatusCatalog
from servicekit.db import DbConnection
from servicekit.errors import Conflict, Unprocessable
from servicekit.outbox import OutboxRecord, record_for
from servicekit.tracing import consume_span

SOURCE = "/services/orders"
CONSUMER = "orders"

STATUS_CHANGES = Counter("order_status_changes_total", "Applied status changes", ["type"])
STALE_EVENTS = Counter("order_stale_events_total", "Status changes ignored as older than the applied one", ["type"])
STALE_DETAILS = Counter("order_stale_details_total", "Order details ignored as older than the applied ones")
REFUSED = Counter("order_commands_refused_total", "Commands refused by a rule", ["reason"])


@dataclass(frozen=True)
class Command:
    """One upstream event or REST request: optional order details and the status changes it asks for."""

    partner_id: str
    order_id: str
    event_id: str
    requests: tuple[Requested, ...]
    details: OrderDetails | None = None
    correlation_id: str | None = None
    headers: tuple[tuple[str, bytes], ...] = ()  # of the Kafka record: trace context to continue

    @property
    def claim_id(self) -> str:
        # Upstream ids are unique per producer, not across partners: scope the de-duplication by partner.
        return f"{self.partner_id}:{self.event_id}"

    @property
    def key(self) -> OrderKey:
        return (self.partner_id, self.order_id)


@dataclass
class Result:
    command: Command
    changes: list[Change] = field(default_factory=list)
    refused: Refused | None = None
    duplicate: bool = False
    order: Order | None = None
    details: DetailsChange | None = None  # for a command with details (an upsert)

    @property
    def applied(self) -> list[Change]:
        return [c for c in self.changes if c.outcome is Outcome.APPLIED]

    @property
    def rewritten(self) -> set[StatusType]:
        """The types whose current status row changed: a new status, or a newer watermark for the same one."""
        return {c.status_type for c in self.changes if c.outcome is not Outcome.STALE}


@dataclass(frozen=True)
class RequestKey:
    """A REST request's Idempotency-Key and the fingerprint of the request it was first used for."""

    key: str
    fingerprint: str


Answer = tuple[int, dict[str, Any]]  # an HTTP status and its JSON body
Responder = Callable[[DbConnection, Result], Awaitable[Answer]]
RETRY_AFTER_S = 1  # what a request refused for a concurrent one is told to wait


@dataclass
class OrderService:
    pool: asyncpg.Pool
    catalog: StatusCatalog
    topic_status_changed: str
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # How long a REST write waits for a lock held by another request (on the order, or on its Idempotency-Key)
    # before it answers 409 with Retry-After instead of holding a connection.
    request_lock_timeout_s: float = 5.0

    async def handle(self, commands: Sequence[Command]) -> list[Result]:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                results = await self._handle(conn, commands)
            if any(result.applied for result in results):
                outbox.committed()  # the batch's events are in the outbox: this process's relay goes now
            return results

    async def handle_request(self, command: Command, respond: Responder, key: RequestKey | None = None) -> Answer:
        """A REST request, answered by `respond` inside its transaction, so that the answer stored under its
        Idempotency-Key commits with the change it describes.

        Decided only once the status replica has read everything the registry answered for until now, so a status
        created, renamed or archived a moment ago is seen (`StatusCatalog.sync`); not on the Kafka path, where an
        unknown status goes through the retry topic instead. The key is claimed first, in the same transaction: a
        repeat of a finished request gets its answer; one that arrives while the first runs waits for it (up to
        `request_lock_timeout_s`, then a 409 `idempotency_key_in_use`)."""
        await self.catalog.sync()
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {int(self.request_lock_timeout_s * 1000)}")
                    answer, applied = await self._answer_once(conn, command, respond, key)
                if applied:
                    outbox.committed()
                return answer
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError) as exc:  # the order's locks: retryable
            raise _busy(None) from exc

    async def _answer_once(
        self, conn: DbConnection, command: Command, respond: Responder, key: RequestKey | None
    ) -> tuple[Answer, bool]:
        if key is not None:
            try:
                stored = await claim_request_key(conn, command.partner_id, key.key, key.fingerprint)
            except asyncpg.LockNotAvailableError as exc:
                raise _busy(key) from exc
            if stored is not None:
                if stored["request_hash"] != key.fingerprint:
                    raise Unprocessable("Idempotency-Key was used for another request", code="idempotency_key_reused")
                return (stored["status_code"], json.loads(stored["body"])), False
        (result,) = await self._handle(conn, [command])
        answer = await respond(conn, result)
        if key is not None:
            await store_response(conn, command.partner_id, key.key, *answer)
        return answer, bool(result.applied)

    async def _handle(self, conn: DbConnection, commands: Sequence[Command]) -> list[Result]:
        now = self.clock()
        if any(c.details is not None for c in commands):  # a command that may create an order: lock_order_keys
            await lock_order_keys(conn, [c.key for c in commands])
        orders, seen = await load_batch(conn, [c.key for c in commands], CONSUMER, [c.claim_id for c in commands])
        results, history, details, events, claims = [], [], [], [], []
        for command in commands:
            result = Result(command)
            results.append(result)
            if command.claim_id in seen:
                result.duplicate = True
                continue
            attributes = {"partner_id": command.partner_id, "order_id": command.order_id, "event_id": command.event_id}
            with consume_span("orders apply", command.headers, attributes):
                try:
                    result.order, result.changes, result.details = self._decide(command, orders, now)
                except Refused as refused:
                    REFUSED.labels(refused.reason).inc()
                    result.refused = refused
                    continue
                carried = None
                if applied := result.applied:
                    snapshot = result.order.snapshot()  # the order after all of the command's changes
                    events += [self._event(command, result.order.order_id, snapshot, c) for c in applied]
                    carried = snapshot.statuses
            seen.add(command.claim_id)  # the same event twice in one batch counts once
            claims.append(command.claim_id)
            history += [_history_entry(command, c, carried) for c in result.changes]
            if result.details is not None:
                details.append(DetailsEntry(command.partner_id, command.order_id, command.event_id, result.details))
        touched = {r.command.key: r.order for r in results if r.order is not None}
        # One row per (order, type): an order touched by several commands of the batch is written once.
        statuses = {(r.command.key, t): (touched[r.command.key], t) for r in results if r.order for t in r.rewritten}
        writes = BatchWrites(list(touched.values()), list(statuses.values()), history, details, claims, events)
        await save_batch(conn, CONSUMER, writes, now)
        _count(results)
        return results

    def _decide(
        self, command: Command, orders: dict[OrderKey, Order], now: datetime
    ) -> tuple[Order, list[Change], DetailsChange | None]:
        order = orders.get(command.key)
        details: DetailsChange | None = None
        if order is None and command.details is None:
            raise Refused(Reason.UNKNOWN_ORDER, f"order '{command.order_id}' is unknown; send order.upserted first")
        if order is None:
            assert command.details is not None
            order, details = new_order(command.partner_id, command.order_id, command.details)
        definitions = self.catalog.of_partner(command.partner_id)
        lookup = {d.code: d for d in definitions}.get
        # decide_all changes nothing when it refuses, so a refused command leaves the order as it was (and a new
        # order is not kept); the details are decided only once the statuses were accepted.
        changes = decide_all(order, command.requests, lookup, initial_finder(definitions), now)
        if details is None and command.details is not None:
            details = decide_details(order, command.details)
        orders[command.key] = order
        return order, changes, details

    def _event(self, command: Command, order_id: str, snapshot: OrderSnapshot, change: Change) -> OutboxRecord:
        assert change.sequence is not None
        data = OrderStatusChanged(
            order_id=order_id,
            status_type=change.status_type,
            from_status=change.from_status,
            to_status=change.to_status,
            to_include_in_analytics=change.to_include_in_analytics,
            sequence=change.sequence,
            order=snapshot,
            occurred_at=change.requested.occurred_at,
        )
        envelope = Envelope.wrap(
            data,
            source=SOURCE,
            partner_id=command.partner_id,
            correlation_id=command.correlation_id or command.event_id,
            causation_id=command.event_id,
        )
        return record_for(envelope, self.topic_status_changed, order_key(command.partner_id, order_id))


def _history_entry(command: Command, change: Change, statuses: CurrentStatuses | None) -> HistoryEntry:
    """An applied change's row keeps the order's statuses its event carried (the campaigns backtest reads them)."""
    carried = statuses if change.outcome == Outcome.APPLIED else None
    return HistoryEntry(command.partner_id, command.order_id, command.event_id, change, carried)


def _busy(key: RequestKey | None) -> Conflict:
    """The 409 for a request that waited too long for a concurrent one: retrying it later is the answer."""
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if key is not None:
        message = "a request with this Idempotency-Key is still running; retry it to get its answer"
        return Conflict(message, code="idempotency_key_in_use", headers=headers)
    return Conflict("another request is changing this order; retry", code="concurrent_change", headers=headers)


def _count(results: list[Result]) -> None:
    for result in results:
        if result.details is not None and result.details.outcome is DetailsOutcome.STALE:
            STALE_DETAILS.inc()
        for change in result.changes:
            if change.outcome is Outcome.APPLIED:
                STATUS_CHANGES.labels(change.status_type).inc()
            elif change.outcome is Outcome.STALE:
                STALE_EVENTS.labels(change.status_type).inc()
