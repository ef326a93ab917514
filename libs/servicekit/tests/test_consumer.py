"""The batch-consumer plumbing against the real broker and database: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaClient, AIOKafkaProducer, ConsumerRecord
from faststream.kafka import KafkaBroker

from contracts.envelope import Envelope
from contracts.identity import ApiClientRevoked
from contracts.topics import Topic, prefixed
from devtools.pytest_plugin import Infrastructure, committed_offsets, read_topic, wait_until
from servicekit import consumer as consumer_module
from servicekit.app import make_broker
from servicekit.catalog import StatusCatalog
from servicekit.consumer import DeadLetters, Record, Rejected, batch_subscriber, claim_new
from servicekit.db import apply_migrations, create_pool
from servicekit.jwks import RevokedClients
from servicekit.settings import Batching, ServiceSettings


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await asyncio.to_thread(apply_migrations, database)
    pool = await create_pool(database)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE effects (event_id text PRIMARY KEY, value int NOT NULL)")
    yield pool
    await pool.close()


class Processor:
    """Applies {"id", "value"} records once each; fails in the ways a real consumer meets."""

    def __init__(self, pool: asyncpg.Pool, dead_letters: DeadLetters) -> None:
        self.pool = pool
        self.dead_letters = dead_letters
        self.outages_left = 2  # the database "goes away" twice

    async def __call__(self, records: Sequence[Record]) -> None:
        if self.outages_left:
            self.outages_left -= 1
            raise ConnectionRefusedError("database restarting")
        good, rejected = [], []
        for record in records:
            try:
                good.append(json.loads(record.value or b""))
            except ValueError as exc:
                rejected.append(Rejected(record, "malformed_json", str(exc)))
        if any(item.get("value") == "boom" for item in good):
            raise RuntimeError("a bug this record triggers")
        await self.dead_letters.publish(rejected)
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await claim_new(conn, "test", [item["id"] for item in good])
            await conn.executemany(
                "INSERT INTO effects VALUES ($1, $2)", [(i["id"], i["value"]) for i in good if i["id"] in fresh]
            )


async def test_batches_commit_after_work_and_isolate_poison(
    infrastructure: Infrastructure, topic_prefix: str, pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    topic, dlq = prefixed(Topic.ORDERS_INBOUND, topic_prefix), prefixed(Topic.ORDERS_INBOUND_DLQ, topic_prefix)
    values: list[bytes] = [json.dumps({"id": f"e{i}", "value": i}).encode() for i in range(50)]
    values += [values[7], values[8]]  # redelivered duplicates
    values += [b"{not json", json.dumps({"id": "bad", "value": "boom"}).encode()]
    for n, value in enumerate(values):
        await producer.send_and_wait(topic, value, key=f"k{n % 7}".encode())

    group = f"g-{uuid.uuid4().hex[:8]}"
    broker = KafkaBroker(infrastructure.kafka_bootstrap)
    processor = Processor(pool, DeadLetters(producer, dlq, group))
    batch_subscriber(broker, topic, group, processor, processor.dead_letters, max_records=20)

    async def all_committed() -> bool:
        return sum((await committed_offsets(infrastructure.kafka_bootstrap, group)).values()) == len(values)

    async with broker:
        await broker.start()
        await wait_until(all_committed, timeout_s=60, what="every record to be committed")

    async with pool.acquire() as conn:
        effects = await conn.fetch("SELECT event_id, value FROM effects ORDER BY value")
    assert [r["value"] for r in effects] == list(range(50))  # each once, none lost, outages survived
    dead = await read_topic(infrastructure.kafka_bootstrap, dlq)
    reasons = sorted(dict(r.headers)["dlq-reason"].decode() for r in dead)
    assert reasons == ["malformed_json", "processing_failed"]
    poison = next(r for r in dead if dict(r.headers)["dlq-reason"] == b"processing_failed")
    headers = {k: v.decode() for k, v in poison.headers}
    assert headers["dlq-original-topic"] == topic and "RuntimeError" in headers["dlq-error"]
    assert int(headers["dlq-original-offset"]) >= 0 and headers["dlq-consumer-group"] == group


async def test_an_idle_consumer_waits_for_records_instead_of_polling(
    infrastructure: Infrastructure, topic_prefix: str, producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastStream's own batch loop polls and sleeps: hundreds of wake-ups a second when idle, or a record waits
    out the sleep. `batch_subscriber` waits in the poll, which returns as soon as a record arrives."""
    monkeypatch.setattr(consumer_module, "IDLE_POLL_MS", 5000)
    topic = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    broker = KafkaBroker(infrastructure.kafka_bootstrap)
    dead_letters = DeadLetters(producer, f"{topic}.dlq", "g")
    polls, handled = 0, asyncio.Queue[float]()

    async def counted_poll(consumer: Any) -> Any:
        nonlocal polls
        polls += 1
        return await waiting_poll(consumer)

    async def process(records: Sequence[Record]) -> None:
        for _ in records:
            handled.put_nowait(time.monotonic())

    subscriber = batch_subscriber(broker, topic, f"g-{uuid.uuid4().hex[:8]}", process, dead_letters)
    waiting_poll = subscriber.get_msg
    subscriber.get_msg = counted_poll
    async with broker:
        await broker.start()
        await producer.send_and_wait(topic, b"{}", key=b"k")
        await asyncio.wait_for(handled.get(), timeout=30)  # assigned and consuming
        polls = 0
        await asyncio.sleep(2)
        idle_polls = polls
        sent = time.monotonic()
        await producer.send_and_wait(topic, b"{}", key=b"k")
        latency = await asyncio.wait_for(handled.get(), timeout=30) - sent
    assert idle_polls <= 2  # FastStream's loop: one poll per 2 x batch_timeout_ms
    assert latency < 2.0  # well under the 5 s poll: the poll returned when the record came


