"""At-least-once batch consumers: offsets committed after the work, poison isolated to a dead-letter topic.

Every service consumer is a FastStream subscriber with `batch=True` and `AckPolicy.MANUAL`, registered by
`batch_subscriber`. The service supplies `process(records)`, which must do all of its work for the batch in
its own transaction(s) and dead-letter what it cannot accept; only when it returns are the batch's offsets
committed (within `Batching.commit_interval_s`: see `OffsetCommits`). When it raises:

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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any, TypeAlias, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from contracts.errors import ContractError
from servicekit.db import DbConnection
from servicekit.kafka import IDLE_CONSUMER, IDLE_POLL_MS, fetch_whole_assignment
from servicekit.settings import Batching

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


class Unreadable(Exception):
    """A record a consumer's own rule refuses before any work (too large, a key that does not match...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


Read = TypeVar("Read")


def decode_batch(
    records: Sequence[Record], read: Callable[[Record], Read]
) -> tuple[list[tuple[Record, Read]], list[Rejected]]:
    """Read every record of a batch: those `read` accepts, each with what it made of it, and the rest as dead
    letters with their reasons. `read` raises `ContractError` (the record fits no contract) or `Unreadable`."""
    accepted: list[tuple[Record, Read]] = []
    rejected: list[Rejected] = []
    for record in records:
        try:
            accepted.append((record, read(record)))
        except (ContractError, Unreadable) as exc:
            rejected.append(Rejected(record, str(exc.reason), exc.detail))
    return accepted, rejected


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


COMMIT_ERRORS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)


def subscriber_options(group_id: str, *, max_records: int = 500) -> dict[str, Any]:
    """The FastStream subscriber settings every at-least-once batch consumer uses."""
    return {
        "group_id": group_id,
        "batch": True,
        "max_records": max_records,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.MANUAL,
        "decoder": keep_raw,
        **IDLE_CONSUMER,  # few wake-ups and broker requests while the topic is quiet (servicekit.kafka)
    }


