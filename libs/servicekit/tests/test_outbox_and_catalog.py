"""The outbox relay and the status catalog against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope
from contracts.status_events import StatusDefinitionUpserted
from contracts.statuses import StatusDefinition, StatusType
from contracts.topics import Topic, prefixed
from devtools.pytest_plugin import Infrastructure, read_topic, wait_until
from servicekit.catalog import StatusCatalog
from servicekit.db import apply_migrations, create_pool
from servicekit.outbox import (
    DELETE_PUBLISHED,
    ENQUEUE,
    RELAY_LOCKS,
    RUNNING,
    TAKE_BATCH,
    OutboxRecord,
    OutboxRelay,
    committed,
    enqueue,
    idempotent_producer,
    outbox_arguments,
    pending_count,
    record_for,
    unit_of_work,
)


def definition(code: str, version: int, partner: str = "acme", name: str = "Shipped") -> StatusDefinition:
    now = datetime.now(UTC)
    return StatusDefinition(
        partner_id=partner, code=code, name=name, type=StatusType.DELIVERY, include_in_analytics=False,
        version=version, created_at=now, updated_at=now,
    )  # fmt: skip


def upserted(d: StatusDefinition) -> Envelope[StatusDefinitionUpserted]:
    return Envelope.wrap(StatusDefinitionUpserted(definition=d), source="/tests", partner_id=d.partner_id)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database)
    pool = await create_pool(database)
    yield pool
    await pool.close()


@pytest.fixture
def topic(topic_prefix: str) -> str:
    return prefixed(Topic.STATUS_DEFINITIONS, topic_prefix)


async def add(pool: asyncpg.Pool, topic: str, *envelopes: Envelope[StatusDefinitionUpserted]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, [record_for(e, topic, e.key()) for e in envelopes])


async def test_a_rolled_back_change_leaves_nothing_to_publish(pool: asyncpg.Pool, topic: str) -> None:
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [record_for(upserted(definition("a", 1)), topic, b"acme:a")])
            raise RuntimeError("the state change failed")
    assert await pending_count(pool) == 0


async def test_relay_publishes_committed_records_once_in_order_per_key(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    events = [upserted(definition("shipped", v)) for v in (1, 2, 3)] + [upserted(definition("paid", 1))]
    for event in events:
        await add(pool, topic, event)
    relay = OutboxRelay(pool, producer, batch_size=2)
    batches = [await relay.publish_batch() for _ in range(3)]  # two per slot at most, and a key has one slot
    assert sum(batches) == 4 and batches[-1] == 0
    assert await pending_count(pool) == 0

    records = await read_topic(infrastructure.kafka_bootstrap, topic)
    assert sorted(r.value for r in records if r.value) == sorted(e.to_bytes() for e in events)
    shipped = [Envelope[StatusDefinitionUpserted].from_bytes(r.value) for r in records if r.key == b"acme:shipped"]
    assert [e.data.definition.version for e in shipped] == [1, 2, 3]
    assert dict(records[0].headers)["ce_type"] == b"status-definition.upserted.v1"


class CrashAfterPublish(OutboxRelay):
    """A relay that dies after the broker acknowledged the batch, before its delete committed."""

    async def _send_all(self, rows: list[asyncpg.Record]) -> None:
        await super()._send_all(rows)
        raise ConnectionResetError("killed between publish and commit")


async def test_relay_crash_between_publish_and_mark_republishes_and_readers_keep_one_version(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    event = upserted(definition("shipped", 1))
    await add(pool, topic, event)
    with pytest.raises(ConnectionResetError):
        await CrashAfterPublish(pool, producer).publish_batch()
    assert await pending_count(pool) == 1  # nothing was marked: the batch is still owed

    assert await OutboxRelay(pool, producer).publish_batch() == 1
    records = await read_topic(infrastructure.kafka_bootstrap, topic)
    assert [r.value for r in records] == [event.to_bytes(), event.to_bytes()]  # at least once: twice here

    catalog = StatusCatalog(infrastructure.kafka_bootstrap, topic)
    applied: list[StatusDefinition] = []
    catalog.on_change(applied.append)
    await catalog.start()
    try:
        await asyncio.wait_for(catalog.ready.wait(), 20)
        assert applied == [event.data.definition]  # the duplicate changed nothing
    finally:
        await catalog.stop()


async def test_relay_wakes_on_another_process_notify_and_runs_until_cancelled(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    relay = OutboxRelay(pool, producer, poll_interval_s=30)  # only a wake-up can make it publish in time
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.3)
        record = record_for(upserted(definition("shipped", 1)), topic, b"acme:shipped")
        async with pool.acquire() as conn, conn.transaction():  # as another instance writes: its own token
            await conn.fetchval(ENQUEUE, *outbox_arguments([record])[:-1], "another-process")
        await wait_until(lambda: _is(relay.published, 1), timeout_s=10, what="the relay to publish")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_commit_in_this_process_wakes_its_relay_in_process_not_through_postgresql(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    relay = OutboxRelay(pool, producer, poll_interval_s=30)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.3)
        await add(pool, topic, upserted(definition("shipped", 1)))  # enqueue alone: this process's NOTIFY only
        await asyncio.sleep(1)
        assert relay.published == 0  # its own writes' notification is not its wake-up
        async with unit_of_work(pool) as work:  # a unit of work wakes it when it commits
            work.publish(upserted(definition("paid", 1)), topic, b"acme:paid")
        await wait_until(lambda: _is(relay.published, 2), timeout_s=10, what="the relay to publish")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _is(value: int, expected: int) -> bool:
    return value == expected


async def test_catalog_catches_up_keeps_newest_versions_and_follows_changes(
    producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    empty = StatusCatalog(infrastructure.kafka_bootstrap, topic)
    await empty.start()
    await asyncio.wait_for(empty.ready.wait(), 20)  # an empty topic is caught up at once
    await empty.stop()

    for event in (
        upserted(definition("shipped", 1)),
        upserted(definition("shipped", 3, name="Отгружен")),
        upserted(definition("shipped", 2)),  # late and older: must not win
        upserted(definition("shipped", 1, partner="globex")),
    ):
        await producer.send_and_wait(topic, event.to_bytes(), key=event.key())

    catalog = StatusCatalog(infrastructure.kafka_bootstrap, topic)
    await catalog.start()
    try:
        await asyncio.wait_for(catalog.ready.wait(), 20)
        shipped = catalog.get("acme", "shipped")
        assert shipped is not None and (shipped.version, shipped.name) == (3, "Отгружен")
        assert [d.partner_id for d in catalog.of_partner("globex")] == ["globex"]
        assert catalog.get("globex", "paid") is None

        newer = upserted(definition("shipped", 4, name="В пути"))
        await producer.send_and_wait(topic, newer.to_bytes(), key=newer.key())
        await wait_until(
            lambda: _is(getattr(catalog.get("acme", "shipped"), "version", 0), 4),
            what="the catalog to follow",
        )
    finally:
        await catalog.stop()


async def test_sync_does_not_wait_behind_the_long_polling_fetch(topic: str, infrastructure: Infrastructure) -> None:
    """The broker answers one connection's requests in order: a ListOffsets sent on the reading consumer's connection
    waited behind its fetch, which long-polls an idle topic for fetch_max_wait_ms (every REST write of orders took
    half a second). With the fetch waiting 8 s, a sync must still answer well inside its 4 s bound."""
    catalog = StatusCatalog(infrastructure.kafka_bootstrap, topic, fetch_max_wait_ms=8000)
    await catalog.start()
    try:
        await asyncio.wait_for(catalog.ready.wait(), 20)
        await asyncio.sleep(0.5)  # the consumer's fetch is now parked on the broker
        assert all([await catalog.sync(timeout_s=4) for _ in range(3)])
    finally:
        await catalog.stop()


async def test_the_relay_takes_and_deletes_its_batch_without_walking_the_queue_whatever_the_plan(
    pool: asyncpg.Pool,
) -> None:
    """asyncpg prepares statements, so PostgreSQL soon runs a generic plan; an earlier `id IN (subquery)` form then
    scanned the whole outbox, dead rows included, for every batch. With statistics that say the queue is empty (as
    a queue analyzed between bursts does), a delete by id alone walked the whole of `outbox_by_slot` instead."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO outbox (topic, payload, slot) SELECT 't', '\\x00', g % 4 FROM generate_series(1, 5000) g;"
            "DELETE FROM outbox; ANALYZE outbox;"
            "INSERT INTO outbox (topic, payload, slot) SELECT 't', '\\x00', g % 4 FROM generate_series(1, 5000) g"
        )
        assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'outbox'") == 0
        batch = await conn.fetch(TAKE_BATCH, [0, 1, 2, 3], 500)
        ctids, ids = [row["ctid"] for row in batch], [row["id"] for row in batch]
        for mode in ("force_generic_plan", "force_custom_plan"):
            await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            take = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {TAKE_BATCH}", [0, 1, 2, 3], 500))
            assert "Seq Scan" not in take and "Index Cond: (slot = s.slot)" in take, f"{mode}:\n{take}"
            delete = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {DELETE_PUBLISHED}", ctids, ids))
            assert "Tid Scan" in delete and "Index" not in delete, f"{mode}:\n{delete}"


