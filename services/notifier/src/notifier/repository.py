"""Messages, attempts, receipts and opt-outs in PostgreSQL.

`MessageRepository` serves one partner: every query is scoped by partner id. `DispatchQueue` is the
dispatcher's view across partners (due messages, orphaned attempts, provider ids from delivery
reports); it is never reachable from a partner's request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from notifier.domain import (
    WHOLE_MESSAGE,
    Attempt,
    Message,
    MessageStatus,
    OptOut,
    Receipt,
    ReceiptStatus,
    ReplayRecord,
    advance_receipt,
)
from servicekit.db import DbConnection, as_columns, probe_per_key
from servicekit.retention import Purge, batch_delete, counted

MESSAGE_COLUMNS = (
    "message_id::text, send_sms_id, partner_id, campaign_id, order_id, customer_id, phone, text, sender, "
    "transactional, encoding, segments, status, failure_reason, failure_detail, provider, provider_message_id, "
    "attempts, replay_round, requested_at, expires_at, not_before, due_at, created_at, updated_at, is_test"
)


def _json_list(values: list[str] | None) -> str | None:
    """A text list as one JSON text, to pass lists of lists through `unnest` (arrays there must be regular)."""
    return None if values is None else json.dumps(values)


def _message(row: asyncpg.Record | None) -> Message:
    assert row is not None, "the row was locked or written in this transaction"
    return Message.model_validate(dict(row))


@dataclass(frozen=True)
class NewMessage:
    message_id: str
    partner_id: str
    send_sms_id: str
    campaign_id: str
    order_id: str
    customer_id: str
    phone: str
    text: str
    sender: str | None
    transactional: bool
    encoding: str
    segments: int
    status: MessageStatus
    failure_reason: str | None
    failure_detail: str | None
    requested_at: datetime
    expires_at: datetime
    not_before: datetime | None
    due_at: datetime | None
    correlation_id: str | None
    command: bytes
    command_topic: str | None
    command_partition: int | None
    command_offset: int | None
    trace_parent: str | None = None
    is_test: bool = False


# The columns a new message sets, with their types for the arrays `insert_messages` unnests.
NEW_MESSAGE_COLUMNS = {
    "message_id": "uuid", "partner_id": "text", "send_sms_id": "text", "campaign_id": "text", "order_id": "text",
    "customer_id": "text", "phone": "text", "text": "text", "sender": "text", "transactional": "boolean",
    "encoding": "text", "segments": "integer", "status": "text", "failure_reason": "text", "failure_detail": "text",
    "requested_at": "timestamptz", "expires_at": "timestamptz", "not_before": "timestamptz", "due_at": "timestamptz",
    "correlation_id": "text", "command": "bytea", "command_topic": "text", "command_partition": "integer",
    "command_offset": "bigint", "trace_parent": "text", "is_test": "boolean",
}  # fmt: skip
INSERT_MESSAGES = (
    f"INSERT INTO messages ({', '.join(NEW_MESSAGE_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(NEW_MESSAGE_COLUMNS.values(), start=1))
    + f") ON CONFLICT (partner_id, send_sms_id) DO NOTHING RETURNING {MESSAGE_COLUMNS}"
)


async def insert_messages(conn: DbConnection, new: Sequence[NewMessage]) -> dict[str, Message]:
    """Insert new commands' messages in one statement; returns those inserted by message id (a partner's
    send_sms_id seen before inserts nothing: it is a redelivery)."""
    if not new:
        return {}
    columns = [[getattr(n, name) for n in new] for name in NEW_MESSAGE_COLUMNS]
    rows = await conn.fetch(INSERT_MESSAGES, *columns)
    return {message.message_id: message for message in map(_message, rows)}


@dataclass(frozen=True)
class MessageFilter:
    order_id: str | None = None
    phone: str | None = None
    campaign_id: str | None = None
    status: MessageStatus | None = None
    is_test: bool | None = None  # True: only test sends; False: none of them; None: all


class MessageRepository:
    def __init__(self, conn: DbConnection, partner_id: str) -> None:
        self._conn = conn
        self._partner_id = partner_id

    async def get(self, message_id: str) -> Message | None:
        try:
            row = await self._conn.fetchrow(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE partner_id = $1 AND message_id = $2::uuid",
                self._partner_id,
                message_id,
            )
        except asyncpg.DataError:  # not a uuid: no such message
            return None
        return _message(row) if row else None

    async def page(self, where: MessageFilter, *, after: uuid.UUID | None, limit: int) -> list[Message]:
        """Newest first, after the partner's message `after` (the last of the previous page). Its number (`seq`, a
        count over every partner) stays in here: a cursor names the message, never how many all partners sent.
        Should that message be gone (retention), so are the older ones: the page is empty."""
        rows = await self._conn.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE partner_id = $1 "
            "AND ($2::text IS NULL OR order_id = $2) AND ($3::text IS NULL OR phone = $3) "
            "AND ($4::text IS NULL OR campaign_id = $4) AND ($5::text IS NULL OR status = $5) "
            "AND ($9::boolean IS NULL OR is_test = $9) "
            "AND seq < COALESCE((SELECT seq FROM messages WHERE partner_id = $1 AND message_id = $6), $7) "
            "ORDER BY seq DESC LIMIT $8",
            self._partner_id,
            where.order_id,
            where.phone,
            where.campaign_id,
            str(where.status) if where.status else None,
            after,
            2**62 if after is None else 0,  # no cursor: from the newest; a cursor whose message is gone: nothing
            limit,
            where.is_test,
        )
        return [_message(row) for row in rows]

    async def lock_test_sends_of(self, actor: str) -> None:
        """Test sends of one actor, one at a time on every instance (until the transaction ends): each counts
        the ones committed before it."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(10) || $2, 7302))", self._partner_id, actor
        )

    async def test_sends_since(self, actor: str, since: datetime) -> list[datetime]:
        """When the actor's test sends since `since` were made, oldest first."""
        rows = await self._conn.fetch(
            "SELECT sent_at FROM test_sends WHERE partner_id = $1 AND actor = $2 AND sent_at > $3 ORDER BY sent_at",
            self._partner_id,
            actor,
            since,
        )
        return [row["sent_at"] for row in rows]

    async def record_test_send(self, actor: str, message_id: str, sent_at: datetime) -> None:
        await self._conn.execute(
            "INSERT INTO test_sends (partner_id, actor, message_id, sent_at) VALUES ($1, $2, $3::uuid, $4)",
            self._partner_id,
            actor,
            message_id,
            sent_at,
        )

    async def attempts(self, message_id: str) -> list[Attempt]:
        rows = await self._conn.fetch(
            "SELECT a.attempt, a.provider, a.status, a.detail, a.provider_message_ids, a.started_at, a.finished_at "
            "FROM attempts a JOIN messages m USING (message_id) "
            "WHERE m.partner_id = $1 AND a.message_id = $2::uuid ORDER BY a.attempt",
            self._partner_id,
            message_id,
        )
        return [Attempt.model_validate(dict(r)) for r in rows]

    async def receipts(self, message_id: str) -> list[Receipt]:
        rows = await self._conn.fetch(
            "SELECT r.provider, r.provider_message_id, r.segment, r.status, r.raw_status, r.occurred_at, "
            "r.received_at, r.updated_at FROM receipts r "
            "JOIN message_parts p USING (provider, provider_message_id) JOIN messages m USING (message_id) "
            "WHERE m.partner_id = $1 AND p.message_id = $2::uuid ORDER BY r.provider_message_id, r.segment",
            self._partner_id,
            message_id,
        )
        return [Receipt.model_validate(dict(r)) for r in rows]

    async def replays(self, message_id: str) -> list[ReplayRecord]:
        rows = await self._conn.fetch(
            "SELECT r.replay_of, r.outcome, r.reason, r.detail, r.replayed_at FROM replays r "
            "JOIN messages m USING (message_id) WHERE m.partner_id = $1 AND r.message_id = $2::uuid "
            "ORDER BY r.replayed_at",
            self._partner_id,
            message_id,
        )
        return [ReplayRecord.model_validate(dict(r)) for r in rows]

    async def opt_out(self, phone: str, source: str) -> tuple[OptOut, bool]:
        """Record an opt-out; returns it and whether it is new.

        The entry that kept the insert out may be removed (an opt-in) before it is read: then insert again, until
        one of the two statements finds a row."""
        while True:
            row = await self._conn.fetchrow(
                "INSERT INTO opt_outs (partner_id, phone, source) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING "
                "RETURNING phone, source, created_at",
                self._partner_id,
                phone,
                source,
            )
            if row is not None:
                return OptOut.model_validate(dict(row)), True
            existing = await self._conn.fetchrow(
                "SELECT phone, source, created_at FROM opt_outs WHERE partner_id = $1 AND phone = $2",
                self._partner_id,
                phone,
            )
            if existing is not None:
                return OptOut.model_validate(dict(existing)), False

    async def opt_in(self, phone: str) -> bool:
        status = await self._conn.execute(
            "DELETE FROM opt_outs WHERE partner_id = $1 AND phone = $2", self._partner_id, phone
        )
        return status != "DELETE 0"

    async def opt_outs(self, *, after: str | None, limit: int) -> list[OptOut]:
        rows = await self._conn.fetch(
            "SELECT phone, source, created_at FROM opt_outs WHERE partner_id = $1 AND phone > $2 "
            "ORDER BY phone LIMIT $3",
            self._partner_id,
            after or "",
            limit,
        )
        return [OptOut.model_validate(dict(r)) for r in rows]


