"""Kafka input of the notifier: `SendSms` commands on `notifier.send-sms.v1`.

Exactly once at intake (see docs/notifier.md): a command's row is keyed by (partner, send_sms_id) and inserted
with ON CONFLICT DO NOTHING, in the same transaction as its immediate outcome; a redelivered command is a no-op.
A command due now may start its first attempt in that same transaction (`Dispatcher.start_in`). A command
replayed from the dead-letter topic (`replay-of` header) of a message that exists starts a new round, or is
refused with the reason kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from prometheus_client import Counter

from contracts.envelope import Envelope, decode
from contracts.sms import SendSms
from notifier.dispatcher import Dispatcher
from notifier.domain import Intake as IntakeDecision
from notifier.domain import Message, MessageStatus, encoding_of, intake, replay, segment_count
from notifier.events import Events, message_id_of
from notifier.repository import Claimed, DispatchQueue, NewMessage, insert_messages
from servicekit.consumer import DeadLetters, Record, decode_batch
from servicekit.db import DbConnection
from servicekit.outbox import UnitOfWork, unit_of_work
from servicekit.tracing import consume_span, trace_headers

log = logging.getLogger(__name__)

REPLAYS = Counter(
    "sms_replays_total",
    "Replayed SendSms commands of existing messages: accepted (a new round), refused (with the reason) or "
    "duplicate (that dead letter was replayed before)",
    ["outcome", "reason"],
)
REPLAY_HEADER = "replay-of"  # written by `make ops ARGS="dlq replay ..."`: <dlq topic>/<partition>/<offset>


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
        work: UnitOfWork | None = None
        replays: list[tuple[str, str]] = []
        try:
            async with unit_of_work(self.pool) as work:
                created, due, replays = await self._record(work, commands)
                if self.dispatcher is not None:
                    started = await self.dispatcher.start_in(work.conn, due)
        finally:
            if self.dispatcher is not None:
                # Committed: the attempts exist before their provider calls (even if releasing the connection
                # failed afterwards). Otherwise the room they took is given back.
                committed = work is not None and work.committed
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
        self, work: UnitOfWork, commands: list[tuple[Record, Envelope[SendSms]]]
    ) -> tuple[dict[str, Message], list[Claimed], list[tuple[str, str]]]:
        """Insert the new commands' messages and their immediate failures, and apply replays of existing ones;
        returns the new messages, those due now, and the replays' (outcome, reason)."""
        conn = work.conn
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
        work.add(
            self.events.failed(created[new.message_id], new.correlation_id, decision.failure, decision.detail)
            for new, decision in decided
            if decision.failure is not None and new.message_id in created
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
                now=datetime.now(UTC),
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
                now=datetime.now(UTC),
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
                is_test=command.is_test,
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