async def test_the_relay_deletes_only_the_rows_it_published(pool: asyncpg.Pool) -> None:
    """The delete finds rows by address; the ids guard it, so a row that moved (VACUUM FULL) is never mistaken."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO outbox (topic, payload) SELECT 't', '\\x00' FROM generate_series(1, 3)")
        batch = await conn.fetch(TAKE_BATCH, [0], 500)
        ctids, ids = [row["ctid"] for row in batch], [row["id"] for row in batch]
        assert await conn.execute(DELETE_PUBLISHED, ctids, [i + 1000 for i in ids]) == "DELETE 0"
        assert await conn.execute(DELETE_PUBLISHED, ctids[:2], ids) == "DELETE 2"
        left = await conn.fetch("SELECT id FROM outbox WHERE id = ANY($1::bigint[]) ORDER BY id", ids)
        assert [r["id"] for r in left] == ids[2:]


async def test_a_full_relay_batch_goes_out_in_one_produce_request(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    # 300 records of about 1 KB for one key (one partition): with aiokafka's default 16 KB batches they made
    # a queue of about 20 requests, each sent after the previous one was acknowledged.
    described = definition("shipped", 1).model_copy(update={"description": "x" * 600})
    events = [upserted(described.model_copy(update={"version": v})) for v in range(1, 302)]
    relay = OutboxRelay(pool, producer, batch_size=500)
    await add(pool, topic, events[0])
    assert await relay.publish_batch() == 1  # the producer learns the topic's partitions
    await add(pool, topic, *events[1:])
    requests: list[str] = []
    send = producer.client.send

    async def counting_send(node_id: int, request: object, **kwargs: object) -> object:
        requests.append(type(request).__name__)
        return await send(node_id, request, **kwargs)

    producer.client.send = counting_send
    assert await relay.publish_batch() == 300
    assert sum(1 for name in requests if name.startswith("ProduceRequest")) == 1
    records = await read_topic(infrastructure.kafka_bootstrap, topic)
    assert [r.value for r in records] == [e.to_bytes() for e in events]


class CountingSends(OutboxRelay):
    sends = 0

    async def _send_all(self, rows: list[asyncpg.Record]) -> None:
        self.sends += 1
        await super()._send_all(rows)


async def test_a_round_over_every_slot_is_one_read_one_send_and_one_delete(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    """One commit's rows spread over the slots by key; read slot by slot, they went out as a batch per slot."""
    events = [upserted(definition(f"s{n}", 1)) for n in range(12)]
    await add(pool, topic, *events)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(DISTINCT slot) FROM outbox") > 1
    relay = CountingSends(pool, producer, batch_size=500)
    assert await relay.publish_batch() == len(events)
    assert relay.sends == 1
    assert await pending_count(pool) == 0
    records = await read_topic(infrastructure.kafka_bootstrap, topic)
    assert sorted(r.value for r in records if r.value) == sorted(e.to_bytes() for e in events)