@dataclass(frozen=True)
class FinishedAttempt:
    message_id: str
    attempt: int
    status: str  # accepted, reconciled, failed, unknown
    detail: str | None = None
    provider_message_ids: list[str] | None = None


@dataclass(frozen=True)
class StoredReceipt:
    provider_message_id: str
    segment: int
    status: ReceiptStatus
    raw_status: str
    occurred_at: datetime | None


@dataclass(frozen=True)
class Claimed:
    """A message taken by the dispatcher, with what it needs to send and to record the outcome."""

    message: Message
    command: bytes
    command_topic: str | None
    command_partition: int | None
    command_offset: int | None
    correlation_id: str | None
    trace_parent: str | None = None
    attempts_before_round: int = 0  # attempts of earlier rounds (before the latest accepted replay)


CLAIM_COLUMNS = (
    f"{MESSAGE_COLUMNS}, command, command_topic, command_partition, command_offset, correlation_id, trace_parent, "
    "attempts_before_round"
)


# The messages $1 (uuid[]), locked in the array's order: an index probe per message in every plan (with
# `message_id = ANY($1)` the plan cached while the table was small scanned it whole; `probe_per_key`).
LOCK_MESSAGES = "SELECT m.* FROM unnest($1::uuid[]) AS k(id) " + probe_per_key(
    f"SELECT {CLAIM_COLUMNS} FROM messages WHERE message_id = k.id", "m", "FOR UPDATE"
)


