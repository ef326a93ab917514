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
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from contracts.envelope import Envelope, decode
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
    replay,
    replay_key,
    segment_count,
)
from notifier.domain import (
    Intake as IntakeDecision,
)
from notifier.limiter import SharedRateLimiter
from notifier.providers.base import (
    Accepted,
    DeliveryReport,
    InboundSms,
    OutcomeUnknown,
    OutgoingSms,
    Provider,
    ProviderFailure,
)
from notifier.repository import (
    OWNER_LOCK_CLASS,
    Claimed,
    DispatchQueue,
    FinishedAttempt,
    MessageRepository,
    NewMessage,
    StoredReceipt,
    insert_messages,
)
from servicekit.batching import GroupCommit
from servicekit.consumer import DeadLetters, Record, Rejected, dead_letter_headers, decode_batch
from servicekit.db import DbConnection
from servicekit.errors import NotFound
from servicekit.outbox import OutboxRecord, enqueue, record_for
from servicekit.tracing import consume_span, trace_headers

log = logging.getLogger(__name__)

SEND_ATTEMPTS = Counter("sms_send_attempts_total", "Provider calls by outcome", ["provider", "outcome"])
REPLAYS = Counter(
    "sms_replays_total",
    "Replayed SendSms commands of existing messages: accepted (a new round), refused (with the reason) or "
    "duplicate (that dead letter was replayed before)",
    ["outcome", "reason"],
)
REPLAY_HEADER = "replay-of"  # written by `make ops ARGS="dlq replay ..."`: <dlq topic>/<partition>/<offset>

SOURCE = "/services/notifier"
MESSAGE_NAMESPACE = uuid.UUID("6f1d8f0e-3b0a-4c55-9a57-2f6c2f3f8b11")
"""uuid5 namespace of message ids (and event ids): the same command always becomes the same message."""


def message_id_of(partner_id: str, send_sms_id: str) -> str:
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{partner_id}\n{send_sms_id}"))