async def test_the_relay_partitions_as_send_does_and_splits_what_one_produce_batch_cannot_hold(
    pool: asyncpg.Pool, topic: str, infrastructure: Infrastructure
) -> None:
    # Batches of 4 KB hold about three of these records: each partition's records need many batches, which
    # must keep their order, and every key must land where `send` (and so a DLQ replay) puts it.
    small = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap, enable_idempotence=True,
                             max_batch_size=4096)  # fmt: skip
    await small.start()
    try:
        codes = [f"s{n}" for n in range(8)]
        events = [
            upserted(definition(code, version).model_copy(update={"description": "x" * 600}))
            for version in range(1, 16)
            for code in codes
        ]
        await add(pool, topic, *events)
        assert await OutboxRelay(pool, small, batch_size=500).publish_batch() == len(events)

        records = await read_topic(infrastructure.kafka_bootstrap, topic)
        assert sorted(r.value for r in records if r.value) == sorted(e.to_bytes() for e in events)
        for code in codes:
            key = f"acme:{code}".encode()
            mine = [r for r in records if r.key == key]
            versions = [
                Envelope[StatusDefinitionUpserted].from_bytes(r.value or b"").data.definition.version for r in mine
            ]
            assert versions == list(range(1, 16))
            probe = await small.send_and_wait(topic, b"probe", key=key)
            assert {r.partition for r in mine} == {probe.partition}
    finally:
        await small.stop()