def _claimed(row: asyncpg.Record) -> Claimed:
    values = dict(row)
    extra = {k: values.pop(k) for k in ("command", "command_topic", "command_partition", "command_offset")}
    correlation_id, trace_parent = values.pop("correlation_id"), values.pop("trace_parent")
    attempts_before_round = values.pop("attempts_before_round")
    return Claimed(
        Message.model_validate(values),
        bytes(extra["command"]),
        extra["command_topic"],
        extra["command_partition"],
        extra["command_offset"],
        correlation_id,
        trace_parent,
        attempts_before_round,
    )


@dataclass(frozen=True)
class Dispatched:
    """A send the provider accepted: its attempt, how it was found out (accepted, reconciled), the provider's ids
    (one per segment when `per_segment`)."""

    message_id: str
    attempt: int
    how: str
    provider_message_ids: Sequence[str]
    per_segment: bool = False


def receipt_of_part(whole: str) -> str:
    """The columns of a receipt `r` of a message part `p`: the message, the segment it stands for (its own, or the
    part's for a per-segment id; `whole` is the parameter holding WHOLE_MESSAGE), its status."""
    return (
        f"p.message_id::text AS message_id, "
        f"CASE WHEN r.segment <> {whole} THEN r.segment ELSE coalesce(p.segment, {whole}) END AS segment, r.status"
    )


# The lookups by a batch of keys probe an index per key in every plan (`probe_per_key` says why).
PART_RECEIPTS = probe_per_key(  # the receipts `r` of a part `p`
    "SELECT segment, status FROM receipts WHERE provider = p.provider AND provider_message_id = p.provider_message_id",
    "r",
)
OPTED_OUT = "SELECT o.partner_id, o.phone FROM unnest($1::text[], $2::text[]) AS k(p, ph) " + probe_per_key(
    "SELECT partner_id, phone FROM opt_outs WHERE partner_id = k.p AND phone = k.ph", "o"
)  # $1 partners, $2 phones
PARTS = "SELECT p.provider_message_id, p.message_id::text FROM unnest($2::text[]) AS k(pid) " + probe_per_key(
    "SELECT provider_message_id, message_id FROM message_parts WHERE provider = $1 AND provider_message_id = k.pid", "p"
)  # $1 provider, $2 provider ids
RECEIPT_STATUSES = (  # $1 provider, $2 provider ids, $3 segments; locked in the keys' order
    "SELECT r.provider_message_id, r.segment, r.status FROM unnest($2::text[], $3::int[]) AS k(pid, segment) "
    + probe_per_key(
        "SELECT provider_message_id, segment, status FROM receipts "
        "WHERE provider = $1 AND provider_message_id = k.pid AND segment = k.segment",
        "r",
        "FOR UPDATE",
    )
)


