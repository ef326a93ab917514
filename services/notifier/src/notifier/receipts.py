"""Delivery receipts: stored per segment, never moving backwards, and merged into the message's status.

Receipts may arrive before the dispatch that they report on is recorded (fast handsets, slow databases); they
wait, stored, and `settle_receipts` merges them when the message is dispatched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from contracts.sms import SmsFailureReason
from notifier.domain import WHOLE_MESSAGE, MessageStatus, ReceiptStatus, advance, advance_receipt, merge_receipts
from notifier.events import Events
from notifier.providers.base import DeliveryReport
from notifier.repository import Claimed, DispatchQueue, StoredReceipt
from servicekit.outbox import OutboxRecord, unit_of_work


async def settle_receipts(
    queue: DispatchQueue,
    events: Events,
    provider: str,
    dispatched: Sequence[tuple[Claimed, str | None]],
    receipts: dict[str, dict[int, ReceiptStatus]] | None = None,
) -> list[OutboxRecord]:
    """Fold each dispatched message's receipts (read here unless given) into its status; the events of the forward
    moves."""
    if receipts is None:
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
        async with unit_of_work(self.pool) as work:
            queue = DispatchQueue(work.conn)
            await queue.lock_provider_ids(provider, (r.provider_message_id for r in reports))
            await queue.put_receipts(provider, await self._advanced(queue, provider, reports))
            parts = await queue.parts(provider, (r.provider_message_id for r in reports))
            locked = await queue.lock(sorted(set(parts.values())))
            dispatched = [
                (claimed, claimed.message.provider_message_id)
                for claimed in locked.values()
                if claimed.message.status is MessageStatus.DISPATCHED
            ]
            work.add(await settle_receipts(queue, self.events, provider, dispatched))
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
