"""Foundation smoke test: a contract message through the real broker with FastStream, and a real query.

The subscriber is in a consumer group with the manual ack policy: the offset is committed only
when the handler acknowledges, which is how every service consumer of this platform works.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from contracts.envelope import Envelope
from contracts.inbound import OrderStatusReported
from contracts.topics import Topic, prefixed
from devtools.pytest_plugin import Infrastructure, committed_offsets


async def test_contract_round_trips_through_the_real_broker_with_manual_commit(
    infrastructure: Infrastructure, topic_prefix: str, summary: Callable[[str], None]
) -> None:
    topic = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    group = f"smoke-{uuid.uuid4().hex[:8]}"
    sent = Envelope.wrap(
        OrderStatusReported(order_id="o-1", code="shipped", occurred_at=datetime.now(UTC), source_sequence=3),
        source="/tests/smoke",
        partner_id="acme",
    )
    received: asyncio.Queue[Envelope[OrderStatusReported]] = asyncio.Queue()

    broker = KafkaBroker(infrastructure.kafka_bootstrap, enable_idempotence=True)
    publisher = broker.publisher(topic)

    @broker.subscriber(topic, group_id=group, auto_offset_reset="earliest", ack_policy=AckPolicy.MANUAL)
    async def on_inbound(body: Envelope[OrderStatusReported], message: KafkaMessage) -> None:
        await received.put(body)
        await message.ack()

    async with broker:
        await broker.start()
        await publisher.publish(sent.to_bytes(), key=sent.key())
        got = await asyncio.wait_for(received.get(), timeout=30)

    assert got == sent
    summary(
        f"broker round trip: {got.type} id={got.id} key={sent.key().decode()} published and consumed "
        f"by group {group} on {infrastructure.kafka_bootstrap} ({infrastructure.origin})"
    )
    committed = await committed_offsets(infrastructure.kafka_bootstrap, group)
    assert sum(committed.values()) == 1, committed


async def test_real_postgres_query(database: str, summary: Callable[[str], None]) -> None:
    conn = await asyncpg.connect(database)
    try:
        version = await conn.fetchval("SHOW server_version")
        assert await conn.fetchval("SELECT $1::int + $2::int", 40, 2) == 42
    finally:
        await conn.close()
    summary(f"postgres {version} answered on {database.rsplit('@', 1)[-1]}")