def parts_of_messages(messages: str) -> str:
    """The parts of the messages in the parameter `messages` (a uuid[])."""
    return f"SELECT p.* FROM unnest({messages}::uuid[]) AS m(id) " + probe_per_key(
        "SELECT provider, provider_message_id, message_id, segment FROM message_parts WHERE message_id = m.id", "p"
    )


RECEIPTS_OF = (  # $1 messages, $2 the whole-message segment
    f"SELECT {receipt_of_part('$2')} FROM ({parts_of_messages('$1')}) AS p {PART_RECEIPTS}"
)

# `DispatchQueue.dispatch`: $1 provider; attempts ($2 message, $3 attempt, $4 how, $5 ids as JSON); parts ($6 provider
# id, $7 message, $8 segment); dispatched ($9 message, $10 first provider id); $11 the whole-message segment. The
# receipts are read over the message's parts after the insert: the stored ones, and the new ones not stored yet.
DISPATCH = (
    "WITH finished AS (UPDATE attempts a SET status = f.status, detail = NULL, finished_at = now(), "
    "provider_message_ids = ARRAY(SELECT jsonb_array_elements_text(f.ids::jsonb)) "
    "FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[]) AS f(message_id, attempt, status, ids) "
    "WHERE a.message_id = f.message_id AND a.attempt = f.attempt), "
    "new_parts AS (SELECT * FROM unnest($6::text[], $7::uuid[], $8::int[]) AS n(provider_message_id, message_id, "
    "segment)), "
    "parts_added AS (INSERT INTO message_parts (provider, provider_message_id, message_id, segment) "
    "SELECT $1, provider_message_id, message_id, segment FROM new_parts ON CONFLICT DO NOTHING), "
    "marked AS (UPDATE messages m SET status = 'dispatched', lease_until = NULL, provider_message_id = d.pid, "
    "updated_at = now() FROM unnest($9::uuid[], $10::text[]) AS d(message_id, pid) "
    "WHERE m.message_id = d.message_id) "
    f"SELECT {receipt_of_part('$11')} FROM ("
    f"{parts_of_messages('$9')} "
    "UNION ALL SELECT $1, n.provider_message_id, n.message_id, n.segment FROM new_parts n WHERE NOT EXISTS "
    # OFFSET 0 keeps NOT EXISTS a probe per new part (as a join, the plan hashed every part of the provider)
    "(SELECT 1 FROM message_parts e WHERE e.provider = $1 AND e.provider_message_id = n.provider_message_id OFFSET 0)"
    f") AS p {PART_RECEIPTS}"
)


def _merged_receipts(rows: Iterable[asyncpg.Record]) -> dict[str, dict[int, ReceiptStatus]]:
    """Message id -> segment -> the furthest receipt status of the rows (`receipt_of_part`)."""
    merged: dict[str, dict[int, ReceiptStatus]] = {}
    for row in rows:
        of_message = merged.setdefault(row["message_id"], {})
        of_message[row["segment"]] = advance_receipt(of_message.get(row["segment"]), ReceiptStatus(row["status"]))
    return merged


# Advisory-lock class of the dispatchers' liveness locks: (OWNER_LOCK_CLASS, instance id).
OWNER_LOCK_CLASS = 7301


async def hold_liveness_lock(conn: DbConnection, instance_id: int) -> None:
    """Take the dispatcher's liveness lock on a connection it keeps while it runs; PostgreSQL releases it with
    the connection, so `DispatchQueue.orphaned` can tell a dead instance's attempts from a live one's."""
    await conn.execute("SELECT pg_advisory_lock($1, $2)", OWNER_LOCK_CLASS, instance_id)


