"""Messages, attempts, receipts and opt-outs in PostgreSQL.

`MessageRepository` serves one partner: every query is scoped by partner id. `DispatchQueue` is the
dispatcher's view across partners (due messages, orphaned attempts, provider ids from delivery
reports); it is never reachable from a partner's request.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from notifier.domain import (
    WHOLE_MESSAGE,
    Attempt,
    Message,
    MessageStatus,
    OptOut,
    Receipt,
    ReceiptStatus,
    advance_receipt,
)
from servicekit.db import DbConnection

MESSAGE_COLUMNS = (
    "message_id::text, send_sms_id, partner_id, campaign_id, order_id, customer_id, phone, text, sender, "
    "transactional, encoding, segments, status, failure_reason, failure_detail, provider, provider_message_id, "
    "attempts, requested_at, expires_at, not_before, due_at, created_at, updated_at"
)


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


@dataclass(frozen=True)
class Cursor:
    """Keyset position in the newest-first listing; opaque to clients."""

    seq: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(json.dumps([self.seq]).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            (seq,) = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return cls(int(seq))
        except (ValueError, TypeError) as exc:
            raise ValueError("malformed cursor") from exc


@dataclass(frozen=True)
class MessageFilter:
    order_id: str | None = None
    phone: str | None = None
    campaign_id: str | None = None
    status: MessageStatus | None = None


class MessageRepository:
    def __init__(self, conn: DbConnection, partner_id: str) -> None:
        self._conn = conn
        self._partner_id = partner_id

    async def insert(self, new: NewMessage) -> Message | None:
        """Insert a new command's message; None when the partner already has this send_sms_id."""
        assert new.partner_id == self._partner_id
        row = await self._conn.fetchrow(
            "INSERT INTO messages (message_id, partner_id, send_sms_id, campaign_id, order_id, customer_id, phone, "
            "text, sender, transactional, encoding, segments, status, failure_reason, failure_detail, requested_at, "
            "expires_at, not_before, due_at, correlation_id, command, command_topic, command_partition, "
            "command_offset, trace_parent) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
            "$14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25) "
            f"ON CONFLICT (partner_id, send_sms_id) DO NOTHING RETURNING {MESSAGE_COLUMNS}",
            new.message_id,
            new.partner_id,
            new.send_sms_id,
            new.campaign_id,
            new.order_id,
            new.customer_id,
            new.phone,
            new.text,
            new.sender,
            new.transactional,
            new.encoding,
            new.segments,
            str(new.status),
            new.failure_reason,
            new.failure_detail,
            new.requested_at,
            new.expires_at,
            new.not_before,
            new.due_at,
            new.correlation_id,
            new.command,
            new.command_topic,
            new.command_partition,
            new.command_offset,
            new.trace_parent,
        )
        return _message(row) if row else None

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

    async def page(self, where: MessageFilter, *, after: Cursor | None, limit: int) -> list[tuple[int, Message]]:
        rows = await self._conn.fetch(
            f"SELECT seq, {MESSAGE_COLUMNS} FROM messages WHERE partner_id = $1 "
            "AND ($2::text IS NULL OR order_id = $2) AND ($3::text IS NULL OR phone = $3) "
            "AND ($4::text IS NULL OR campaign_id = $4) AND ($5::text IS NULL OR status = $5) "
            "AND seq < $6 ORDER BY seq DESC LIMIT $7",
            self._partner_id,
            where.order_id,
            where.phone,
            where.campaign_id,
            str(where.status) if where.status else None,
            after.seq if after else 2**62,
            limit,
        )
        return [(r["seq"], Message.model_validate({k: v for k, v in dict(r).items() if k != "seq"})) for r in rows]

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

    async def is_opted_out(self, phone: str) -> bool:
        return bool(
            await self._conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM opt_outs WHERE partner_id = $1 AND phone = $2)", self._partner_id, phone
            )
        )

    async def opt_out(self, phone: str, source: str) -> tuple[OptOut, bool]:
        """Record an opt-out; returns it and whether it is new."""
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
        return OptOut.model_validate(dict(existing or {})), False

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
class Claimed:
    """A message taken by the dispatcher, with what it needs to send and to record the outcome."""

    message: Message
    command: bytes
    command_topic: str | None
    command_partition: int | None
    command_offset: int | None
    correlation_id: str | None
    trace_parent: str | None = None


