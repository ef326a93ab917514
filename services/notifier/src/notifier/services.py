"""Use cases of the notifier; each state change commits in one transaction with the events it causes.

The exactly-once argument (see docs/notifier.md):

* intake: a command's row is keyed by (partner, send_sms_id) and inserted with ON CONFLICT DO NOTHING,
  in the same transaction as its immediate outcome; a redelivered command is a no-op;
* dispatch: the attempt is recorded (`sending`, with a lease) and committed BEFORE the provider is called,
  and the outcome is recorded after; a message is taken only from `scheduled`/`pending`, so no second
  attempt starts while one is in flight;
* restart: an attempt whose lease ran out without an outcome is reconciled with the provider
  (`Provider.lookup`): found -> dispatched without sending; never received -> sent; unknown -> resent only
  when the provider de-duplicates on the idempotency key, otherwise given up rather than risk a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiolimiter import AsyncLimiter
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from contracts.envelope import Envelope, decode
from contracts.errors import ContractError
from contracts.sms import SendSms, SmsDelivered, SmsDispatched, SmsEncoding, SmsFailed, SmsFailureReason
from contracts.topics import sms_key
from notifier.domain import (
    WHOLE_MESSAGE,
    FailureKind,
    GiveUp,
    InvalidPhone,
    Message,
    MessageStatus,
    OptOut,
    RetryPolicy,
    advance,
    advance_receipt,
    encoding_of,
    intake,
    is_stop_request,
    merge_receipts,
    normalized_mobile,
    segment_count,
)
from notifier.providers.base import (
    Accepted,
    DeliveryReport,
    InboundSms,
    OutcomeUnknown,
    OutgoingSms,
    Provider,
    ProviderFailure,
)
from notifier.repository import OWNER_LOCK_CLASS, Claimed, DispatchQueue, MessageRepository, NewMessage
from servicekit.consumer import DeadLetters, Record, Rejected, dead_letter_headers
from servicekit.db import DbConnection
from servicekit.outbox import OutboxRecord, enqueue, record_for
from servicekit.tracing import consume_span, trace_headers

log = logging.getLogger(__name__)

SEND_ATTEMPTS = Counter("sms_send_attempts_total", "Provider calls by outcome", ["provider", "outcome"])

SOURCE = "/services/notifier"
MESSAGE_NAMESPACE = uuid.UUID("6f1d8f0e-3b0a-4c55-9a57-2f6c2f3f8b11")
"""uuid5 namespace of message ids (and event ids): the same command always becomes the same message."""


def message_id_of(partner_id: str, send_sms_id: str) -> str:
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{partner_id}\n{send_sms_id}"))


def _now() -> datetime:
    return datetime.now(UTC)


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class Topics:
    sms_events: str
    send_sms: str
    send_sms_dlq: str
    consumer_group: str


@dataclass(frozen=True)
class Events:
    """Builds the outbox records of a message's outcomes; event ids are deterministic per message and type."""

    topics: Topics

    def _record(self, message: Message, correlation_id: str | None, data: Any) -> OutboxRecord:
        envelope = Envelope.wrap(
            data,
            source=SOURCE,
            partner_id=message.partner_id,
            event_id=str(uuid.uuid5(MESSAGE_NAMESPACE, f"{message.message_id}\n{data.EVENT_TYPE}")),
            causation_id=message.send_sms_id,
            correlation_id=correlation_id or message.send_sms_id,
        )
        return record_for(envelope, self.topics.sms_events, sms_key(message.partner_id, message.phone))

    def _common(self, message: Message) -> dict[str, Any]:
        return {
            "message_id": message.message_id,
            "send_sms_id": message.send_sms_id,
            "partner_id": message.partner_id,
            "campaign_id": message.campaign_id,
            "order_id": message.order_id,
            "phone": message.phone,
            "occurred_at": _now(),
        }

    def dispatched(self, message: Message, correlation_id: str | None, provider: str, pid: str) -> OutboxRecord:
        data = SmsDispatched(
            **self._common(message),
            provider=provider,
            provider_message_id=pid,
            segments=message.segments,
            encoding=message.encoding,
        )
        return self._record(message, correlation_id, data)

    def failed(
        self,
        message: Message,
        correlation_id: str | None,
        reason: SmsFailureReason,
        detail: str,
        *,
        provider: str | None = None,
        pid: str | None = None,
        attempts: int = 0,
    ) -> OutboxRecord:
        data = SmsFailed(
            **self._common(message),
            provider=provider,
            provider_message_id=pid,
            reason=str(reason),
            message=detail[:1000],
            attempts=attempts,
        )
        return self._record(message, correlation_id, data)

    def delivered(self, message: Message, correlation_id: str | None, provider: str, pid: str | None) -> OutboxRecord:
        data = SmsDelivered(**self._common(message), provider=provider, provider_message_id=pid)
        return self._record(message, correlation_id, data)

    def dead_letter(self, claimed: Claimed, reason: str, detail: str) -> OutboxRecord:
        """The original command on the DLQ, with the same headers the consumer plumbing writes."""
        original = _StoredRecord(
            topic=claimed.command_topic or self.topics.send_sms,
            partition=claimed.command_partition if claimed.command_partition is not None else -1,
            offset=claimed.command_offset if claimed.command_offset is not None else -1,
            key=sms_key(claimed.message.partner_id, claimed.message.phone),
            value=claimed.command,
            headers=(),
        )
        headers = dead_letter_headers(Rejected(original, reason, detail), self.topics.consumer_group)
        return OutboxRecord(
            topic=self.topics.send_sms_dlq,
            key=original.key,
            payload=claimed.command,
            headers={k: v.decode() for k, v in headers},
        )