async def release_liveness_lock(conn: DbConnection, instance_id: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", OWNER_LOCK_CLASS, instance_id)


class DispatchQueue:
    """The dispatcher's queries across partners. Rows it works on are locked for its transaction."""

    def __init__(self, conn: DbConnection) -> None:
        self._conn = conn

    async def next_due(self) -> datetime | None:
        """When the earliest message waiting to be sent is due (locked by another dispatcher or not; none waits:
        None), from the first entry of the index `messages_due`."""
        due: datetime | None = await self._conn.fetchval(
            "SELECT min(due_at) FROM messages WHERE status IN ('scheduled', 'pending')"
        )
        return due

    async def due(self, now: datetime, limit: int) -> list[Claimed]:
        # SKIP LOCKED: several instances take disjoint sets; a message is sent by one of them.
        rows = await self._conn.fetch(
            f"SELECT {CLAIM_COLUMNS} FROM messages WHERE status IN ('scheduled', 'pending') AND due_at <= $1 "
            "ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            limit,
        )
        return [_claimed(r) for r in rows]

    async def orphaned(
        self, now: datetime, limit: int, exclude: list[str], me: int, own_before: datetime
    ) -> list[Claimed]:
        """Attempts left `sending` by a dead dispatcher (its liveness lock is free, or, with no owner, the lease ran
        out), and our own started before `own_before` that are not among our sends (`exclude`)."""
        rows = await self._conn.fetch(
            f"SELECT {CLAIM_COLUMNS} FROM messages WHERE status = 'sending' "
            "AND NOT (message_id::text = ANY($3::text[])) "
            "AND (lease_until < $1 OR (sent_by = $4 AND updated_at < $5) OR (sent_by IS NOT NULL AND sent_by <> $4 "
            f"     AND pg_try_advisory_xact_lock({OWNER_LOCK_CLASS}, sent_by))) "
            "ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            limit,
            exclude,
            me,
            own_before,
        )
        return [_claimed(r) for r in rows]

    async def lock(self, message_ids: Sequence[str]) -> dict[str, Claimed]:
        """Lock the messages (in id order: two batches never wait on each other in a cycle)."""
        if not message_ids:
            return {}
        rows = await self._conn.fetch(LOCK_MESSAGES, sorted(set(message_ids)))
        return {claimed.message.message_id: claimed for claimed in map(_claimed, rows)}

    async def opted_out(self, numbers: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (partner, phone) pairs are on their partner's opt-out ledger."""
        pairs = sorted(set(numbers))
        if not pairs:
            return set()
        rows = await self._conn.fetch(
            OPTED_OUT,
            [p for p, _ in pairs],
            [ph for _, ph in pairs],
        )
        return {(r["partner_id"], r["phone"]) for r in rows}

    async def start_attempts(
        self, starts: Sequence[tuple[str, int]], provider: str, lease_until: datetime, sent_by: int
    ) -> None:
        """Record (message id, attempt number) attempts as in flight: before the provider is called."""
        if not starts:
            return
        await self._conn.execute(
            # One statement, one round trip: the messages start sending and their attempts are recorded.
            "WITH started AS (UPDATE messages m SET status = 'sending', attempts = s.attempt, provider = $3, "
            "lease_until = $4, due_at = NULL, sent_by = $5, updated_at = now() "
            "FROM unnest($1::uuid[], $2::int[]) AS s(id, attempt) WHERE m.message_id = s.id "
            "RETURNING m.message_id, s.attempt) "
            "INSERT INTO attempts (message_id, attempt, provider, status) "
            "SELECT message_id, attempt, $3, 'in_flight' FROM started",
            [m for m, _ in starts],
            [a for _, a in starts],
            provider,
            lease_until,
            sent_by,
        )

    async def finish_attempts(self, finished: Sequence[FinishedAttempt]) -> None:
        if not finished:
            return
        last = {(f.message_id, f.attempt): f for f in finished}  # one row per attempt, the last word wins
        await self._conn.execute(
            "UPDATE attempts a SET status = f.status, detail = f.detail, finished_at = now(), "
            "provider_message_ids = CASE WHEN f.ids IS NOT NULL "
            "THEN ARRAY(SELECT jsonb_array_elements_text(f.ids::jsonb)) END "
            "FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[]) "
            "AS f(message_id, attempt, status, detail, ids) "
            "WHERE a.message_id = f.message_id AND a.attempt = f.attempt",
            *as_columns([(*key, f.status, f.detail, _json_list(f.provider_message_ids)) for key, f in last.items()], 5),
        )

    async def reschedule(self, message_id: str, due_at: datetime) -> None:
        """Back to `pending`, due at `due_at`: a retry, or a resend after reconciliation."""
        await self._conn.execute(
            "UPDATE messages SET status = 'pending', due_at = $2, lease_until = NULL, updated_at = now() "
            "WHERE message_id = $1::uuid",
            message_id,
            due_at,
        )

    async def record_replay(
        self, message_id: str, replay_of: str, outcome: str, reason: str | None, detail: str | None
    ) -> bool:
        """Record a replay of the message's dead letter `replay_of`; False when that one was accepted before.

        A refusal does not use the dead letter up: replayed again once the refusal no longer holds (the number
        opted back in), it may be accepted, and the row says what the latest replay came to."""
        row = await self._conn.fetchrow(
            "INSERT INTO replays (message_id, replay_of, outcome, reason, detail) VALUES ($1::uuid, $2, $3, $4, $5) "
            "ON CONFLICT (message_id, replay_of) DO UPDATE SET outcome = EXCLUDED.outcome, reason = EXCLUDED.reason, "
            "detail = EXCLUDED.detail, replayed_at = now() WHERE replays.outcome = 'refused' RETURNING 1",
            message_id,
            replay_of,
            outcome,
            reason,
            detail,
        )
        return row is not None

    async def start_round(self, message_id: str, status: MessageStatus, due_at: datetime | None) -> None:
        """A failed message waits again (`pending` or `scheduled`) in a new round: new idempotency key and
        event ids, a fresh retry budget; its failure is history (the attempt log and the replays keep it)."""
        await self._conn.execute(
            "UPDATE messages SET status = $2, due_at = $3, replay_round = replay_round + 1, "
            "attempts_before_round = attempts, failure_reason = NULL, failure_detail = NULL, lease_until = NULL, "
            "updated_at = now() WHERE message_id = $1::uuid",
            message_id,
            str(status),
            due_at,
        )

    async def end(self, ended: Sequence[tuple[str, MessageStatus, str | None, str | None]]) -> None:
        """(message id, status, failure reason, failure detail): a status no longer waiting or in flight.

        A reason of None keeps the stored one (a message delivered after a failed attempt keeps its history).
        """
        if not ended:
            return
        last = {message_id: (str(status), reason, detail) for message_id, status, reason, detail in ended}
        await self._conn.execute(
            "UPDATE messages m SET status = e.status, due_at = NULL, lease_until = NULL, "
            "failure_reason = coalesce(e.reason, m.failure_reason), "
            "failure_detail = coalesce(e.detail, m.failure_detail), updated_at = now() "
            "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS e(message_id, status, reason, detail) "
            "WHERE m.message_id = e.message_id",
            *as_columns([(message_id, *ending) for message_id, ending in last.items()], 4),
        )

    async def lock_provider_ids(self, provider: str, ids: Iterable[str]) -> None:
        """Serialize the recording of a dispatch with receipts for the same provider ids.

        Without it a receipt committed between the dispatch's read of receipts and its commit would be
        stored but never merged. Sorted (an ordered subquery is never flattened), so two transactions
        never wait on each other in a cycle.
        """
        keys = sorted({f"{provider}:{pid}" for pid in ids})
        if not keys:
            return
        await self._conn.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
            "FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) AS sorted_keys",
            keys,
        )

    async def parts(self, provider: str, provider_message_ids: Iterable[str]) -> dict[str, str]:
        """Provider id -> message id, for the ids whose dispatch is recorded."""
        rows = await self._conn.fetch(
            PARTS,
            provider,
            sorted(set(provider_message_ids)),
        )
        return {r["provider_message_id"]: r["message_id"] for r in rows}

    async def receipt_statuses(
        self, provider: str, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], ReceiptStatus]:
        """(provider id, segment) -> stored receipt status, locked for the transaction (in the sorted keys' order:
        two batches never wait on each other in a cycle)."""
        pairs = sorted(set(keys))
        rows = await self._conn.fetch(
            RECEIPT_STATUSES,
            provider,
            [pid for pid, _ in pairs],
            [segment for _, segment in pairs],
        )
        return {(r["provider_message_id"], r["segment"]): ReceiptStatus(r["status"]) for r in rows}

    async def put_receipts(self, provider: str, receipts: Sequence[StoredReceipt]) -> None:
        if not receipts:
            return
        last = {(r.provider_message_id, r.segment): r for r in receipts}  # a row may change once per statement
        await self._conn.execute(
            "INSERT INTO receipts (provider, provider_message_id, segment, status, raw_status, occurred_at) "
            "SELECT $1, pid, segment, status, raw_status, occurred_at "
            "FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::timestamptz[]) "
            "AS r(pid, segment, status, raw_status, occurred_at) "
            "ON CONFLICT (provider, provider_message_id, segment) DO UPDATE "
            "SET status = EXCLUDED.status, raw_status = EXCLUDED.raw_status, occurred_at = EXCLUDED.occurred_at, "
            "updated_at = now()",
            provider,
            *as_columns([(*key, str(r.status), r.raw_status, r.occurred_at) for key, r in last.items()], 5),
        )

    async def receipts_of(self, message_ids: Sequence[str]) -> dict[str, dict[int, ReceiptStatus]]:
        """Message id -> segment -> receipt status over every provider id of the message (per-segment ids
        count as theirs)."""
        if not message_ids:
            return {}
        rows = await self._conn.fetch(
            RECEIPTS_OF,
            list(message_ids),
            WHOLE_MESSAGE,
        )
        return _merged_receipts(rows)

    async def dispatch(self, provider: str, dispatched: Sequence[Dispatched]) -> dict[str, dict[int, ReceiptStatus]]:
        """Record accepted sends: their attempts finished, their parts (provider ids) kept, the messages dispatched;
        returns the receipts stored for them already (come before this commit), as `receipts_of` would after those
        writes. One statement: as four (three writes and the read) they were four of the outcome transaction's
        nine round trips (docs/performance.md, issue 19)."""
        if not dispatched:
            return {}
        last = {(d.message_id, d.attempt): d for d in dispatched}  # one row per attempt, the last word wins
        parts = [
            (pid, d.message_id, i if d.per_segment else None)
            for d in dispatched
            for i, pid in enumerate(d.provider_message_ids)
        ]
        rows = await self._conn.fetch(
            DISPATCH,
            provider,
            *as_columns([(*key, d.how, _json_list(list(d.provider_message_ids))) for key, d in last.items()], 4),
            *as_columns(parts, 3),
            *as_columns(list({d.message_id: d.provider_message_ids[0] for d in dispatched}.items()), 2),
            WHOLE_MESSAGE,
        )
        return _merged_receipts(rows)

    async def partners_messaging(self, phone: str) -> list[str]:
        rows = await self._conn.fetch("SELECT DISTINCT partner_id FROM messages WHERE phone = $1", phone)
        return [r["partner_id"] for r in rows]


