"""Operating the platform's topics: end offsets, consumer-group lag, dead letters and their replay.

One implementation, returning data, for the two front ends that show it: the ops CLI (`make ops`, `devtools.ops`)
and the console's ops pages. Topic names here are the full (prefixed) names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from servicekit.kafka import topic_partitions

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@dataclass(frozen=True)
class TopicSummary:
    name: str
    partitions: int
    end_offset: int  # the sum over its partitions
    messages: int  # still stored: end offsets minus beginning offsets


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    lag: int


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp: datetime
    event_id: str
    type: str
    partner: str
    original_topic: str
    original_partition: str
    original_offset: str
    reason: str
    error: str


@dataclass(frozen=True)
class Replayed:
    partition: int
    offset: int
    event_id: str
    to_topic: str


class Inspector:
    """An admin client and a consumer, kept open between questions: a process that asks often (the console's ops
    pages) pays the broker connections once, not on every page (the first offsets request of a new consumer
    costs about a second here)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="ops")
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="ops")

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def list_topics(self) -> list[str]:
        return sorted(name for name in await self.admin.list_topics() if not name.startswith("__"))

    async def topic_summaries(self, topics: Sequence[str]) -> list[TopicSummary]:
        """Each topic that exists, with its partitions and offsets: one metadata and one offsets request each for
        all of them."""
        described = await self.admin.describe_topics(list(topics))
        partitions = {
            d["topic"]: [TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]]
            for d in described
            if d["error_code"] == 0
        }
        every = [tp for tps in partitions.values() for tp in tps]
        begin, end = await self.consumer.beginning_offsets(every), await self.consumer.end_offsets(every)
        return [
            TopicSummary(topic, len(tps), sum(end[tp] for tp in tps), sum(end[tp] - begin[tp] for tp in tps))
            for topic in topics
            if (tps := partitions.get(topic))
        ]

    async def consumer_groups(self) -> list[str]:
        return sorted(g[0] for g in await self.admin.list_consumer_groups())

    async def group_lags(self, groups: Sequence[str]) -> list[PartitionLag]:
        """Every partition each group has committed on, with its committed offset and lag."""
        committed = {group: await self.admin.list_consumer_group_offsets(group) for group in groups}
        partitions = list({tp for offsets in committed.values() for tp in offsets})
        ends = await self.consumer.end_offsets(partitions) if partitions else {}
        return [
            PartitionLag(group, tp.topic, tp.partition, meta.offset, max(0, ends[tp] - meta.offset))
            for group, offsets in committed.items()
            for tp, meta in sorted(offsets.items())
        ]


@asynccontextmanager
async def inspector(bootstrap: str) -> AsyncIterator[Inspector]:
    """An `Inspector` for a few questions (the ops CLI)."""
    kafka = Inspector(bootstrap)
    await kafka.start()
    try:
        yield kafka
    finally:
        await kafka.stop()


async def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> list[Record]:
    """Every record of `topic` from the beginning up to the end offsets seen now, across partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Record] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await _reached(consumer, ends):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout_s}s")
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def headers(record: Record) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (record.headers or ())}


def envelope_head(record: Record) -> dict[str, Any]:
    """The record's envelope (id, type, partner, subject, data), as far as it parses."""
    try:
        document = json.loads(record.value or b"")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def dead_letter(record: Record) -> DeadLetter:
    h, head = headers(record), envelope_head(record)
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        event_id=str(head.get("id", "?")),
        type=str(head.get("type", "?")),
        partner=str(head.get("partnerid", "?")),
        original_topic=h.get("dlq-original-topic", ""),
        original_partition=h.get("dlq-original-partition", ""),
        original_offset=h.get("dlq-original-offset", ""),
        reason=h.get("dlq-reason", ""),
        error=h.get("dlq-error", ""),
    )


async def dead_letters(bootstrap: str, dlq_topic: str) -> list[DeadLetter]:
    return [dead_letter(record) for record in await read_topic(bootstrap, dlq_topic)]


async def replay_dead_letters(bootstrap: str, dlq_topic: str, ids: Sequence[str] = ()) -> list[Replayed]:
    """Re-publish dead letters to their original topic (all, or those whose event id is in `ids`). Consumers
    de-duplicate by event id, so replaying the same record twice applies it once; the notifier starts a new round
    of attempts for a replayed SendSms that no provider took (docs/architecture.md, dead-letter replay)."""
    records = await read_topic(bootstrap, dlq_topic)
    chosen = [r for r in records if not ids or envelope_head(r).get("id") in ids]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    replayed = []
    try:
        for record in chosen:
            target = headers(record)["dlq-original-topic"]
            kept = [(k, v) for k, v in (record.headers or ()) if not k.startswith(("dlq-", "retry-"))]
            replay_of = f"{record.topic}/{record.partition}/{record.offset}".encode()
            await producer.send_and_wait(
                target, record.value, key=record.key, headers=[*kept, ("replay-of", replay_of)]
            )
            replayed.append(Replayed(record.partition, record.offset, str(envelope_head(record).get("id")), target))
    finally:
        await producer.stop()
    return replayed
