"""Kafka input of the orders service: upstream events on `orders.inbound.v1` and its retry topic.

Each batch becomes commands applied in one transaction (`OrderService.handle`). What cannot be
accepted is dead-lettered with the reason in headers; what may heal by itself (a status code the
registry replica has not seen yet, a status reported before its order) goes to the retry topic with
a growing delay, a bounded number of times, then to the dead-letter topic. Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope
from contracts.inbound import OrderStatusReported, OrderUpserted, parse_inbound
from contracts.topics import order_key
from orders.domain import RETRIABLE, OrderDetails, Requested
from orders.services import Command, OrderService
from servicekit.consumer import DeadLetters, Record, Rejected, Unreadable, decode_batch

ATTEMPT_HEADER = "retry-attempt"
NOT_BEFORE_HEADER = "retry-not-before-ms"


def to_command(
    envelope: Envelope[OrderUpserted] | Envelope[OrderStatusReported], headers: tuple[tuple[str, bytes], ...] = ()
) -> Command:
    data = envelope.data
    if isinstance(data, OrderStatusReported):
        requests: tuple[Requested, ...] = (Requested(data.code, data.occurred_at, data.source_sequence, data.comment),)
        details = None
    else:
        requests = tuple(
            Requested(code, data.occurred_at, data.source_sequence, expected_type=status_type)
            for status_type, code in data.statuses.items()
        )
        details = OrderDetails(
            data.customer, data.amount, data.currency, data.placed_at, data.occurred_at, data.source_sequence
        )
    return Command(
        partner_id=envelope.partnerid,
        order_id=data.order_id,
        event_id=envelope.id,
        requests=requests,
        details=details,
        correlation_id=envelope.correlationid or envelope.id,
        headers=headers,
    )


def headers_of(record: Record) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (record.headers or ())}


@dataclass(frozen=True)
class RetryPolicy:
    delays_s: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0)

    def delay_after(self, attempt: int) -> float | None:
        """The wait before retry number `attempt + 1`, or None when the attempts are used up."""
        return self.delays_s[attempt] if attempt < len(self.delays_s) else None


class InboundConsumer:
    """`process(records)` for `orders.inbound.v1` and its retry topic (see `servicekit.consumer`)."""

    def __init__(
        self,
        service: OrderService,
        dead_letters: DeadLetters,
        producer: AIOKafkaProducer,
        topic_inbound_retry: str,
        *,
        max_bytes: int,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._service = service
        self._dead_letters = dead_letters
        self._producer = producer
        self._retry_topic = topic_inbound_retry
        self._max_bytes = max_bytes
        self._retry = retry or RetryPolicy()

    async def __call__(self, records: Sequence[Record]) -> None:
        await _wait_until_due(records)
        accepted, rejected = decode_batch(records, self._command)
        results = await self._service.handle([command for _, command in accepted]) if accepted else []
        retries: list[tuple[Record, int, float]] = []
        for (record, _), result in zip(accepted, results, strict=True):
            if result.refused is None:
                continue
            attempt = int(headers_of(record).get(ATTEMPT_HEADER, "0"))
            delay = self._retry.delay_after(attempt) if result.refused.reason in RETRIABLE else None
            if delay is None:
                detail = result.refused.detail + (f" (after {attempt} retries)" if attempt else "")
                rejected.append(Rejected(record, str(result.refused.reason), detail))
            else:
                retries.append((record, attempt + 1, delay))
        await self._publish_retries(retries)
        await self._dead_letters.publish(rejected)

    def _command(self, record: Record) -> Command:
        value = record.value or b""
        if len(value) > self._max_bytes:
            raise Unreadable("oversized", f"{len(value)} bytes exceed the limit of {self._max_bytes}")
        envelope = parse_inbound(value)
        expected_key = order_key(envelope.partnerid, envelope.data.order_id)
        if record.key != expected_key:
            raise Unreadable(
                "key_mismatch",
                f"record key {record.key!r} does not match partner '{envelope.partnerid}' and order "
                f"'{envelope.data.order_id}' (expected {expected_key!r})",
            )
        return to_command(envelope, tuple(record.headers or ()))

    async def _publish_retries(self, retries: list[tuple[Record, int, float]]) -> None:
        futures = []
        for record, attempt, delay in retries:
            kept = [(k, v) for k, v in (record.headers or ()) if k not in (ATTEMPT_HEADER, NOT_BEFORE_HEADER)]
            due_ms = int((time.time() + delay) * 1000)
            headers = [*kept, (ATTEMPT_HEADER, str(attempt).encode()), (NOT_BEFORE_HEADER, str(due_ms).encode())]
            futures.append(await self._producer.send(self._retry_topic, record.value, key=record.key, headers=headers))
        await asyncio.gather(*futures)


async def _wait_until_due(records: Sequence[Record]) -> None:
    """Retry records carry the time before which they must not be tried again."""
    due_ms = max((int(headers_of(r).get(NOT_BEFORE_HEADER, "0")) for r in records), default=0)
    wait_s = due_ms / 1000 - time.time()
    if wait_s > 0:
        await asyncio.sleep(min(wait_s, 60.0))