CLAIM_COLUMNS = (
    f"{MESSAGE_COLUMNS}, command, command_topic, command_partition, command_offset, correlation_id, trace_parent"
)


def _claimed(row: asyncpg.Record) -> Claimed:
    values = dict(row)
    extra = {k: values.pop(k) for k in ("command", "command_topic", "command_partition", "command_offset")}
    correlation_id, trace_parent = values.pop("correlation_id"), values.pop("trace_parent")
    return Claimed(
        Message.model_validate(values),
        bytes(extra["command"]),
        extra["command_topic"],
        extra["command_partition"],
        extra["command_offset"],
        correlation_id,
        trace_parent,
    )


# Advisory-lock class of the dispatchers' liveness locks: (OWNER_LOCK_CLASS, instance id).
OWNER_LOCK_CLASS = 7301


class DispatchQueue:
    """The dispatcher's queries across partners. Rows it works on are locked for its transaction."""

    def __init__(self, conn: DbConnection) -> None:
        self._conn = conn

    async def due(self, now: datetime, limit: int) -> list[Claimed]:
        # SKIP LOCKED: several instances take disjoint sets; a message is sent by one of them.
        rows = await self._conn.fetch(
            f"SELECT {CLAIM_COLUMNS} FROM messages WHERE status IN ('scheduled', 'pending') AND due_at <= $1 "
            "ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            limit,
        )
        return [_claimed(r) for r in rows]

    async def orphaned(self, now: datetime, limit: int, exclude: list[str], me: int) -> list[Claimed]:
        """Attempts left `sending` by a dead dispatcher: its liveness lock is free, or (no owner) the lease ran out."""
        rows = await self._conn.fetch(
            f"SELECT {CLAIM_COLUMNS} FROM messages WHERE status = 'sending' "
            "AND NOT (message_id::text = ANY($3::text[])) "
            "AND (lease_until < $1 OR (sent_by IS NOT NULL AND sent_by <> $4 "
            f"     AND pg_try_advisory_xact_lock({OWNER_LOCK_CLASS}, sent_by))) "
            "ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            limit,
            exclude,
            me,
        )
        return [_claimed(r) for r in rows]

    async def lock(self, message_id: str) -> Claimed | None:
        row = await self._conn.fetchrow(
            f"SELECT {CLAIM_COLUMNS} FROM messages WHERE message_id = $1::uuid FOR UPDATE", message_id
        )
        return _claimed(row) if row else None

    async def next_due(self) -> datetime | None:
        value: datetime | None = await self._conn.fetchval(
            "SELECT min(due_at) FROM messages WHERE status IN ('scheduled', 'pending')"
        )
        return value

    async def is_opted_out(self, partner_id: str, phone: str) -> bool:
        return await MessageRepository(self._conn, partner_id).is_opted_out(phone)

    async def start_attempt(
        self, message_id: str, attempt: int, provider: str, lease_until: datetime, sent_by: int
    ) -> None:
        await self._conn.execute(
            "UPDATE messages SET status = 'sending', attempts = $2, provider = $3, lease_until = $4, due_at = NULL, "
            "sent_by = $5, updated_at = now() WHERE message_id = $1::uuid",
            message_id,
            attempt,
            provider,
            lease_until,
            sent_by,
        )
        await self._conn.execute(
            "INSERT INTO attempts (message_id, attempt, provider, status) VALUES ($1::uuid, $2, $3, 'in_flight')",
            message_id,
            attempt,
            provider,
        )

    async def finish_attempt(
        self, message_id: str, attempt: int, status: str, detail: str | None, provider_message_ids: list[str] | None
    ) -> None:
        await self._conn.execute(
            "UPDATE attempts SET status = $3, detail = $4, provider_message_ids = $5, finished_at = now() "
            "WHERE message_id = $1::uuid AND attempt = $2",
            message_id,
            attempt,
            status,
            detail,
            provider_message_ids,
        )

    async def set_status(self, message_id: str, status: MessageStatus, **changes: Any) -> None:
        """Set the status and any of: due_at, lease_until, failure_reason, failure_detail, provider_message_id."""
        allowed = {"due_at", "lease_until", "failure_reason", "failure_detail", "provider_message_id"}
        assert set(changes) <= allowed, set(changes) - allowed
        names = list(changes)
        assignments = "".join(f", {name} = ${i + 3}" for i, name in enumerate(names))
        await self._conn.execute(
            f"UPDATE messages SET status = $2, updated_at = now(){assignments} WHERE message_id = $1::uuid",
            message_id,
            str(status),
            *(changes[name] for name in names),
        )

    async def lock_provider_ids(self, provider: str, ids: list[str]) -> None:
        """Serialize the recording of a dispatch with receipts for the same provider ids.

        Without it a receipt committed between the dispatch's read of receipts and its commit would be
        stored but never merged. Sorted, so two transactions never wait on each other in a cycle.
        """
        for pid in sorted(set(ids)):
            await self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{provider}:{pid}")

    async def add_parts(self, provider: str, message_id: str, ids: list[str], per_segment: bool) -> None:
        await self._conn.executemany(
            "INSERT INTO message_parts (provider, provider_message_id, message_id, segment) "
            "VALUES ($1, $2, $3::uuid, $4) ON CONFLICT DO NOTHING",
            [(provider, pid, message_id, i if per_segment else None) for i, pid in enumerate(ids)],
        )

    async def part(self, provider: str, provider_message_id: str) -> tuple[str, int | None] | None:
        row = await self._conn.fetchrow(
            "SELECT message_id::text, segment FROM message_parts WHERE provider = $1 AND provider_message_id = $2",
            provider,
            provider_message_id,
        )
        return (row["message_id"], row["segment"]) if row else None

    async def receipt_status(self, provider: str, provider_message_id: str, segment: int) -> ReceiptStatus | None:
        value = await self._conn.fetchval(
            "SELECT status FROM receipts WHERE provider = $1 AND provider_message_id = $2 AND segment = $3 FOR UPDATE",
            provider,
            provider_message_id,
            segment,
        )
        return ReceiptStatus(value) if value else None

    async def put_receipt(
        self,
        provider: str,
        provider_message_id: str,
        segment: int,
        status: ReceiptStatus,
        raw_status: str,
        occurred_at: datetime | None,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO receipts (provider, provider_message_id, segment, status, raw_status, occurred_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (provider, provider_message_id, segment) DO UPDATE "
            "SET status = EXCLUDED.status, raw_status = EXCLUDED.raw_status, occurred_at = EXCLUDED.occurred_at, "
            "updated_at = now()",
            provider,
            provider_message_id,
            segment,
            str(status),
            raw_status,
            occurred_at,
        )

    async def receipts_of(self, message_id: str) -> dict[int, ReceiptStatus]:
        """Segment -> receipt status over every provider id of the message (per-segment ids count as theirs)."""
        rows = await self._conn.fetch(
            "SELECT CASE WHEN r.segment <> $2 THEN r.segment ELSE coalesce(p.segment, $2) END AS segment, r.status "
            "FROM message_parts p JOIN receipts r USING (provider, provider_message_id) WHERE p.message_id = $1::uuid",
            message_id,
            WHOLE_MESSAGE,
        )
        merged: dict[int, ReceiptStatus] = {}
        for row in rows:
            merged[row["segment"]] = advance_receipt(merged.get(row["segment"]), ReceiptStatus(row["status"]))
        return merged

    async def partners_messaging(self, phone: str) -> list[str]:
        rows = await self._conn.fetch("SELECT DISTINCT partner_id FROM messages WHERE phone = $1", phone)
        return [r["partner_id"] for r in rows]