def _now() -> datetime:
    return datetime.now(UTC)


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
        # A replay's round is a new story: its SmsFailed is not the first round's (consumers de-duplicate by id).
        name = f"{message.message_id}\n{data.EVENT_TYPE}"
        if message.replay_round:
            name += f"\nreplay {message.replay_round}"
        envelope = Envelope.wrap(
            data,
            source=SOURCE,
            partner_id=message.partner_id,
            event_id=str(uuid.uuid5(MESSAGE_NAMESPACE, name)),
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
    # When set, messages due now start their first attempt in the intake transaction and are sent right after
    # its commit: no second transaction, no wait for the dispatcher's next round.
    dispatcher: Dispatcher | None = None

    async def process(self, records: Sequence[Record]) -> None:
        commands, rejected = decode_batch(records, lambda record: decode(record.value or b"", SendSms))
        await self.dead_letters.publish(rejected)
        started: list[tuple[Claimed, int]] = []
        committed = False
        replays: list[tuple[str, str]] = []
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    created, due, replays = await self._record(conn, commands)
                    if self.dispatcher is not None:
                        started = await self.dispatcher.start_in(conn, due)
                committed = True
        finally:
            if self.dispatcher is not None:
                # Committed: the attempts exist before their provider calls (even if releasing the connection
                # failed afterwards). Otherwise the room they took is given back.
                (self.dispatcher.launch if committed else self.dispatcher.release)(started)
        for outcome, reason in replays:
            REPLAYS.labels(outcome, reason).inc()
        if len(started) < len(due):
            if self.dispatcher is not None:
                self.dispatcher.waiting()
            self.wake.set()
        elif any(m.status is MessageStatus.SCHEDULED for m in created.values()) or ("accepted", "") in replays:
            self.wake.set()  # a replay's new round waits for the dispatcher like a retry

    async def _record(
        self, conn: DbConnection, commands: list[tuple[Record, Envelope[SendSms]]]
    ) -> tuple[dict[str, Message], list[Claimed], list[tuple[str, str]]]:
        """Insert the new commands' messages and their immediate failures, and apply replays of existing ones;
        returns the new messages, those due now, and the replays' (outcome, reason)."""
        opted_out = await DispatchQueue(conn).opted_out((e.data.partner_id, e.data.phone) for _, e in commands)
        unique: dict[str, tuple[NewMessage, IntakeDecision]] = {}
        replayed: list[tuple[str, str, SendSms]] = []
        for record, envelope in commands:
            new, decision = self._decide(record, envelope, opted_out)
            unique.setdefault(new.message_id, (new, decision))  # the same command twice in a batch counts once
            if (replay_of := replay_of_header(record)) is not None:
                replayed.append((new.message_id, replay_of, envelope.data))
        decided = list(unique.values())
        created = await insert_messages(conn, [new for new, _ in decided])
        # A redelivered command inserts nothing: the first delivery's row and outcome stand.
        await enqueue(
            conn,
            [
                self.events.failed(created[new.message_id], new.correlation_id, decision.failure, decision.detail)
                for new, decision in decided
                if decision.failure is not None and new.message_id in created
            ],
        )
        due = [
            claimed_of(new, created[new.message_id])
            for new, _ in decided
            if new.message_id in created and created[new.message_id].status is MessageStatus.PENDING
        ]
        # A replay of a command never seen (or lost) was just taken in like any command; the others reach a row.
        replays = await self._replay(conn, [r for r in replayed if r[0] not in created])
        return created, due, replays

    @staticmethod
    async def _replay(conn: DbConnection, replayed: list[tuple[str, str, SendSms]]) -> list[tuple[str, str]]:
        """Replays from the dead-letter topic of commands whose message exists: a new round of attempts for a
        message that failed before any provider took it, when the command would be accepted today; otherwise
        refused, with the reason kept in `replays`. Each dead letter is accepted once. Replays are rare ops actions:
        a few statements each, not per batch."""
        queue = DispatchQueue(conn)
        outcomes: list[tuple[str, str]] = []
        for message_id, replay_of, command in replayed:
            claimed = (await queue.lock([message_id])).get(message_id)
            if claimed is None:
                continue
            message = claimed.message
            again = intake(
                phone=command.phone,
                expires_at=command.expires_at,
                not_before=command.not_before,
                opted_out=bool(await queue.opted_out([(command.partner_id, command.phone)])),
                transactional=command.transactional,
                sms_consent=command.sms_consent,
                now=_now(),
            )
            dispatched_before = message.provider_message_id is not None
            decision = replay(status=message.status, dispatched_before=dispatched_before, again=again)
            outcome = "refused" if decision.start is None else "accepted"
            if not await queue.record_replay(message_id, replay_of, outcome, decision.refused, decision.detail or None):
                log.info("replay %s of message %s was accepted before; ignored", replay_of, message_id)
                outcomes.append(("duplicate", ""))
                continue
            if decision.start is None:
                log.warning("replay %s of message %s refused: %s: %s", replay_of, message_id, decision.refused,
                            decision.detail)  # fmt: skip
                outcomes.append(("refused", decision.refused or ""))
                continue
            await queue.start_round(message_id, decision.start.status, decision.start.due_at)
            log.info("replay %s of message %s: round %d starts", replay_of, message_id, message.replay_round + 1)
            outcomes.append(("accepted", ""))
        return outcomes

    @staticmethod
    def _decide(
        record: Record, envelope: Envelope[SendSms], opted_out: set[tuple[str, str]]
    ) -> tuple[NewMessage, IntakeDecision]:
        command = envelope.data
        with consume_span("notifier intake", record.headers, {"send_sms_id": envelope.id}):
            decision = intake(
                phone=command.phone,
                expires_at=command.expires_at,
                not_before=command.not_before,
                opted_out=(command.partner_id, command.phone) in opted_out,
                transactional=command.transactional,
                sms_consent=command.sms_consent,
                now=_now(),
            )
            encoding = encoding_of(command.text)
            new = NewMessage(
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
        return new, decision


def replay_of_header(record: Record) -> str | None:
    """The dead letter a replayed record re-publishes (the last `replay-of`: a record dead-lettered by the
    consumer plumbing keeps its headers, so a replay of a replay carries two)."""
    values = [value for key, value in (record.headers or ()) if key == REPLAY_HEADER]
    return values[-1].decode(errors="replace") if values else None


def claimed_of(new: NewMessage, message: Message) -> Claimed:
    """A message just inserted, as the dispatcher sees it."""
    return Claimed(
        message,
        new.command,
        new.command_topic,
        new.command_partition,
        new.command_offset,
        new.correlation_id,
        new.trace_parent,
    )


def outgoing(message: Message, default_sender: str) -> OutgoingSms:
    return OutgoingSms(
        idempotency_key=replay_key(message.send_sms_id, message.replay_round),
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
    limiter: SharedRateLimiter
    wake: asyncio.Event
    default_sender: str = "Notifier"
    max_in_flight: int = 32
    lease_s: float = 300.0
    own_orphan_grace_s: float = 30.0
    poll_interval_s: float = 1.0
    _in_flight: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _reserved: int = 0  # room taken by attempts recorded in an intake transaction not yet committed
    # Due messages may wait in the queue: the last round filled every slot, or the intake had no room.
    _backlog: bool = False
    _live: bool = False  # holding the liveness lock: only then may attempts carry this instance's id
    # This instance's id; it holds the advisory lock (OWNER_LOCK_CLASS, instance_id) for as long as it lives.
    instance_id: int = field(default_factory=lambda: secrets.randbelow(2**31 - 1) + 1)

    def __post_init__(self) -> None:
        # Outcomes of concurrent sends are recorded together: one transaction per group, not per SMS.
        self._outcomes: GroupCommit[SendOutcome] = GroupCommit(self._record_outcomes)

    async def run(self) -> None:
        async with self.pool.acquire() as liveness:
            # Held while this dispatcher runs, and released by PostgreSQL with the connection if the process dies,
            # so another dispatcher can tell our unfinished attempts from those of a live instance.
            await liveness.execute("SELECT pg_advisory_lock($1, $2)", OWNER_LOCK_CLASS, self.instance_id)
            self._live = True
            try:
                await self._loop()
            finally:
                self._live = False  # first: intake launches nothing from now on
                tasks = list(self._in_flight.values())
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                # The pool does not reset sessions (servicekit.db): give the lock back with the connection.
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await liveness.execute("SELECT pg_advisory_unlock($1, $2)", OWNER_LOCK_CLASS, self.instance_id)

    async def _loop(self) -> None:
        reconcile_at = 0.0
        while True:
            try:
                if time.monotonic() >= reconcile_at:  # orphans come from dead instances: once per poll is enough
                    await self.reconcile()
                    reconcile_at = time.monotonic() + self.poll_interval_s
                started = await self.dispatch_due()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("dispatcher: %s: %s; retrying", type(exc).__name__, exc)
                started = 0
            except Exception:  # a bug must not stop every future send; it is logged and retried
                log.exception("dispatcher: unexpected error; retrying")
                started = 0
            if started == 0 or len(self._in_flight) >= self.max_in_flight:
                await self._sleep()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.poll_interval_s)
        self.wake.clear()

    async def dispatch_due(self) -> int:
        """Take due messages (as many as there are free slots), record their attempts, start the sends."""
        free = self._free()
        if free <= 0:
            return 0
        # The intake may take some of this room meanwhile: MAX_IN_FLIGHT is a soft cap (the provider's rate
        # limit is the hard one), and holding the room here would send new messages the slow way.
        to_send = await self._take_due(free)
        self._reserved += len(to_send)
        self.launch(to_send)  # committed: every attempt exists before its provider call starts
        return len(to_send)

    async def _take_due(self, free: int) -> list[tuple[Claimed, int]]:
        """Due messages for up to `free` slots: those expired or opted out meanwhile end, the others' attempts
        are recorded (committed on return)."""
        now = _now()
        async with self.pool.acquire() as conn, conn.transaction():
            queue = DispatchQueue(conn)
            due = await queue.due(now, free)
            self._backlog = len(due) == free  # there may be more: new messages wait their turn behind them
            opted_out = await queue.opted_out((c.message.partner_id, c.message.phone) for c in due)
            ended: list[tuple[Claimed, SmsFailureReason, str]] = []
            to_send: list[tuple[Claimed, int]] = []
            for claimed in due:
                message = claimed.message
                if now >= message.expires_at:
                    ended.append((claimed, SmsFailureReason.EXPIRED, f"expired at {message.expires_at} before sending"))
                elif (message.partner_id, message.phone) in opted_out:
                    # The ledger may have changed while the message waited for quiet hours or a retry; an
                    # opt-out stops every message, transactional ones too (docs/notifier.md, consent).
                    ended.append((claimed, SmsFailureReason.OPTED_OUT, f"{message.phone} opted out before sending"))
                else:
                    to_send.append((claimed, message.attempts + 1))
            await queue.end([(c.message.message_id, _ending(reason), str(reason), why) for c, reason, why in ended])
            await queue.start_attempts(
                [(c.message.message_id, attempt) for c, attempt in to_send],
                self.provider.name,
                now + timedelta(seconds=self.lease_s),
                self.instance_id,
            )
            await enqueue(
                conn,
                [
                    self.events.failed(c.message, c.correlation_id, reason, why, attempts=c.message.attempts)
                    for c, reason, why in ended
                ],
            )
        return to_send

    def _free(self) -> int:
        return self.max_in_flight - len(self._in_flight) - self._reserved

    async def start_in(self, conn: DbConnection, due: Sequence[Claimed]) -> list[tuple[Claimed, int]]:
        """Record the first attempts of messages just taken in (in the caller's transaction), as many as there
        is room for and only when no older message waits its turn; `launch` them once that committed."""
        if not self._live or self._backlog or not due:
            return []
        taken = [(claimed, claimed.message.attempts + 1) for claimed in due[: max(self._free(), 0)]]
        self._reserved += len(taken)
        try:
            await DispatchQueue(conn).start_attempts(
                [(c.message.message_id, attempt) for c, attempt in taken],
                self.provider.name,
                _now() + timedelta(seconds=self.lease_s),
                self.instance_id,
            )
        except BaseException:
            self.release(taken)
            raise
        return taken

    def waiting(self) -> None:
        """Due messages wait in the queue: take them in order, as slots free up."""
        self._backlog = True

    def release(self, taken: Sequence[tuple[Claimed, int]]) -> None:
        """Give back the room `start_in` took, for attempts whose transaction did not commit."""
        self._reserved -= len(taken)

    def launch(self, started: Sequence[tuple[Claimed, int]]) -> None:
        """Start the sends of committed attempts (after the dispatcher stopped, they are left to reconciliation)."""
        self._reserved -= len(started)
        if not self._live:
            return
        for claimed, attempt in started:
            message_id = claimed.message.message_id
            task = asyncio.create_task(self._send(claimed, attempt), name=f"send-{message_id}")
            self._in_flight[message_id] = task
            task.add_done_callback(functools.partial(self._done, message_id))

    def _done(self, message_id: str, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(message_id, None)
        if self._backlog:
            self.wake.set()  # a slot is free (now, not before) and messages wait for one
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
            await self._durably(SendOutcome(claimed, attempt, failure=failure))
        except Exception as exc:  # a provider bug or an unexpected error: the outcome is unknown
            log.exception("sending %s failed unexpectedly", sms.message_id)
            unknown = ProviderFailure(FailureKind.TRANSIENT, f"{type(exc).__name__}: {exc}")
            await self._durably(SendOutcome(claimed, attempt, failure=unknown))
        else:
            SEND_ATTEMPTS.labels(self.provider.name, "accepted").inc()
            await self._durably(SendOutcome(claimed, attempt, accepted=accepted))

    async def _durably(self, outcome: SendOutcome) -> None:
        """Record an outcome, with those of concurrent sends (one transaction for all); should the database stay
        away, the attempt stays `sending`, its lease runs out and reconciliation settles it."""
        try:
            await self._outcomes.submit(outcome)
        except (OSError, asyncpg.PostgresError) as exc:
            log.error("could not record the outcome of %s: %s; reconciliation will", outcome.message_id, exc)

    async def _record_outcomes(self, outcomes: Sequence[SendOutcome]) -> None:
        """Record a group of outcomes, riding out a short database outage (one retry loop per group)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RECORDING_RETRIED),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=stop_after_attempt(6),
            reraise=True,
        ):
            with attempt:
                await self._record_group(outcomes)

    async def _record_group(self, outcomes: Sequence[SendOutcome]) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._record_in(conn, outcomes)
        except asyncpg.PostgresError as exc:
            if len(outcomes) == 1 or isinstance(exc, RECORDING_RETRIED):
                raise
            # One outcome the database refuses must not hold back the others: each on its own, once.
            log.warning("recording %d outcomes failed (%s); recording them one by one", len(outcomes), exc)
            for outcome in outcomes:
                try:
                    async with self.pool.acquire() as conn, conn.transaction():
                        await self._record_in(conn, [outcome])
                except asyncpg.PostgresError:
                    log.exception("could not record the outcome of %s; reconciliation will", outcome.message_id)

    async def _record_in(self, conn: DbConnection, outcomes: Sequence[SendOutcome]) -> None:
        queue = DispatchQueue(conn)
        current = await queue.lock([o.message_id for o in outcomes])
        live = []
        for outcome in outcomes:
            if _still_sending(current.get(outcome.message_id), outcome.attempt):
                live.append(outcome)
            else:
                log.warning("outcome of %s attempt %d arrived after reconciliation; ignored", *outcome.what)
        accepted = [(o, o.accepted) for o in live if o.accepted is not None]
        outbox = await self._accepted(queue, accepted) if accepted else []
        for outcome in live:
            if outcome.failure is not None:
                outbox += await self._failed(queue, outcome.claimed, outcome.attempt, outcome.failure)
        await enqueue(conn, outbox)

    async def _accepted(self, queue: DispatchQueue, accepted: list[tuple[SendOutcome, Accepted]]) -> list[OutboxRecord]:
        provider = self.provider.name
        await queue.lock_provider_ids(provider, (pid for _, a in accepted for pid in a.provider_message_ids))
        await queue.finish_attempts(
            [FinishedAttempt(o.message_id, o.attempt, o.how, None, list(a.provider_message_ids)) for o, a in accepted]
        )
        await queue.add_parts(
            provider, [(o.message_id, list(a.provider_message_ids), a.per_segment) for o, a in accepted]
        )
        await queue.mark_dispatched([(o.message_id, a.provider_message_ids[0]) for o, a in accepted])
        outbox = [
            self.events.dispatched(o.claimed.message, o.claimed.correlation_id, provider, a.provider_message_ids[0])
            for o, a in accepted
        ]
        # Receipts may have come before this commit (fast handsets, slow databases): merge them now.
        dispatched = [(o.claimed, a.provider_message_ids[0]) for o, a in accepted]
        return outbox + await _settle_receipts(queue, self.events, provider, dispatched)

    async def _failed(
        self, queue: DispatchQueue, claimed: Claimed, attempt: int, failure: ProviderFailure
    ) -> list[OutboxRecord]:
        message = claimed.message
        await queue.finish_attempts([FinishedAttempt(message.message_id, attempt, "failed", failure.detail[:2000])])
        decision = self.policy.decide(
            attempt=attempt - claimed.attempts_before_round,  # a replay's round has a retry budget of its own
            kind=failure.kind,
            detail=failure.detail,
            retry_after_s=failure.retry_after_s,
            now=_now(),
            expires_at=message.expires_at,
        )
        if isinstance(decision, GiveUp):
            return await self._give_up(queue, claimed, attempt, decision.reason, decision.detail)
        log.info("retrying %s at %s: %s", message.message_id, decision.at.isoformat(), failure.detail)
        await queue.reschedule(message.message_id, decision.at)
        return []

    async def _give_up(
        self, queue: DispatchQueue, claimed: Claimed, attempts: int, reason: SmsFailureReason, detail: str
    ) -> list[OutboxRecord]:
        message = claimed.message
        await queue.end([(message.message_id, _ending(reason), str(reason), detail[:2000])])
        return [
            self.events.failed(
                message, claimed.correlation_id, reason, detail, provider=self.provider.name, attempts=attempts
            ),
            self.events.dead_letter(claimed, str(reason), detail),
        ]

    async def reconcile(self) -> int:
        """Settle attempts whose process died between recording them and recording their outcome, and our own
        whose outcome could not be recorded (they are no longer among our sends)."""
        now = _now()
        own_before = now - timedelta(seconds=self.own_orphan_grace_s)
        async with self.pool.acquire() as conn:
            orphans = await DispatchQueue(conn).orphaned(now, 100, list(self._in_flight), self.instance_id, own_before)
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
            await self._record_outcomes([SendOutcome(claimed, attempt, accepted=found, how="reconciled")])
            return
        async with self.pool.acquire() as conn, conn.transaction():
            queue = DispatchQueue(conn)
            current = await queue.lock([message.message_id])
            if not _still_sending(current.get(message.message_id), attempt):
                return
            if not unknown or self.provider.resend_is_safe:
                # Never received, or the provider de-duplicates on the idempotency key: sending again is safe.
                why = "the provider never received it" if not unknown else "resent under the same idempotency key"
                await queue.finish_attempts(
                    [FinishedAttempt(message.message_id, attempt, "unknown", f"reconciled: {why}")]
                )
                await queue.reschedule(message.message_id, _now())
                log.info("reconciled %s: %s", message.message_id, why)
            else:
                detail = "outcome unknown after a crash and the provider cannot tell; not resent to avoid a duplicate"
                await queue.finish_attempts([FinishedAttempt(message.message_id, attempt, "unknown", detail)])
                outbox = await self._give_up(queue, claimed, attempt, SmsFailureReason.PROVIDER_ERROR, detail)
                await enqueue(conn, outbox)
        self.wake.set()


@dataclass(frozen=True)
class SendOutcome:
    """What one provider call came to: accepted (with the provider's ids) or a failure."""

    claimed: Claimed
    attempt: int
    accepted: Accepted | None = None
    failure: ProviderFailure | None = None
    how: str = "accepted"  # or "reconciled": found at the provider after a crash

    @property
    def message_id(self) -> str:
        return self.claimed.message.message_id

    @property
    def what(self) -> tuple[str, int]:
        return self.message_id, self.attempt


# Worth trying again: the database was away, or two transactions met in a deadlock (PostgreSQL undid one).
RECORDING_RETRIED = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
)


def _still_sending(current: Claimed | None, attempt: int) -> bool:
    """Whether `attempt` is still the open attempt: reconciliation may have settled it meanwhile."""
    return (
        current is not None and current.message.status is MessageStatus.SENDING and current.message.attempts == attempt
    )


def _ending(reason: SmsFailureReason) -> MessageStatus:
    return MessageStatus.EXPIRED if reason is SmsFailureReason.EXPIRED else MessageStatus.FAILED


async def _settle_receipts(
    queue: DispatchQueue, events: Events, provider: str, dispatched: Sequence[tuple[Claimed, str | None]]
) -> list[OutboxRecord]:
    """Fold each dispatched message's receipts into its status; the events of the forward moves."""
    receipts = await queue.receipts_of([claimed.message.message_id for claimed, _ in dispatched])
    ended: list[tuple[str, MessageStatus, str | None, str | None]] = []
    outbox: list[OutboxRecord] = []
    for claimed, pid in dispatched:
        message = claimed.message
        merged = merge_receipts(message.segments, receipts.get(message.message_id, {}))
        new = advance(MessageStatus.DISPATCHED, merged) if merged is not None else MessageStatus.DISPATCHED
        if new is MessageStatus.DELIVERED:
            ended.append((message.message_id, new, None, None))
            outbox.append(events.delivered(message, claimed.correlation_id, provider, pid))
        elif new is not MessageStatus.DISPATCHED:
            detail = "the provider reports a segment undeliverable"
            ended.append((message.message_id, new, str(SmsFailureReason.UNDELIVERABLE), detail))
            outbox.append(
                events.failed(
                    message,
                    claimed.correlation_id,
                    SmsFailureReason.UNDELIVERABLE,
                    detail,
                    provider=provider,
                    pid=pid,
                    attempts=message.attempts,
                )
            )
    await queue.end(ended)
    return outbox


@dataclass(frozen=True)
class Receipts:
    """Delivery reports from a provider: stored per segment, merged into the message's status."""

    pool: asyncpg.Pool
    events: Events

    async def apply(self, provider: str, reports: Sequence[DeliveryReport]) -> int:
        """Apply reports; returns how many matched a known message (the others wait for their dispatch)."""
        # A deadlock with an outcome being recorded (rare: it needs a stale outcome) is undone by PostgreSQL
        # and tried again; the reports are not lost.
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(asyncpg.DeadlockDetectedError), stop=stop_after_attempt(3), reraise=True
        )
        return await retrying(self._apply, provider, reports)

    async def _apply(self, provider: str, reports: Sequence[DeliveryReport]) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            queue = DispatchQueue(conn)
            await queue.lock_provider_ids(provider, (r.provider_message_id for r in reports))
            await queue.put_receipts(provider, await self._advanced(queue, provider, reports))
            parts = await queue.parts(provider, (r.provider_message_id for r in reports))
            locked = await queue.lock(sorted(set(parts.values())))
            dispatched = [
                (claimed, claimed.message.provider_message_id)
                for claimed in locked.values()
                if claimed.message.status is MessageStatus.DISPATCHED
            ]
            await enqueue(conn, await _settle_receipts(queue, self.events, provider, dispatched))
        return sum(1 for r in reports if r.provider_message_id in parts)

    @staticmethod
    async def _advanced(queue: DispatchQueue, provider: str, reports: Sequence[DeliveryReport]) -> list[StoredReceipt]:
        """The receipts the reports move forward (in report order: a later report of a segment wins)."""

        def key(report: DeliveryReport) -> tuple[str, int]:
            return report.provider_message_id, report.segment if report.segment is not None else WHOLE_MESSAGE

        stored = await queue.receipt_statuses(provider, map(key, reports))
        changed: dict[tuple[str, int], StoredReceipt] = {}
        for report in reports:
            pid, segment = key(report)
            after = advance_receipt(stored.get((pid, segment)), report.status)
            if after != stored.get((pid, segment)):
                stored[(pid, segment)] = after
                changed[(pid, segment)] = StoredReceipt(pid, segment, after, report.raw_status, report.occurred_at)
        return list(changed.values())


@dataclass
class Sending:
    """What the notifier's start-up builds and its routes and shutdown need (`servicekit.app.parts_of`)."""

    provider: Provider
    receipts: Receipts
    dispatcher: Dispatcher
    intake: Intake
    dispatcher_task: asyncio.Task[None] | None = None


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
                raise NotFound(f"'{phone}' is not opted out")

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


__all__ = ["Dispatcher", "Events", "Intake", "OptOuts", "Receipts", "Topics", "handle_inbound"]