@dataclass(frozen=True)
class _StoredRecord:
    """The fields of a consumed record that `dead_letter_headers` reads, rebuilt from the message row."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass
class Intake:
    """The consumer of `notifier.send-sms.v1`: records each new command with its immediate outcome."""

    pool: asyncpg.Pool
    events: Events
    dead_letters: DeadLetters
    wake: asyncio.Event

    async def process(self, records: Sequence[Record]) -> None:
        rejected: list[Rejected] = []
        commands: list[tuple[Record, Envelope[SendSms]]] = []
        for record in records:
            try:
                commands.append((record, decode(record.value or b"", SendSms)))
            except ContractError as exc:
                rejected.append(Rejected(record, str(exc.reason), exc.detail))
        await self.dead_letters.publish(rejected)
        async with self.pool.acquire() as conn, conn.transaction():
            created = []
            for record, envelope in commands:
                with consume_span("notifier intake", record.headers, {"send_sms_id": envelope.id}):
                    created.append(await self._accept(conn, record, envelope))
        if any(status in (MessageStatus.PENDING, MessageStatus.SCHEDULED) for status in created):
            self.wake.set()

    async def _accept(self, conn: DbConnection, record: Record, envelope: Envelope[SendSms]) -> MessageStatus | None:
        command = envelope.data
        repo = MessageRepository(conn, command.partner_id)
        now = _now()
        decision = intake(
            phone=command.phone,
            expires_at=command.expires_at,
            not_before=command.not_before,
            opted_out=await repo.is_opted_out(command.phone),
            transactional=command.transactional,
            now=now,
        )
        encoding = encoding_of(command.text)
        message = await repo.insert(
            NewMessage(
                message_id=message_id_of(command.partner_id, command.idempotency_key),
                partner_id=command.partner_id,
                send_sms_id=command.idempotency_key,
                campaign_id=command.campaign_id,
                order_id=command.order_id,
                customer_id=command.customer_id,
                phone=command.phone,
                text=command.text,
                sender=command.sender,
                transactional=command.transactional,
                encoding=str(encoding),
                segments=segment_count(command.text, encoding),
                status=decision.status,
                failure_reason=str(decision.failure) if decision.failure else None,
                failure_detail=decision.detail or None,
                requested_at=command.requested_at,
                expires_at=command.expires_at,
                not_before=command.not_before,
                due_at=decision.due_at,
                correlation_id=envelope.correlationid or envelope.id,
                command=record.value or b"",
                command_topic=record.topic,
                command_partition=record.partition,
                command_offset=record.offset,
                trace_parent=trace_headers().get("traceparent"),
            )
        )
        if message is None:
            return None  # redelivered: the first delivery's row and outcome stand
        if decision.failure is not None:
            correlation = envelope.correlationid or envelope.id
            await enqueue(conn, [self.events.failed(message, correlation, decision.failure, decision.detail)])
        return message.status


def outgoing(message: Message, default_sender: str) -> OutgoingSms:
    return OutgoingSms(
        idempotency_key=message.send_sms_id,
        message_id=message.message_id,
        phone=message.phone,
        text=message.text,
        sender=message.sender or default_sender,
        encoding=SmsEncoding(message.encoding),
        segments=message.segments,
    )


@dataclass
class Dispatcher:
    """Sends due messages through the provider, several at once, within the provider's rate limit."""

    pool: asyncpg.Pool
    provider: Provider
    events: Events
    policy: RetryPolicy
    limiter: AsyncLimiter
    wake: asyncio.Event
    default_sender: str = "Notifier"
    max_in_flight: int = 32
    lease_s: float = 300.0
    poll_interval_s: float = 1.0
    _in_flight: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # This instance's id; it holds the advisory lock (OWNER_LOCK_CLASS, instance_id) for as long as it lives.
    instance_id: int = field(default_factory=lambda: secrets.randbelow(2**31 - 1) + 1)

    async def run(self) -> None:
        async with self.pool.acquire() as liveness:
            # Held until this process ends, however it ends: PostgreSQL releases it with the connection, so
            # another dispatcher can tell our unfinished attempts from those of a live instance.
            await liveness.execute("SELECT pg_advisory_lock($1, $2)", OWNER_LOCK_CLASS, self.instance_id)
            await self._loop()

    async def _loop(self) -> None:
        try:
            while True:
                try:
                    await self.reconcile()
                    started = await self.dispatch_due()
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    log.warning("dispatcher: %s: %s; retrying", type(exc).__name__, exc)
                    started = 0
                except Exception:  # a bug must not stop every future send; it is logged and retried
                    log.exception("dispatcher: unexpected error; retrying")
                    started = 0
                if started == 0 or len(self._in_flight) >= self.max_in_flight:
                    await self._sleep()
        finally:
            tasks = list(self._in_flight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.poll_interval_s)
        self.wake.clear()

    async def dispatch_due(self) -> int:
        """Take due messages (as many as there are free slots), record their attempts, start the sends."""
        free = self.max_in_flight - len(self._in_flight)
        if free <= 0:
            return 0
        now = _now()
        to_send: list[tuple[Claimed, int]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            queue = DispatchQueue(conn)
            outbox: list[OutboxRecord] = []
            for claimed in await queue.due(now, free):
                message = claimed.message
                if now >= message.expires_at:
                    await queue.set_status(
                        message.message_id,
                        MessageStatus.EXPIRED,
                        due_at=None,
                        failure_reason=str(SmsFailureReason.EXPIRED),
                        failure_detail=f"expired at {message.expires_at} before sending",
                    )
                    outbox.append(
                        self.events.failed(
                            message,
                            claimed.correlation_id,
                            SmsFailureReason.EXPIRED,
                            f"expired at {message.expires_at} before sending",
                            attempts=message.attempts,
                        )
                    )
                    continue
                if not message.transactional and await queue.is_opted_out(message.partner_id, message.phone):
                    # The ledger may have changed while the message waited for quiet hours or a retry.
                    detail = f"{message.phone} opted out before sending"
                    await queue.set_status(
                        message.message_id,
                        MessageStatus.FAILED,
                        due_at=None,
                        failure_reason=str(SmsFailureReason.OPTED_OUT),
                        failure_detail=detail,
                    )
                    outbox.append(
                        self.events.failed(
                            message,
                            claimed.correlation_id,
                            SmsFailureReason.OPTED_OUT,
                            detail,
                            attempts=message.attempts,
                        )
                    )
                    continue
                attempt = message.attempts + 1
                await queue.start_attempt(
                    message.message_id,
                    attempt,
                    self.provider.name,
                    now + timedelta(seconds=self.lease_s),
                    self.instance_id,
                )
                to_send.append((claimed, attempt))
            await enqueue(conn, outbox)
        # Committed: every attempt exists before its provider call starts.
        for claimed, attempt in to_send:
            message_id = claimed.message.message_id
            task = asyncio.create_task(self._send(claimed, attempt), name=f"send-{message_id}")
            self._in_flight[message_id] = task
            task.add_done_callback(functools.partial(self._done, message_id))
        return len(to_send)

    def _done(self, message_id: str, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(message_id, None)
        if not task.cancelled() and task.exception() is not None:
            # The attempt stays `sending`; its lease runs out and reconciliation settles it.
            log.error("send task of %s died: %r", message_id, task.exception())

    async def _send(self, claimed: Claimed, attempt: int) -> None:
        # Sending comes later than intake, in the dispatcher: the stored traceparent keeps it in the order's trace.
        parent = [("traceparent", claimed.trace_parent.encode())] if claimed.trace_parent else []
        with consume_span("notifier send", parent, {"message_id": claimed.message.message_id}):
            await self._send_in_span(claimed, attempt)

    async def _send_in_span(self, claimed: Claimed, attempt: int) -> None:
        sms = outgoing(claimed.message, self.default_sender)
        try:
            async with self.limiter:
                accepted = await self.provider.send(sms)
        except ProviderFailure as failure:
            SEND_ATTEMPTS.labels(self.provider.name, str(failure.kind)).inc()
            await self._durably(self._record_failure, claimed, attempt, failure)
        except Exception as exc:  # a provider bug or an unexpected error: the outcome is unknown
            log.exception("sending %s failed unexpectedly", sms.message_id)
            await self._durably(
                self._record_failure,
                claimed,
                attempt,
                ProviderFailure(FailureKind.TRANSIENT, f"{type(exc).__name__}: {exc}"),
            )
        else:
            SEND_ATTEMPTS.labels(self.provider.name, "accepted").inc()
            await self._durably(self._record_accepted, claimed, attempt, accepted, "accepted")

    async def _durably(self, record: Any, *args: Any) -> None:
        """Record an outcome, riding out a short database outage; if it stays away, the lease runs out
        and reconciliation settles the attempt with the provider instead."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)),
                wait=wait_random_exponential(multiplier=0.2, max=5),
                stop=stop_after_attempt(6),
                reraise=True,
            ):
                with attempt:
                    await record(*args)
        except (OSError, asyncpg.PostgresError) as exc:
            log.error("could not record the outcome of %s: %s; reconciliation will", args[0].message.message_id, exc)
        self.wake.set()

    async def _record_accepted(self, claimed: Claimed, attempt: int, accepted: Accepted, how: str) -> None:
        message = claimed.message
        provider = self.provider.name
        async with self.pool.acquire() as conn, conn.transaction():
            queue = DispatchQueue(conn)
            current = await queue.lock(message.message_id)
            if not _still_sending(current, attempt):
                log.warning(
                    "outcome of %s attempt %d arrived after reconciliation; ignored", message.message_id, attempt
                )
                return
            ids = list(accepted.provider_message_ids)
            await queue.lock_provider_ids(provider, ids)
            await queue.finish_attempt(message.message_id, attempt, how, None, ids)
            await queue.add_parts(provider, message.message_id, ids, accepted.per_segment)
            await queue.set_status(
                message.message_id, MessageStatus.DISPATCHED, lease_until=None, provider_message_id=ids[0]
            )
            outbox = [self.events.dispatched(message, claimed.correlation_id, provider, ids[0])]
            # Receipts may have come before this commit (fast handsets, slow databases): merge them now.
            outbox += await _merge(queue, self.events, claimed, MessageStatus.DISPATCHED, provider, ids[0])
            await enqueue(conn, outbox)

    async def _record_failure(self, claimed: Claimed, attempt: int, failure: ProviderFailure) -> None:
        message = claimed.message
        async with self.pool.acquire() as conn, conn.transaction():
            queue = DispatchQueue(conn)
            current = await queue.lock(message.message_id)
            if not _still_sending(current, attempt):
                return
            await queue.finish_attempt(message.message_id, attempt, "failed", failure.detail[:2000], None)
            decision = self.policy.decide(
                attempt=attempt,
                kind=failure.kind,
                detail=failure.detail,
                retry_after_s=failure.retry_after_s,
                now=_now(),
                expires_at=message.expires_at,
            )
            if isinstance(decision, GiveUp):
                await self._give_up(conn, queue, claimed, attempt, decision.reason, decision.detail)
            else:
                log.info("retrying %s at %s: %s", message.message_id, decision.at.isoformat(), failure.detail)
                await queue.set_status(message.message_id, MessageStatus.PENDING, due_at=decision.at, lease_until=None)

    async def _give_up(
        self,
        conn: DbConnection,
        queue: DispatchQueue,
        claimed: Claimed,
        attempts: int,
        reason: SmsFailureReason,
        detail: str,
    ) -> None:
        message = claimed.message
        status = MessageStatus.EXPIRED if reason is SmsFailureReason.EXPIRED else MessageStatus.FAILED
        await queue.set_status(
            message.message_id,
            status,
            due_at=None,
            lease_until=None,
            failure_reason=str(reason),
            failure_detail=detail[:2000],
        )
        await enqueue(
            conn,
            [
                self.events.failed(
                    message, claimed.correlation_id, reason, detail, provider=self.provider.name, attempts=attempts
                ),
                self.events.dead_letter(claimed, str(reason), detail),
            ],
        )

    async def reconcile(self) -> int:
        """Settle attempts whose process died between recording them and recording their outcome."""
        async with self.pool.acquire() as conn:
            orphans = await DispatchQueue(conn).orphaned(_now(), 100, list(self._in_flight), self.instance_id)
        for claimed in orphans:
            await self._reconcile_one(claimed)
        return len(orphans)

    async def _reconcile_one(self, claimed: Claimed) -> None:
        message = claimed.message
        sms = outgoing(message, self.default_sender)
        try:
            found: Accepted | None = await self.provider.lookup(sms)
            unknown = False
        except OutcomeUnknown:
            found, unknown = None, True
        attempt = message.attempts
        if found is not None:
            log.info("reconciled %s: the provider has it; not sending again", message.message_id)
            await self._record_accepted(claimed, attempt, found, "reconciled")
            return
        async with self.pool.acquire() as conn, conn.transaction():
            queue = DispatchQueue(conn)
            current = await queue.lock(message.message_id)
            if not _still_sending(current, attempt):
                return
            if not unknown or self.provider.resend_is_safe:
                # Never received, or the provider de-duplicates on the idempotency key: sending again is safe.
                why = "the provider never received it" if not unknown else "resent under the same idempotency key"
                await queue.finish_attempt(message.message_id, attempt, "unknown", f"reconciled: {why}", None)
                await queue.set_status(message.message_id, MessageStatus.PENDING, due_at=_now(), lease_until=None)
                log.info("reconciled %s: %s", message.message_id, why)
            else:
                detail = "outcome unknown after a crash and the provider cannot tell; not resent to avoid a duplicate"
                await queue.finish_attempt(message.message_id, attempt, "unknown", detail, None)
                await self._give_up(conn, queue, claimed, attempt, SmsFailureReason.PROVIDER_ERROR, detail)
        self.wake.set()


def _still_sending(current: Claimed | None, attempt: int) -> bool:
    """Whether `attempt` is still the open attempt: reconciliation may have settled it meanwhile."""
    return (
        current is not None and current.message.status is MessageStatus.SENDING and current.message.attempts == attempt
    )


async def _merge(
    queue: DispatchQueue, events: Events, claimed: Claimed, current: MessageStatus, provider: str, pid: str | None
) -> list[OutboxRecord]:
    """Fold the message's receipts into its status; the event of a forward move, if any."""
    message = claimed.message
    merged = merge_receipts(message.segments, await queue.receipts_of(message.message_id))
    if merged is None:
        return []
    new = advance(current, merged)
    if new == current:
        return []
    if new is MessageStatus.DELIVERED:
        await queue.set_status(message.message_id, new)
        return [events.delivered(message, claimed.correlation_id, provider, pid)]
    detail = "the provider reports a segment undeliverable"
    await queue.set_status(
        message.message_id, new, failure_reason=str(SmsFailureReason.UNDELIVERABLE), failure_detail=detail
    )
    return [
        events.failed(
            message,
            claimed.correlation_id,
            SmsFailureReason.UNDELIVERABLE,
            detail,
            provider=provider,
            pid=pid,
            attempts=message.attempts,
        )
    ]


@dataclass(frozen=True)
class Receipts:
    """Delivery reports from a provider: stored per segment, merged into the message's status."""

    pool: asyncpg.Pool
    events: Events

    async def apply(self, provider: str, reports: Sequence[DeliveryReport]) -> int:
        """Apply reports; returns how many matched a known message (the others wait for their dispatch)."""
        matched = 0
        async with self.pool.acquire() as conn, conn.transaction():
            queue = DispatchQueue(conn)
            outbox: list[OutboxRecord] = []
            await queue.lock_provider_ids(provider, [r.provider_message_id for r in reports])
            for report in reports:
                segment = report.segment if report.segment is not None else WHOLE_MESSAGE
                before = await queue.receipt_status(provider, report.provider_message_id, segment)
                after = advance_receipt(before, report.status)
                if after != before:
                    await queue.put_receipt(
                        provider, report.provider_message_id, segment, after, report.raw_status, report.occurred_at
                    )
                part = await queue.part(provider, report.provider_message_id)
                if part is None:
                    continue  # dispatch not recorded yet: merged when it is
                matched += 1
                claimed = await queue.lock(part[0])
                assert claimed is not None
                if claimed.message.status is MessageStatus.DISPATCHED:
                    outbox += await _merge(
                        queue,
                        self.events,
                        claimed,
                        MessageStatus.DISPATCHED,
                        provider,
                        claimed.message.provider_message_id,
                    )
            await enqueue(conn, outbox)
        return matched


@dataclass(frozen=True)
class OptOuts:
    """The consent ledger of one partner."""

    pool: asyncpg.Pool
    partner_id: str

    async def add(self, phone: str, source: str = "api") -> tuple[OptOut, bool]:
        phone = normalized_mobile(phone)
        async with self.pool.acquire() as conn:
            return await MessageRepository(conn, self.partner_id).opt_out(phone, source)

    async def remove(self, phone: str) -> None:
        phone = normalized_mobile(phone)
        async with self.pool.acquire() as conn:
            if not await MessageRepository(conn, self.partner_id).opt_in(phone):
                raise NotFound(phone)

    async def list(self, *, after: str | None, limit: int) -> list[OptOut]:
        async with self.pool.acquire() as conn:
            return await MessageRepository(conn, self.partner_id).opt_outs(after=after, limit=limit)


async def handle_inbound(pool: asyncpg.Pool, inbound: InboundSms) -> list[str]:
    """A reply from a handset: STOP / СТОП / ОТПИСКА opts the number out for every partner that messaged it.

    A reply names no partner; the partners whose messages it could be answering are those that sent
    to this number, and a customer who writes STOP means all of them. Returns those partners.
    """
    if not is_stop_request(inbound.text):
        return []
    try:
        phone = normalized_mobile(inbound.phone if inbound.phone.startswith("+") else f"+{inbound.phone}")
    except InvalidPhone:
        log.warning("ignoring a STOP from an unreadable number %r", inbound.phone)
        return []
    async with pool.acquire() as conn, conn.transaction():
        partners = await DispatchQueue(conn).partners_messaging(phone)
        for partner in partners:
            await MessageRepository(conn, partner).opt_out(phone, "inbound")
    log.info("inbound STOP from %s: opted out for %s", phone, partners)
    return partners


__all__ = ["Dispatcher", "Events", "Intake", "NotFound", "OptOuts", "Receipts", "Topics", "handle_inbound"]
