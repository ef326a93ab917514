"""servicekit.ops returns what the ops CLI prints and the console shows: topics, lag, dead letters, replays."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from aiokafka import ConsumerRecord, TopicPartition

from contracts.topics import TOPIC_SPECS, Topic, prefixed
from devtools.kafka_io import commit_offsets
from devtools.pytest_plugin import Infrastructure
from servicekit import ops
from servicekit.consumer import DeadLetters, Rejected
from servicekit.outbox import idempotent_producer


def stored(value: bytes, headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t.orders.inbound.v1.dlq", 2, 17, 1_767_225_600_000, 0, b"k", value, None, 1, 1, headers)


def test_a_dead_letter_is_its_envelope_and_its_dlq_headers() -> None:
    envelope = {"id": "e-1", "type": "order.status-reported.v1", "partnerid": "demo", "data": {}}
    dlq_headers = {"dlq-original-topic": "t.orders.inbound.v1", "dlq-original-partition": "0",
                   "dlq-original-offset": "5", "dlq-reason": "unknown_status", "dlq-error": "no 'x' here"}  # fmt: skip
    headers = [(name, value.encode()) for name, value in dlq_headers.items()]
    assert ops.dead_letter(stored(json.dumps(envelope).encode(), headers)) == ops.DeadLetter(
        topic="t.orders.inbound.v1.dlq", partition=2, offset=17, timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        event_id="e-1", type="order.status-reported.v1", partner="demo", original_topic="t.orders.inbound.v1",
        original_partition="0", original_offset="5", reason="unknown_status", error="no 'x' here",
    )  # fmt: skip


def test_a_dead_letter_that_is_not_an_envelope_still_lists() -> None:
    for value in (b"not json", b"[1, 2]"):
        letter = ops.dead_letter(stored(value, []))
        assert (letter.event_id, letter.type, letter.partner, letter.reason) == ("?", "?", "?", "")


async def test_topic_summaries_and_group_lags(infrastructure: Infrastructure, topic_prefix: str) -> None:
    bootstrap = infrastructure.kafka_bootstrap
    inbound = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    producer = idempotent_producer(bootstrap, "tests")
    await producer.start()
    try:
        sent = [await producer.send_and_wait(inbound, b"{}", key=b"demo:o-1") for _ in range(3)]
    finally:
        await producer.stop()
    group = f"g-{uuid.uuid4().hex[:6]}"
    partition = TopicPartition(inbound, sent[0].partition)
    await commit_offsets(bootstrap, group, {partition: sent[0].offset + 1})

    async with ops.inspector(bootstrap) as kafka:
        assert inbound in await kafka.list_topics()
        summaries = await kafka.topic_summaries([inbound, f"{topic_prefix}no-such-topic"])
        assert group in await kafka.consumer_groups()
        lags = await kafka.group_lags([group])
    partitions = next(spec.partitions for spec in TOPIC_SPECS if spec.topic is Topic.ORDERS_INBOUND)
    assert summaries == [ops.TopicSummary(inbound, partitions, end_offset=3, messages=3)]
    assert lags == [ops.PartitionLag(group, inbound, partition.partition, committed=1, lag=2)]


async def test_replay_sends_the_chosen_dead_letters_back_to_their_topic(
    infrastructure: Infrastructure, topic_prefix: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap
    inbound, dlq = prefixed(Topic.ORDERS_INBOUND, topic_prefix), prefixed(Topic.ORDERS_INBOUND_DLQ, topic_prefix)
    producer = idempotent_producer(bootstrap, "tests")
    await producer.start()
    try:
        for n in range(2):
            headers = [("partnerid", b"demo"), ("retry-attempt", b"3")]
            await producer.send_and_wait(inbound, b'{"id": "e%d"}' % n, key=b"demo:o-1", headers=headers)
        records = await ops.read_topic(bootstrap, inbound)
        await DeadLetters(producer, dlq, "g").publish([Rejected(r, "unknown_status", "no 'x'") for r in records])
    finally:
        await producer.stop()
    letters = await ops.dead_letters(bootstrap, dlq)
    assert [(d.event_id, d.original_topic, d.reason) for d in letters] == [
        ("e0", inbound, "unknown_status"),
        ("e1", inbound, "unknown_status"),
    ]

    [replayed] = await ops.replay_dead_letters(bootstrap, dlq, ["e1"])
    assert replayed == ops.Replayed(letters[1].partition, letters[1].offset, "e1", inbound)
    back = (await ops.read_topic(bootstrap, inbound))[-1]
    assert (back.key, back.value) == (records[1].key, records[1].value)
    assert dict(back.headers) == {
        "partnerid": b"demo",
        "replay-of": f"{dlq}/{replayed.partition}/{replayed.offset}".encode(),
    }

    everything = await ops.replay_dead_letters(bootstrap, dlq)  # no ids: every dead letter, again
    assert [r.event_id for r in everything] == ["e0", "e1"]