def _thread_wake_ups() -> int:
    """Voluntary context switches of this thread (the event loop's) so far: each is a sleep ended by a wake-up. The
    involuntary ones are the thread preempted while it ran, which a busy machine adds (another test worker): counting
    them, a two-worker run saw 27 where these consumers wake 8-9 times, and aiokafka's defaults 54."""
    status = Path(f"/proc/self/task/{threading.get_native_id()}/status").read_text().splitlines()
    return sum(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt"))


async def test_idle_consumers_ask_the_broker_for_records_every_few_seconds_and_still_get_them_at_once(
    infrastructure: Infrastructure, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every service runs a batch consumer per topic, follows the revocations and (orders, campaigns) keeps the status
    catalog: at rest, with aiokafka's defaults, each of them fetched every 500 ms and its fetch routine woke every
    200 ms (docs/performance.md, issue 34). They wait on the broker instead (`servicekit.kafka.IDLE_CONSUMER`), which
    answers the moment a record arrives.

    Measured on an event loop and a thread of their own: the session's loop also runs whatever earlier tests of the
    same process left behind (under pytest-xdist, a worker's earlier files), which would count as these consumers'."""
    fetches, measured = 0, threading.Event()
    send = AIOKafkaClient.send

    async def counted(client: AIOKafkaClient, node_id: int, request: Any, **kwargs: Any) -> Any:
        nonlocal fetches
        if measured.is_set() and threading.get_native_id() == scenario_thread:
            fetches += type(request).__name__.startswith("FetchRequest")
        return await send(client, node_id, request, **kwargs)

    monkeypatch.setattr(AIOKafkaClient, "send", counted)
    scenario_thread = 0

    async def idle_consumers() -> tuple[int, float]:
        nonlocal scenario_thread
        scenario_thread = threading.get_native_id()
        bootstrap = infrastructure.kafka_bootstrap
        inbound = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
        revocations = prefixed(Topic.CLIENT_REVOCATIONS, topic_prefix)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        catalog = StatusCatalog(bootstrap, prefixed(Topic.STATUS_DEFINITIONS, topic_prefix))
        revoked = RevokedClients(bootstrap, revocations)
        broker = KafkaBroker(bootstrap)
        handled = asyncio.Queue[float]()

        async def process(records: Sequence[Record]) -> None:
            for _ in records:
                handled.put_nowait(time.monotonic())

        await producer.start()
        batch_subscriber(broker, inbound, f"g-{uuid.uuid4().hex[:8]}", process, DeadLetters(producer, "dlq", "g"))
        async with broker:
            await broker.start()
            await catalog.start()
            await revoked.start()
            try:
                # Assigned and consuming every partition: under load a partition's first offset lookup can fail
                # (NotLeaderForPartition on a topic just made) and be retried while a fetch waits without it.
                partitions = sorted(await producer.partitions_for(inbound))
                for partition in partitions:
                    await producer.send_and_wait(inbound, b"{}", key=b"k", partition=partition)
                for _ in partitions:
                    await asyncio.wait_for(handled.get(), timeout=30)
                await asyncio.wait_for(asyncio.gather(catalog.ready.wait(), revoked.ready.wait()), timeout=30)
                await asyncio.sleep(1)
                measured.set()
                wake_ups = _thread_wake_ups()
                await asyncio.sleep(4)
                idle_wake_ups = _thread_wake_ups() - wake_ups
                measured.clear()
                sent = time.monotonic()
                await producer.send_and_wait(inbound, b"{}", key=b"k")
                latency = await asyncio.wait_for(handled.get(), timeout=30) - sent
                await producer.send_and_wait(revocations, _revocation("acme", CLIENT), key=CLIENT.encode())
                revoked_now = functools.partial(_is, True)
                await wait_until(
                    lambda: revoked_now(revoked.is_revoked("acme", CLIENT)), what="the revocation", timeout_s=1
                )
            finally:
                await revoked.stop()
                await catalog.stop()
                await producer.stop()
        return idle_wake_ups, latency

    idle_wake_ups, latency = await asyncio.to_thread(asyncio.run, idle_consumers())
    assert fetches <= 3 * 2, fetches  # three consumers, each a fetch per 500 ms: 24
    assert idle_wake_ups <= 4 * 5, idle_wake_ups  # and each fetch routine every 200 ms: 60 more
    assert latency < 1.0  # the broker answered the waiting fetch when the record came


CLIENT = "cli_" + "a" * 24


def _revocation(partner: str, client: str) -> bytes:
    revoked = ApiClientRevoked(partner_id=partner, client_id=client, revoked_at=datetime.now(UTC))
    return Envelope.wrap(revoked, source="/tests", partner_id=partner).to_bytes()


async def _is(value: object, expected: object) -> bool:
    return value == expected


async def test_offsets_are_committed_after_the_work_at_most_once_per_interval_and_at_stop(
    infrastructure: Infrastructure, topic_prefix: str, producer: AIOKafkaProducer
) -> None:
    topic = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    group = f"g-{uuid.uuid4().hex[:8]}"
    broker = KafkaBroker(infrastructure.kafka_bootstrap)
    processed = asyncio.Queue[bytes]()

    async def process(records: Sequence[Record]) -> None:
        for record in records:
            processed.put_nowait(record.value or b"")

    async def committed() -> int:
        return sum((await committed_offsets(infrastructure.kafka_bootstrap, group)).values())

    dead_letters = DeadLetters(producer, f"{topic}.dlq", group)
    batch_subscriber(broker, topic, group, process, dead_letters, batching=Batching(commit_interval_s=60))
    async with broker:
        await broker.start()
        for n in range(5):  # one record at a time: five batches
            await producer.send_and_wait(topic, str(n).encode(), key=b"k")
            assert await asyncio.wait_for(processed.get(), timeout=30) == str(n).encode()
        await asyncio.sleep(0.5)
        assert await committed() == 1  # the first batch at once, the next four wait for the interval...
    assert await committed() == 5  # ...or the stop


@contextlib.asynccontextmanager
async def consuming(
    infrastructure: Infrastructure,
    topic: str,
    producer: AIOKafkaProducer,
    batching: Batching = Batching(),
    busy_on: bytes | None = None,
) -> AsyncIterator[asyncio.Queue[list[bytes]]]:
    """A batch subscriber of `topic` that puts each batch's values on the queue it yields, once it consumes (a
    warm-up record went through); a batch of `busy_on` alone keeps its handler busy for half a second."""
    broker = KafkaBroker(infrastructure.kafka_bootstrap)
    batches = asyncio.Queue[list[bytes]]()

    async def process(records: Sequence[Record]) -> None:
        values = [record.value or b"" for record in records]
        if busy_on is not None and values == [busy_on]:
            await asyncio.sleep(0.5)  # a busy handler: the records fetched meanwhile wait in the fetcher
        batches.put_nowait(values)

    group = f"g-{uuid.uuid4().hex[:8]}"
    batch_subscriber(broker, topic, group, process, DeadLetters(producer, f"{topic}.dlq", "g"), batching=batching)
    async with broker:
        await broker.start()
        await producer.send_and_wait(topic, b"warm-up", key=b"k")
        assert await next_batch(batches) == [b"warm-up"]  # consuming
        yield batches


async def next_batch(batches: asyncio.Queue[list[bytes]]) -> list[bytes]:
    return await asyncio.wait_for(batches.get(), timeout=30)


async def test_a_small_batch_lingers_for_more_records(
    infrastructure: Infrastructure, topic_prefix: str, producer: AIOKafkaProducer
) -> None:
    topic = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    async with consuming(infrastructure, topic, producer, Batching(linger_ms=3000)) as batches:
        await producer.send_and_wait(topic, b"1", key=b"k")
        await asyncio.sleep(0.5)  # well inside the linger
        await producer.send_and_wait(topic, b"2", key=b"k")
        assert await next_batch(batches) == [b"1", b"2"]  # without the linger: [b"1"]


async def test_a_batch_takes_every_record_that_arrives_during_its_linger(
    infrastructure: Infrastructure, topic_prefix: str, producer: AIOKafkaProducer
) -> None:
    """Records of one partition arriving one after another during the linger, each in a fetch response of its own:
    one poll at the end of the linger took only the first response ([1, 2]); the rest waited for the next batch."""
    topic = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    async with consuming(infrastructure, topic, producer, Batching(linger_ms=3000)) as batches:
        for value in (b"1", b"2", b"3", b"4"):
            await producer.send_and_wait(topic, value, key=b"k")
            await asyncio.sleep(0.4)
        assert await next_batch(batches) == [b"1", b"2", b"3", b"4"]


async def test_a_lone_record_does_not_linger_when_the_linger_starts_from_more(
    infrastructure: Infrastructure, topic_prefix: str, producer: AIOKafkaProducer
) -> None:
    topic = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    batching = Batching(linger_ms=3000, linger_from_records=2)
    async with consuming(infrastructure, topic, producer, batching) as batches:
        sent = time.monotonic()
        await producer.send_and_wait(topic, b"1", key=b"k")
        assert await next_batch(batches) == [b"1"]
        assert time.monotonic() - sent < 1.5  # not the 3 s linger


async def test_a_record_does_not_wait_behind_a_fetch_of_quiet_partitions(
    infrastructure: Infrastructure, topic_prefix: str, producer: AIOKafkaProducer
) -> None:
    """Records fetched while the handler is busy wait for it; aiokafka then fetched the other, quiet partitions
    alone, and the busy partition's next record waited for that fetch's five seconds (servicekit.kafka)."""
    topic = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    async with consuming(infrastructure, topic, producer, busy_on=b"slow") as batches:
        await producer.send_and_wait(topic, b"slow", partition=0)
        await asyncio.sleep(0.1)
        await producer.send_and_wait(topic, b"fetched meanwhile", partition=0)
        assert await next_batch(batches) == [b"slow"]
        assert await next_batch(batches) == [b"fetched meanwhile"]
        sent = time.monotonic()
        await producer.send_and_wait(topic, b"next", partition=0)
        assert await next_batch(batches) == [b"next"]
        assert time.monotonic() - sent < 1.5  # without servicekit.kafka.fetch_whole_assignment: about 4.5 s


async def test_a_handled_batch_is_not_left_in_a_reference_cycle(
    infrastructure: Infrastructure, topic_prefix: str, producer: AIOKafkaProducer
) -> None:
    """A batch's records must go by reference counting once it is done: while a reference cycle held them, a
    service kept whole batches until a full collection, and collecting less often cost memory."""
    topic = prefixed(Topic.ORDERS_INBOUND, topic_prefix)
    handled: list[int] = []

    async def process(records: Sequence[Record]) -> None:
        handled.append(len(records))

    # The services' broker, middlewares included: none of them may decode the message again afterwards.
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=infrastructure.kafka_bootstrap))
    batch_subscriber(broker, topic, f"g-{uuid.uuid4().hex[:8]}", process, DeadLetters(producer, topic, "g"))
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept in gc.garbage, to be looked at
    try:
        async with broker:
            await broker.start()
            for n in range(1, 4):
                await producer.send_and_wait(topic, b"{}", key=f"k{n}".encode())
                await wait_until(functools.partial(_is_handled, handled, n), timeout_s=30, what="the record handled")
        gc.collect()
        in_cycles = [o for o in gc.garbage if isinstance(o, ConsumerRecord) and o.topic == topic]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert in_cycles == []


async def _is_handled(handled: list[int], records: int) -> bool:
    return sum(handled) == records