class HeldSend(OutboxRelay):
    """A relay whose sends wait for `release`, so a test can look at the database while one is in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sending = asyncio.Event()
        self.release = asyncio.Event()

    async def _send_all(self, rows: list[asyncpg.Record]) -> None:
        self.sending.set()
        await self.release.wait()
        await super()._send_all(rows)


async def test_no_transaction_stays_open_while_the_relay_waits_for_the_broker(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str
) -> None:
    # An open transaction holds back vacuum everywhere in the database: with the broker away, a relay waiting
    # out its request timeout inside one would do so for as long as the outage lasts.
    await add(pool, topic, upserted(definition("shipped", 1)))
    relay = HeldSend(pool, producer)
    publishing = asyncio.create_task(relay.publish_batch())
    try:
        await asyncio.wait_for(relay.sending.wait(), 10)
        async with pool.acquire() as conn:
            open_transactions = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND xact_start IS NOT NULL"
            )
        assert open_transactions == 0
    finally:
        relay.release.set()
    assert await publishing == 1
    assert await pending_count(pool) == 0


async def _relay_lock_holder(pool: asyncpg.Pool) -> int | None:
    """The backend of a relay holding a slot (any slot)."""
    async with pool.acquire() as conn:
        pid: int | None = await conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid = $1::int::oid AND objid <> $2::int::oid "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            RELAY_LOCKS,
            RUNNING,
        )
        return pid


@asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)


async def test_one_relay_publishes_a_slot_at_a_time_and_another_takes_over_when_it_stops(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str
) -> None:
    first = HeldSend(pool, producer, poll_interval_s=0.2)
    second = OutboxRelay(pool, producer)
    async with running(first):
        await add(pool, topic, upserted(definition("shipped", 1)))
        await asyncio.wait_for(first.sending.wait(), 10)  # the first relay holds the lock, mid-batch
        assert await second.publish_batch() == 0  # the rows are pending, but their slot is the first relay's
        assert await pending_count(pool) == 1
        first.release.set()
        await wait_until(lambda: _is(first.published, 1), what="the first relay to publish")
    assert await _relay_lock_holder(pool) is None  # stopping gave the slots back
    await add(pool, topic, upserted(definition("shipped", 2)))
    assert await second.publish_batch() == 1


async def test_a_relay_whose_connection_dies_reconnects_and_carries_on(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str
) -> None:
    relay = OutboxRelay(pool, producer, poll_interval_s=0.2)
    async with running(relay):
        await add(pool, topic, upserted(definition("shipped", 1)))
        await wait_until(lambda: _is(relay.published, 1), what="the relay to publish")
        holder = await _relay_lock_holder(pool)
        assert holder is not None
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", holder)
        await add(pool, topic, upserted(definition("shipped", 2)))
        await wait_until(lambda: _is(relay.published, 2), what="the relay to publish after reconnecting")
        assert await _relay_lock_holder(pool) not in (None, holder)


async def test_writes_notify_other_relays_unless_this_process_relay_holds_every_slot(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str
) -> None:
    record = record_for(upserted(definition("shipped", 1)), topic, b"acme:shipped")

    async def notified() -> int:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(ENQUEUE, *outbox_arguments([record]))
        assert row is not None
        return int(row[1])  # the NOTIFYs the write sent

    assert await notified() == 1  # no relay here: another instance's may publish it
    relay = OutboxRelay(pool, producer, poll_interval_s=0.1)
    async with running(relay):
        await wait_until(lambda: _is(relay.holds_every_slot, True), what="the relay to hold every slot")
        assert await notified() == 0  # nobody else has a slot to publish
    assert await notified() == 1


class CountedRounds(OutboxRelay):
    """A relay that counts its rounds (each a read of the outbox, and a recount of the relays now and then)."""

    rounds = 0

    async def _publish_round(self, session: Any) -> bool:
        self.rounds += 1
        return await super()._publish_round(session)


async def test_an_idle_relay_polls_less_and_less_often_and_still_finds_a_row_nobody_announced(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    """At rest every service's relay polled its outbox every poll interval (two statements each time): most of what a
    platform with no traffic cost PostgreSQL. While nothing wakes it and its polls find nothing, the pause doubles up
    to `idle_poll_s`; a row whose wake-up was lost is still published within that, and the pause starts again from
    the poll interval."""
    relay = CountedRounds(pool, producer, poll_interval_s=0.05, idle_poll_s=0.8)
    async with running(relay):
        await asyncio.sleep(3)  # 60 polls at the poll interval; 0.05 + 0.1 + 0.2 + 0.4 + 0.8... about 7 with the pause
        assert relay.rounds <= 9, relay.rounds
        event = upserted(definition("shipped", 1))
        async with pool.acquire() as conn:  # a write whose wake-up was lost: no committed(), no NOTIFY
            await conn.execute(
                "INSERT INTO outbox (topic, key, payload, headers) VALUES ($1, $2, $3, '{}')",
                topic,
                event.key(),
                event.to_bytes(),
            )
        written = time.monotonic()
        await wait_until(lambda: _is(relay.published, 1), what="the relay's poll to find the row")
        assert time.monotonic() - written < 0.8 + 0.5
        rounds = relay.rounds
        await asyncio.sleep(0.3)  # the rows found: polling at the poll interval again for a while
        assert relay.rounds - rounds >= 2
    assert [r.value for r in await read_topic(infrastructure.kafka_bootstrap, topic)] == [event.to_bytes()]


async def test_a_watch_returns_once_the_relay_of_this_process_published_the_rows(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    relay = OutboxRelay(pool, producer, poll_interval_s=30)  # woken by the notification, not by polling
    event = upserted(definition("shipped", 1))
    async with running(relay):
        with relay.watch() as published:
            async with pool.acquire() as conn, conn.transaction():
                published.add(await enqueue(conn, [record_for(event, topic, event.key())]))
            committed()  # as every writer does after its commit (`unit_of_work` does)
            assert await published.wait(10)
        assert await pending_count(pool) == 0  # no sleep: gone from the outbox means acknowledged
        records = await read_topic(infrastructure.kafka_bootstrap, topic)
        assert [r.value for r in records] == [event.to_bytes()]


async def test_a_watch_sees_rows_published_by_another_instances_relay_and_gives_up_when_none_does(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str
) -> None:
    idle = OutboxRelay(pool, producer)  # this instance's relay, which never gets the lock
    other = HeldSend(pool, producer, poll_interval_s=0.2)  # another instance's, holding the lock
    async with running(other):
        with idle.watch() as published:
            async with pool.acquire() as conn, conn.transaction():
                published.add(await enqueue(conn, [record_for(upserted(definition("shipped", 1)), topic, b"acme:s")]))
            await asyncio.wait_for(other.sending.wait(), 10)
            assert not await published.wait(0.3)  # held mid-send: not acknowledged, so not published
            other.release.set()
            assert await published.wait(10)
        assert other.published == 1 and idle.published == 0


async def test_the_catalog_syncs_to_the_end_of_the_topic_before_it_answers(
    producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    catalog = StatusCatalog(infrastructure.kafka_bootstrap, topic)
    await catalog.start()
    try:
        await asyncio.wait_for(catalog.ready.wait(), 20)
        for version in range(1, 6):
            event = upserted(definition(f"s{version}", 1))
            await producer.send_and_wait(topic, event.to_bytes(), key=event.key())
            assert await catalog.sync(10)  # no sleep: written, then read at once
            assert catalog.get("acme", f"s{version}") is not None
        assert await catalog.sync(10)  # caught up already: answers at once
    finally:
        await catalog.stop()


async def test_a_catalog_whose_consumer_fails_is_not_ready_until_it_recovered_by_itself(
    producer: AIOKafkaProducer, topic: str, infrastructure: Infrastructure
) -> None:
    failing = True

    def listener(applied: StatusDefinition) -> None:
        if failing and applied.code == "boom":
            raise RuntimeError("the listener failed")

    catalog = StatusCatalog(infrastructure.kafka_bootstrap, topic, restart_delays_s=(0.1, 0.5))
    catalog.on_change(listener)
    await catalog.start()
    try:
        await asyncio.wait_for(catalog.ready.wait(), 20)
        event = upserted(definition("boom", 1))
        await producer.send_and_wait(topic, event.to_bytes(), key=event.key())

        async def not_ready() -> bool:
            return not catalog.ready.is_set()

        await wait_until(not_ready, what="the catalog to report not ready")
        await asyncio.sleep(1.0)  # restarted a few times meanwhile: it keeps failing on the same record
        assert not catalog.ready.is_set() and catalog.get("acme", "boom") is None
        failing = False
        await asyncio.wait_for(catalog.ready.wait(), 20)
        assert catalog.get("acme", "boom") is not None  # read again after the restart, not skipped
        later = upserted(definition("later", 1))
        await producer.send_and_wait(topic, later.to_bytes(), key=later.key())
        assert await catalog.sync(10) and catalog.get("acme", "later") is not None
    finally:
        await catalog.stop()


async def test_a_keys_rows_share_one_slot_and_the_keys_spread_over_every_slot(database: str, topic: str) -> None:
    await asyncio.to_thread(apply_migrations, database)
    for slots in (4, 1):
        pool = await create_pool(database, outbox_slots=slots)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("DELETE FROM outbox")
                keys: list[bytes | None] = [f"key-{n}".encode() for n in range(40)]
                await enqueue(conn, [OutboxRecord(topic, key, b"v", {}) for key in [*keys, *keys, None]])
                rows = await conn.fetch("SELECT key, array_agg(DISTINCT slot) AS slots FROM outbox GROUP BY key")
        finally:
            await pool.close()
        assert all(len(row["slots"]) == 1 for row in rows), rows  # every row of a key in the same slot
        assert {row["slots"][0] for row in rows} == set(range(slots))
        assert next(row["slots"] for row in rows if row["key"] is None) == [0]


async def test_two_relays_split_the_slots_and_a_slot_moves_when_its_holder_stops(
    pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    first = OutboxRelay(pool, producer, poll_interval_s=0.1)
    second = OutboxRelay(pool, producer, poll_interval_s=0.1)

    async def holds(relay: OutboxRelay, count: int) -> bool:
        return len(relay.held) == count

    async with running(first):
        await wait_until(lambda: holds(first, 4), what="the only relay to hold every slot")
        async with running(second):
            await wait_until(lambda: holds(second, 2), what="the second relay to take its share")
            await wait_until(lambda: holds(first, 2), what="the first relay to keep its share")
            assert set(first.held) | set(second.held) == {0, 1, 2, 3}
        await wait_until(lambda: holds(first, 4), what="the first relay to take over the stopped relay's slots")


class DiesMidBatch(OutboxRelay):
    """A relay whose first batch is acknowledged by the broker and then never deleted: the test cancels it there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acknowledged = asyncio.Event()

    async def _send_all(self, rows: list[asyncpg.Record]) -> None:
        await super()._send_all(rows)
        if not self.acknowledged.is_set():
            self.acknowledged.set()
            await asyncio.Event().wait()


