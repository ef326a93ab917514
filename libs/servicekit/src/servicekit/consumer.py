"""At-least-once batch consumers: offsets committed after the work, poison isolated to a dead-letter topic.

Every service consumer is a FastStream subscriber with `batch=True` and `AckPolicy.MANUAL` whose
handler is built by `batch_handler`. The service supplies `process(records)`, which must do all of
its work for the batch in its own transaction(s) and dead-letter what it cannot accept; only when it
returns are the offsets committed. When it raises:

* a transient error (database or broker unreachable, timeouts) rewinds the batch and retries it
  after an exponential backoff; nothing is skipped, so nothing is lost;
* any other error (a bug or a constraint a record violates) makes the batch replay record by
  record, so that only the record that fails again goes to the DLQ with the error in its headers;
  the consumer keeps going.

Records are redelivered after a crash or rebalance, so `process` must be idempotent (see `claim_new`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any, TypeAlias

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from servicekit.db import DbConnection

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Process = Callable[[Sequence[Record]], Awaitable[None]]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)

DEAD_LETTERS = Counter("dead_letters_total", "Records sent to a dead-letter topic", ["topic", "reason"])
BATCH_RECORDS = Histogram(
    "consumer_batch_records",
    "Records per consumed batch: small batches under load mean per-batch costs dominate",
    ["topic"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
BATCH_SECONDS = Histogram(
    "consumer_batch_seconds",
    "Time to process one consumed batch, its transaction(s) and dead letters included (not the offset commit)",
    ["topic"],
)


@dataclass(frozen=True)
class Rejected:
    """A record that cannot be processed, and why (`reason` is a short machine code)."""

    record: Record
    reason: str
    detail: str


def dead_letter_headers(rejected: Rejected, consumer_group: str) -> list[tuple[str, bytes]]:
    record = rejected.record
    added = {
        "dlq-reason": rejected.reason,
        "dlq-error": rejected.detail[:2000],
        "dlq-original-topic": record.topic,
        "dlq-original-partition": str(record.partition),
        "dlq-original-offset": str(record.offset),
        "dlq-consumer-group": consumer_group,
        "dlq-failed-at": datetime.now(UTC).isoformat(),
    }
    kept = [(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq-")]
    return kept + [(k, v.encode()) for k, v in added.items()]


class DeadLetters:
    """Publishes rejected records to a dead-letter topic and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, consumer_group: str) -> None:
        self._producer = producer
        self.topic = topic
        self._group = consumer_group

    async def publish(self, rejected: Sequence[Rejected]) -> None:
        futures = []
        for item in rejected:
            log.warning(
                "dead-lettering %s[%d]@%d: %s: %s",
                item.record.topic,
                item.record.partition,
                item.record.offset,
                item.reason,
                item.detail,
            )
            futures.append(
                await self._producer.send(
                    self.topic,
                    value=item.record.value,
                    key=item.record.key,
                    headers=dead_letter_headers(item, self._group),
                )
            )
            DEAD_LETTERS.labels(self.topic, item.reason).inc()
        await asyncio.gather(*futures)


async def claim_new(conn: DbConnection, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Record `event_ids` as processed by `consumer`; returns the ones not seen before.

    Run it in the same transaction as the work: the claim and the effect commit together, so a
    redelivered event finds its claim and is skipped.
    """
    rows = await conn.fetch(
        "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::text[]) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        list(event_ids),
    )
    return {row["event_id"] for row in rows}


@dataclass
class Backoff:
    initial_s: float = 0.2
    maximum_s: float = 10.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        return float(min(self.maximum_s, self.initial_s * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


async def keep_raw(message: Any) -> Any:
    """FastStream decoder that hands the handler the message itself, raw: decoding happens in `process`, where
    a malformed record can be dead-lettered (a failing framework decoder would skip the record silently).

    The handler then takes the message as its body: asking for it by `Context` instead would make FastStream
    resolve that context field in a worker thread, one thread hop per batch.
    """
    return message


# How long an idle consumer waits for records in one poll. aiokafka's getmany returns as soon as records
# arrive, so this adds no latency; it only bounds how often an idle consumer wakes up.
IDLE_POLL_MS = 1000


def subscriber_options(group_id: str, *, max_records: int = 500) -> dict[str, Any]:
    """The FastStream subscriber settings every at-least-once batch consumer uses."""
    return {
        "group_id": group_id,
        "batch": True,
        "max_records": max_records,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.MANUAL,
        "decoder": keep_raw,
    }


def batch_subscriber(broker: KafkaBroker, topic: str, group_id: str, *, max_records: int = 500, **options: Any) -> Any:
    """A FastStream batch subscriber (see `subscriber_options`) that waits for records instead of polling.

    FastStream's batch subscriber polls with `batch_timeout_ms` and sleeps as long again after an empty poll:
    a short timeout makes an idle consumer wake up hundreds of times a second (measured: 0.4-0.5 CPU seconds
    per 10 idle seconds per service on the benchmark machine, where a wake-up costs 150-250 us), a long one
    delays records arriving during the sleep. Waiting in getmany itself, which returns as soon as records
    arrive, costs neither. Returns the subscriber; call it with the handler.
    """
    subscriber: Any = broker.subscriber(topic, **subscriber_options(group_id, max_records=max_records), **options)

    async def get_msg(consumer: AIOKafkaConsumer) -> tuple[Record, ...]:
        batches = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=max_records)
        return tuple(chain.from_iterable(batches.values()))

    subscriber.get_msg = get_msg  # instead of FastStream's poll-then-sleep (BatchSubscriber.get_msg)
    return subscriber


def records_of(message: KafkaMessage) -> tuple[Record, ...]:
    raw: Any = message.raw_message
    return tuple(raw) if isinstance(raw, tuple | list) else (raw,)


def batch_handler(
    process: Process, dead_letters: DeadLetters, *, backoff: Backoff | None = None
) -> Callable[[Any], Awaitable[None]]:
    """The FastStream handler body for a `batch=True, ack_policy=AckPolicy.MANUAL` subscriber whose decoder
    is `keep_raw` (see `batch_subscriber`)."""
    pause = backoff or Backoff()

    async def handle(message: Any) -> None:  # Any: FastDepends passes it through, unvalidated
        records = records_of(message)
        topic = records[0].topic if records else ""
        BATCH_RECORDS.labels(topic).observe(len(records))
        try:
            with BATCH_SECONDS.labels(topic).time():
                await _process_or_isolate(process, dead_letters, records)
        except TRANSIENT_ERRORS as exc:
            delay = pause.next_delay()
            log.warning("transient %s: %s; retrying the batch in %.1fs", type(exc).__name__, exc, delay)
            await message.nack()  # rewinds every partition of the batch to its first record
            await asyncio.sleep(delay)
            return
        except BaseException:
            await message.nack()  # e.g. cancelled at shutdown: the batch is read again, never skipped
            raise
        pause.reset()
        await message.ack()

    return handle


async def _process_or_isolate(process: Process, dead_letters: DeadLetters, records: Sequence[Record]) -> None:
    try:
        await process(records)
    except TRANSIENT_ERRORS:
        raise
    except Exception:
        log.exception("processing a batch of %d failed; replaying it record by record", len(records))
        await _one_by_one(process, dead_letters, records)


async def _one_by_one(process: Process, dead_letters: DeadLetters, records: Sequence[Record]) -> None:
    """Replay a failed batch record by record; a record that still fails is dead-lettered alone."""
    for record in records:
        try:
            await process([record])
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            await dead_letters.publish([Rejected(record, "processing_failed", f"{type(exc).__name__}: {exc}")])