# --- retention (servicekit.retention) -----------------------------------------------------------------------------
# An attempt still in flight has no finished_at and is never deleted; a message shows no attempts or receipts
# once these are gone (its status, attempts count and failure reason stay on the message).

ATTEMPTS_SQL = counted(batch_delete("attempts", "finished_at < $1"))
RECEIPTS_SQL = counted(batch_delete("receipts", "updated_at < $1"))


def retention_purges(attempts: timedelta, receipts: timedelta) -> list[Purge]:
    return [Purge("attempts", attempts, ATTEMPTS_SQL), Purge("receipts", receipts, RECEIPTS_SQL)]


# The schedule of an account: `count` sends, one every `interval_s`, from its next free time, but never from earlier
# than `burst_s` ago (an idle account may send a burst at once, as a token bucket that holds `burst_s` of tokens
# would). Returns the first send's time as seconds from the database's now, which all instances share.
RESERVE_SENDS = (
    "INSERT INTO send_rate AS r (account, next_at) "
    "VALUES ($1, clock_timestamp() - make_interval(secs => $4) + $2 * make_interval(secs => $3)) "
    "ON CONFLICT (account) DO UPDATE SET next_at = "
    "greatest(r.next_at, clock_timestamp() - make_interval(secs => $4)) + $2 * make_interval(secs => $3) "
    "RETURNING extract(epoch FROM next_at - clock_timestamp())::float8 - $2 * $3"
)


async def reserve_sends(conn: DbConnection, account: str, count: int, interval_s: float, burst_s: float) -> float:
    """Reserve `count` consecutive send times of `account`; the first one's offset from now, in seconds."""
    first: float = await conn.fetchval(RESERVE_SENDS, account, count, interval_s, burst_s)
    return first