@asynccontextmanager
async def relay_instance(
    database: str, infrastructure: Infrastructure, relay_class: type[OutboxRelay] = OutboxRelay, **kwargs: Any
) -> AsyncIterator[tuple[OutboxRelay, asyncio.Task[None]]]:
    """A relay as another service instance runs it: its own pool and producer, its task for the test to kill."""
    pool = await create_pool(database, 1, 2)
    producer = idempotent_producer(infrastructure.kafka_bootstrap, "tests")
    await producer.start()
    relay = relay_class(pool, producer, **kwargs)
    task = asyncio.create_task(relay.run())
    try:
        yield relay, task
    finally:
        relay.stop()
        await asyncio.gather(asyncio.wait_for(task, 10), return_exceptions=True)
        await producer.stop()
        await pool.close()


async def test_concurrent_writers_and_relays_keep_every_keys_commit_order_through_a_killed_relay(
    pool: asyncpg.Pool, database: str, topic: str, infrastructure: Infrastructure
) -> None:
    keys = [f"key-{n}".encode() for n in range(40)]
    per_key = 30
    killed = asyncio.Event()

    async def writer(mine: list[bytes]) -> None:
        # Each transaction commits one event per key, in sequence: a key's commit order is its sequence.
        for sequence in range(per_key):
            if sequence == per_key // 3:
                await killed.wait()  # the rest comes while the other relays take over
            async with pool.acquire() as conn, conn.transaction():
                await enqueue(conn, [OutboxRecord(topic, key, b"%s:%d" % (key, sequence), {}) for key in mine])
            await asyncio.sleep(0.005)

    options: dict[str, Any] = {"batch_size": 25, "poll_interval_s": 0.1}
    async with relay_instance(database, infrastructure, DiesMidBatch, **options) as (doomed, doomed_task):
        await wait_until(lambda: _is(len(doomed.held), 4), what="the first relay to hold every slot")
        writers = [asyncio.create_task(writer(keys[n::8])) for n in range(8)]
        async with (
            relay_instance(database, infrastructure, **options) as (second, _),
            relay_instance(database, infrastructure, **options) as (third, _),
        ):
            assert isinstance(doomed, DiesMidBatch)
            await asyncio.wait_for(doomed.acknowledged.wait(), 10)  # published, not deleted: killed right there
            doomed_task.cancel()
            killed.set()
            await wait_until(lambda: _is(second.published + third.published > 300, True), what="the others to publish")
            holder = await _relay_lock_holder(pool)  # and one of them loses its connection mid-stream
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", holder)
            await asyncio.gather(*writers)
            await wait_until(lambda: _outbox_empty(pool), timeout_s=30, what="the outbox to drain")

    records = await read_topic(infrastructure.kafka_bootstrap, topic)
    values = [r.value or b"" for r in records]
    # Published twice: the killed relay's batch, and perhaps the batch of the connection terminated mid-send; any
    # more would mean two relays publishing one slot at once.
    assert 1 <= len(values) - len(set(values)) <= 2 * options["batch_size"]
    for key in keys:
        mine = [v for r, v in zip(records, values, strict=True) if r.key == key]  # one partition: offset order
        first_seen = list(dict.fromkeys(mine))  # what a consumer that drops duplicates applies
        assert first_seen == [b"%s:%d" % (key, n) for n in range(per_key)], key


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return await pending_count(pool) == 0


async def test_four_slots_against_one_with_four_relays(
    database: str, topic: str, infrastructure: Infrastructure, summary: Callable[[str], None]
) -> None:
    """A measurement, not an assertion: the same backlog drained by four relays, over one slot and over four."""
    await asyncio.to_thread(apply_migrations, database)
    figures: list[str] = []
    for slots in (1, 4):
        writer = await create_pool(database, outbox_slots=slots)
        try:
            async with writer.acquire() as conn, conn.transaction():
                for start in range(0, 8000, 1000):
                    keys = [b"key-%d" % (n % 400) for n in range(start, start + 1000)]
                    await enqueue(conn, [OutboxRecord(topic, key, b"x" * 200, {}) for key in keys])
            started = time.perf_counter()
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(4):
                    await stack.enter_async_context(
                        relay_instance(database, infrastructure, batch_size=100, poll_interval_s=0.1)
                    )
                await wait_until(functools.partial(_outbox_empty, writer), timeout_s=120, what="the backlog to drain")
                elapsed = time.perf_counter() - started
        finally:
            await writer.close()
        figures.append(f"{slots} slot(s): {8000 / elapsed:,.0f} records/s")
    summary(f"outbox relay, 8000 records, 4 relays, batches of 100: {'; '.join(figures)}")
