"""Two consumer instances, a rebalance in the middle, duplicates: no change lost, none twice, order kept."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI

from contracts.envelope import Envelope, decode
from contracts.inbound import OrderStatusReported
from contracts.orders import OrderStatusChanged
from devtools.pytest_plugin import read_topic, wait_until
from orders.app import create_app
from orders.repository import load_orders
from orders.settings import OrdersSettings

CYCLE = ["accepted", "agreed", "in_progress", "completed"]
ORDERS, EVENTS_PER_ORDER = 20, 50
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def journey(order_id: str) -> list[Envelope[Any]]:
    """Events 1..49 of one order: each moves the general status to the next one of the cycle."""
    return [
        Envelope.wrap(
            OrderStatusReported(
                order_id=order_id, code=CYCLE[i % 4], occurred_at=T0 + timedelta(minutes=i), source_sequence=i
            ),
            source="/erp",
            partner_id="demo",
        )
        for i in range(1, EVENTS_PER_ORDER)
    ]


async def test_thousand_events_two_instances_and_a_rebalance(
    upstream: Any, orders_app: FastAPI, orders_settings: OrdersSettings
) -> None:
    for n in range(ORDERS):
        await upstream.upsert(f"o-{n}", general="accepted", seq=0, at=T0)
    events = [e for n in range(ORDERS) for e in journey(f"o-{n}")]
    # Interleave orders as real traffic does (per-order order kept), and repeat some events.
    per_order = defaultdict(list)
    for event in events:
        per_order[event.data.order_id].append(event)
    rng = random.Random(7)
    stream: list[Envelope[Any]] = []
    while per_order:
        order_id = rng.choice(sorted(per_order))
        stream.append(per_order[order_id].pop(0))
        if not per_order[order_id]:
            del per_order[order_id]
        if rng.random() < 0.1:
            stream.append(stream[rng.randrange(len(stream))])  # a redelivered duplicate

    second = create_app(orders_settings)  # same group, same database: a second instance
    async with second.router.lifespan_context(second):
        half = len(stream) // 2
        for event in stream[:half]:
            await upstream.producer.send(upstream.topic, event.to_bytes(), key=event.key())
        await upstream.producer.flush()
    # The second instance has left: its partitions move to the first one mid-stream.
    for event in stream[half:]:
        await upstream.producer.send(upstream.topic, event.to_bytes(), key=event.key())
    await upstream.producer.flush()

    expected = ORDERS * EVENTS_PER_ORDER

    async def all_changes() -> bool:
        found = await read_topic(orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_changed)
        return len(found) >= expected

    await wait_until(all_changes, timeout_s=90, what=f"{expected} status changes")
    records = await read_topic(orders_settings.kafka_bootstrap_servers, orders_settings.topic_status_changed)
    # The relay publishes at least once, so consumers de-duplicate by event id; so does this check.
    by_order: dict[str, list[OrderStatusChanged]] = defaultdict(list)
    seen: set[str] = set()
    for record in records:  # records of one order share a key, hence a partition: topic order is their order
        envelope = decode(record.value or b"", OrderStatusChanged)
        if envelope.id not in seen:
            seen.add(envelope.id)
            by_order[envelope.data.order_id].append(envelope.data)
    assert len(seen) == expected, f"{len(seen)} distinct changes, {len(records)} records"
    for order_id, changes in by_order.items():
        assert [c.sequence for c in changes] == list(range(1, EVENTS_PER_ORDER + 1)), order_id
        assert [c.to_status.code for c in changes] == [CYCLE[i % 4] for i in range(EVENTS_PER_ORDER)], order_id
    assert len(by_order) == ORDERS


async def test_a_batch_that_waited_for_an_order_lock_reads_the_statuses_committed_meanwhile(
    orders_app: FastAPI,
) -> None:
    """Read committed: a statement that waits for a row lock sees that row's new version but the other tables as
    they were when it began. Statuses read in the locking statement would be stale: a lost update."""
    pool = orders_app.state.runtime.pool
    key = ("demo", "lock-1")
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO orders (partner_id, order_id, customer_id, amount, currency, placed_at) "
            "VALUES ($1, $2, 'c-1', 10, 'RUB', $3)",
            *key,
            T0,
        )
        await conn.execute(
            "INSERT INTO order_statuses (partner_id, order_id, type, code, name, occurred_at, recorded_at, "
            "entered_at) VALUES ($1, $2, 'general', 'accepted', 'Accepted', $3, $3, $3)",
            *key,
            T0,
        )
    async with pool.acquire() as first, pool.acquire() as second:
        async with first.transaction():
            await load_orders(first, [key], lock=True)
            waiting = asyncio.create_task(_load_locked(second, key))
            await asyncio.sleep(0.3)  # the second one now waits for the lock
            assert not waiting.done()
            await first.execute(
                "INSERT INTO order_statuses (partner_id, order_id, type, code, name, occurred_at, recorded_at, "
                "entered_at) VALUES ($1, $2, 'payment', 'paid', 'Paid', $3, $3, $3)",
                *key,
                T0,
            )
            await first.execute(
                "UPDATE order_statuses SET code = 'agreed', name = 'Agreed' "
                "WHERE partner_id = $1 AND order_id = $2 AND type = 'general'",
                *key,
            )
        seen = await asyncio.wait_for(waiting, 10)
    assert {str(t): a.ref.code for t, a in seen.statuses.items()} == {"general": "agreed", "payment": "paid"}


async def _load_locked(conn: Any, key: tuple[str, str]) -> Any:
    async with conn.transaction():
        return (await load_orders(conn, [key], lock=True))[key]