class OffsetCommits:
    """The offsets of processed batches, committed to the broker at most every `interval_s`, and at stop.

    Committing after every batch costs a broker request and a write to `__consumer_offsets` per batch (on the
    benchmark machine 1.7-2.6 ms of broker CPU, more than a produce request), and at moderate rates a batch
    holds a record or two. Deferring the commit a little is still commit-after-work, since only the offsets of
    processed batches are ever committed; what a crash or a rebalance costs is that up to `interval_s` of
    processed records are read again, which the idempotent consumers skip.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._pending: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._last_commit = 0.0  # time.monotonic()
        self._deferred: asyncio.Task[None] | None = None
        self._committing = asyncio.Lock()  # one commit at a time, so an older one never lands after a newer one

    async def processed(self, consumer: AIOKafkaConsumer, records: Sequence[Record]) -> None:
        """`records` are processed: commit now if the last commit is old enough, otherwise soon."""
        self._consumer = consumer
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            self._pending[partition] = max(self._pending.get(partition, 0), record.offset + 1)
        wait_s = self._last_commit + self._interval_s - time.monotonic()
        if wait_s <= 0:
            await self._flush_or_warn("offset commit")
        elif self._deferred is None:
            self._deferred = asyncio.create_task(self._flush_after(wait_s), name="deferred-offset-commit")

    async def flush(self) -> None:
        """Commit what is pending, for the partitions still assigned (the others are someone else's now)."""
        async with self._committing:
            offsets, self._pending = self._pending, {}
            if self._consumer is None:
                return
            assigned = self._consumer.assignment()
            offsets = {partition: offset for partition, offset in offsets.items() if partition in assigned}
            if offsets:
                self._last_commit = time.monotonic()
                await self._consumer.commit(offsets)

    async def stop(self) -> None:
        """Commit what is pending before the consumer stops (a failure only means those records are read again)."""
        if self._deferred is not None:
            self._deferred.cancel()
        await self._flush_or_warn("offset commit at stop")

    async def _flush_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._deferred = None
        await self._flush_or_warn("deferred offset commit")

    async def _flush_or_warn(self, what: str) -> None:
        # The work is committed: a failed offset commit only means those records are read again and skipped.
        try:
            await self.flush()
        except COMMIT_ERRORS as exc:
            log.warning("%s failed (%s); those records will be read again and skipped", what, exc)


def batch_subscriber(
    broker: KafkaBroker,
    topic: str,
    group_id: str,
    process: Process,
    dead_letters: DeadLetters,
    *,
    max_records: int = 500,
    batching: Batching = Batching(),
    backoff: Backoff | None = None,
    **options: Any,
) -> Any:
    """Subscribe `process` to `topic` as an at-least-once batch consumer of `group_id` (see `batch_handler`).

    Three departures from FastStream's batch subscriber, all for the fixed cost of a batch (its transaction,
    its relay round trips, its broker requests), which dominates at moderate rates:

    * it waits for records in the poll itself: FastStream polls with `batch_timeout_ms` and sleeps as long
      again after an empty poll, so a short timeout makes an idle consumer wake up hundreds of times a second
      (0.4-0.5 CPU seconds per 10 idle seconds per service on the benchmark machine) and a long one delays
      the records that arrive during the sleep; aiokafka's getmany returns as soon as records arrive;
    * a small batch (of at least `batching.linger_from_records`) lingers `batching.linger_ms`, as a producer does,
      and takes what arrives meanwhile (`_linger`). On the benchmark 25 ms per hop cut the machine's load at 100
      events/s by a quarter and the p99 at 500 events/s by more than half against 10 ms, with the p99 at 100
      events/s unchanged (docs/performance.md, fix 19); since issue 34 only orders' consumer of upstream events
      lingers (`ServiceSettings.consumer_linger_ms`);
    * offsets are committed at most every `batching.commit_interval_s` (`OffsetCommits`), and at stop.

    Returns the FastStream subscriber.
    """
    subscriber: Any = broker.subscriber(topic, **subscriber_options(group_id, max_records=max_records), **options)
    commits = OffsetCommits(batching.commit_interval_s)
    linger_s = batching.linger_ms / 1000
    small = max(1, max_records // 4)  # a batch this big already spreads its fixed costs: no wait

    async def get_msg(consumer: AIOKafkaConsumer) -> tuple[Record, ...]:
        fetch_whole_assignment(consumer)  # on every poll: FastStream may have started a new consumer since the last
        records = await _poll(consumer, IDLE_POLL_MS, max_records)
        if linger_s and batching.linger_from_records <= len(records) < small:
            records = await _linger(consumer, records, linger_s, small, max_records)
        return records

    stop_subscriber = subscriber.stop

    async def stop() -> None:
        await commits.stop()
        await stop_subscriber()

    subscriber.get_msg = get_msg  # instead of FastStream's poll-then-sleep (BatchSubscriber.get_msg)
    subscriber.stop = stop
    subscriber(batch_handler(process, dead_letters, commits, backoff=backoff))
    return subscriber


async def _linger(
    consumer: AIOKafkaConsumer, records: tuple[Record, ...], linger_s: float, enough: int, max_records: int
) -> tuple[Record, ...]:
    """`records` and what arrives within `linger_s`, polled as it comes, until the batch holds `enough`.

    aiokafka fetches a partition again only once the records fetched from it were taken: a single poll at the end
    of the linger took one fetch response per partition, and what arrived after that waited in the fetcher for the
    next batch and its linger (orders' hop at 100 events/s: 23 ms there before the batch's own 25 ms linger;
    docs/performance.md, issue 34)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + linger_s
    while len(records) < enough and (left := deadline - loop.time()) > 0:
        records += await _poll(consumer, max(1, round(left * 1000)), max_records - len(records))
    return records


async def _poll(consumer: AIOKafkaConsumer, timeout_ms: int, max_records: int) -> tuple[Record, ...]:
    batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    return tuple(chain.from_iterable(batches.values()))


def records_of(message: KafkaMessage) -> tuple[Record, ...]:
    raw: Any = message.raw_message
    return tuple(raw) if isinstance(raw, tuple | list) else (raw,)


def batch_handler(
    process: Process, dead_letters: DeadLetters, commits: OffsetCommits, *, backoff: Backoff | None = None
) -> Callable[[Any], Awaitable[None]]:
    """The FastStream handler body for a `batch=True, ack_policy=AckPolicy.MANUAL` subscriber whose decoder
    is `keep_raw` (see `batch_subscriber`)."""
    pause = backoff or Backoff()

    async def handle(message: Any) -> None:  # Any: FastDepends passes it through, unvalidated
        try:
            await handle_batch(message)
        finally:
            # `keep_raw` made the message its own decoded body, which FastStream caches on the message: a
            # reference cycle that kept every batch's records alive until a full garbage collection.
            message.clear_cache()

    async def handle_batch(message: Any) -> None:
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
        await commits.processed(message.consumer, records)

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
