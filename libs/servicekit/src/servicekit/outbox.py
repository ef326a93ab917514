"""Transactional outbox: events are written beside the state change and published by a relay.

`enqueue` runs inside the caller's transaction, so an event exists exactly when its state change
committed. `OutboxRelay` publishes pending rows in id order with an idempotent producer
(`acks=all`) and deletes them only after the broker acknowledged every record of the batch. A
relay killed between publishing and deleting publishes that batch again on restart: consumers
de-duplicate by event id (and registry consumers by version), which is the contract. No transaction
stays open while the relay waits for the broker.

The outbox is sharded into a fixed number of slots by key hash (`OUTBOX_SLOTS`, one setting of the connection
that writers and relays both read): a key's rows are always in the same slot, and each slot is relayed by
whichever relay holds that slot's lock, oldest first. Several instances therefore publish in parallel while every
key keeps its commit order. A relay takes its share of the slots (the slots divided by the relays running, rounded
up), gives back what it holds beyond that share, and takes over the slots of a relay that stopped.

A writer that must not answer before the other services can read what it wrote (the registry: a status
created must be usable in the next request to another service) watches its rows (`OutboxRelay.watch`)
and waits, bounded, until they are published: the relay wakes it as soon as it deleted them, and when
another instance's relay holds their slot, the rows' absence from the outbox says the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from math import ceil
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter, Gauge, Histogram

from contracts.envelope import Envelope
from servicekit.db import DEFAULT_SLOTS, SLOTS_SETTING, DbConnection
from servicekit.polling import IdlePolls
from servicekit.tracing import trace_headers

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "outbox"
# The relays' wake-up. A write wakes its own process's relay in process once it committed (`committed`). It also
# notifies, with this process's token, for the relays of other instances (which skip their own process's
# notifications), unless its own relay holds every slot: then no other relay has anything to publish.
WRITER = uuid.uuid4().hex
_RELAYS: set[OutboxRelay] = set()  # the relays running in this process


def committed() -> None:
    """Outbox rows were just committed in this process: wake its relay now. A wake-up through PostgreSQL (the
    NOTIFY on commit) cost the server a lock at commit and a signal to the relay's backend, which wrote to the
    relay's socket, and the relay a wake-up of its own (docs/performance.md, issue 19). Every writer calls this
    after its commit (`unit_of_work` does, and orders' batch): a write that did not would wait for the poll."""
    for relay in _RELAYS:
        relay.wake()


def _notification() -> str | None:
    """The payload of a write's NOTIFY (this process's token), or None when none is needed: this process's relay
    holds every slot. Should it give slots back between this write and its commit, their new relay finds the rows
    on its next poll (`OUTBOX_POLL_INTERVAL_S`): a delay while the relays rebalance, never a loss. A service runs
    one relay, for the database it writes to; a process that wrote to another database's outbox while relaying one
    of its own would leave that database's relays to their poll the same way."""
    return None if any(relay.holds_every_slot for relay in _RELAYS) else WRITER


# The connection's slot count (`servicekit.db.SLOTS_SETTING`), read by writers and relays alike.
SLOT_COUNT = f"coalesce(nullif(current_setting('{SLOTS_SETTING}', true), ''), '{DEFAULT_SLOTS}')::int"
# A key's slot: its hash modulo the slots; records without a key go to slot 0.
SLOT_OF_KEY = f"coalesce((hashtext(encode(key, 'hex')) & 2147483647) % {SLOT_COUNT}, 0)"

# A relay holds, on its own connection (which it also reads and deletes with), the session lock (RELAY_LOCKS, slot)
# of every slot it publishes, and the shared lock (RELAY_LOCKS, RUNNING) that counts the relays running. Should
# that connection die, its locks go with it and so does every statement of the relay. The numbers are arbitrary
# but fixed; the two-key form of advisory locks never collides with the one-key form.
RELAY_LOCKS = 7_202_611
RUNNING = 2_147_483_647
JOIN_RELAYS = "SELECT pg_advisory_lock_shared($1, $2)"
COUNT_RELAYS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
    "AND classid = $1::int::oid AND objid = $2::int::oid "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
# Tries the given slots in turn and stops once it took $3 of them.
TAKE_SLOTS = "SELECT s FROM unnest($2::int[]) AS s WHERE pg_try_advisory_lock($1, s) LIMIT $3"
GIVE_SLOTS_BACK = "SELECT pg_advisory_unlock($1, s) FROM unnest($2::int[]) AS s"
GIVE_ALL_BACK = "SELECT pg_advisory_unlock_all()"
READ_SLOT_COUNT = f"SELECT {SLOT_COUNT}"

# A batch: the oldest $2 rows of the slots the relay holds ($1), in one statement (what it takes of a slot is that
# slot's oldest rows, so every key keeps its order), read outside any transaction (the slots' locks keep other
# relays away) and deleted once the broker acknowledged it. One read, one produce request and one delete per
# round, however many slots hold rows: read slot by slot, a round over four slots cost four reads and a send and a
# delete per slot with rows, and one commit's rows spread over the slots by key (docs/performance.md, issue 19).
# Neither may walk the queue's dead rows, whatever the plan (a test checks it): a sequential scan walked every dead
# row (11-28 ms per batch on the benchmark, up to 1.3 s, once deletes piled up faster than autovacuum removed them).
# The read probes `outbox_by_slot` by its leading column. The delete finds its rows by their addresses, a TID scan
# (as `ARRAY(SELECT ...)` the planner cannot count them, so a full batch never looks dearer than a sequential scan
# of a small table), with the ids as a guard that is no index condition (`id + 0`): a row that a VACUUM FULL moved
# is published again, never another row deleted in its place. By id alone the planner walked the whole of
# `outbox_by_slot` (its second column is the id) whenever the statistics said the queue was empty, as a queue's
# usually do when analyzed: 17-39 ms per batch on the benchmark at full speed, as long as orders' whole write.
TAKE_BATCH = (
    "SELECT b.* FROM unnest($1::int[]) AS s(slot), LATERAL (SELECT ctid, id, topic, key, payload, headers "
    "FROM outbox o WHERE o.slot = s.slot ORDER BY id LIMIT $2) AS b ORDER BY b.id LIMIT $2"
)
DELETE_PUBLISHED = "DELETE FROM outbox WHERE ctid = ANY(ARRAY(SELECT unnest($1::tid[]))) AND id + 0 = ANY($2::bigint[])"
RELAY_BATCH_SECONDS = Histogram(
    "outbox_relay_batch_seconds", "Time to publish one outbox batch: read, send, broker acknowledgements, delete"
)
RELAY_BATCH_RECORDS = Histogram(
    "outbox_relay_batch_records", "Records per published outbox batch", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500)
)
PUBLISH_WAIT_TIMEOUTS = Counter(
    "outbox_publish_wait_timeouts_total",
    "Writes that answered before the broker acknowledged their outbox records (the wait for them timed out)",
)
RELAY_SLOTS_HELD = Gauge("outbox_relay_slots_held", "Outbox slots this instance's relay holds and publishes")
STILL_PENDING = "SELECT id FROM outbox WHERE id = ANY($1::bigint[])"


@dataclass(frozen=True)
class OutboxRecord:
    topic: str
    key: bytes | None
    payload: bytes
    headers: Mapping[str, str]


def record_for(envelope: Envelope[Any], topic: str, key: bytes) -> OutboxRecord:
    """An outbox record for `envelope`, carrying the current trace context on to the consumers."""
    headers = {"ce_type": envelope.type, "ce_id": envelope.id, **trace_headers()}
    if envelope.partnerid:
        headers["partnerid"] = envelope.partnerid
    if envelope.correlationid:
        headers["correlationid"] = envelope.correlationid
    return OutboxRecord(topic=topic, key=key, payload=envelope.to_bytes(), headers=headers)


def outbox_insert(first: int) -> str:
    """`WITH` items that add outbox rows from the five parameters `$first`... (see `outbox_arguments`): the rows
    in their given order (ids follow it, and the relay publishes each slot in id order), each in its key's slot,
    and the relays' wake-up, which PostgreSQL delivers on commit only (for committed rows, never for rolled-back
    ones) and only when rows were added. A service can put them in the statement that writes its state: one
    round trip for both."""
    return (
        "outbox_added AS (INSERT INTO outbox (topic, key, payload, headers, slot) "
        f"SELECT topic, key, payload, headers::jsonb, {SLOT_OF_KEY} "
        f"FROM unnest(${first}::text[], ${first + 1}::bytea[], ${first + 2}::bytea[], ${first + 3}::text[]) "
        "WITH ORDINALITY AS r(topic, key, payload, headers, n) "
        "ORDER BY n RETURNING id), "
        f"outbox_woken AS (SELECT pg_notify('{NOTIFY_CHANNEL}', ${first + 4}::text) "
        f"FROM (SELECT count(*) AS n FROM outbox_added) AS a WHERE a.n > 0 AND ${first + 4}::text IS NOT NULL)"
    )


def outbox_arguments(records: Sequence[OutboxRecord]) -> list[Any]:
    return [
        [r.topic for r in records],
        [r.key for r in records],
        [r.payload for r in records],
        [json.dumps(dict(r.headers)) for r in records],
        _notification(),
    ]


ENQUEUE = f"WITH {outbox_insert(1)} SELECT ARRAY(SELECT id FROM outbox_added), (SELECT count(*) FROM outbox_woken)"


async def enqueue(conn: DbConnection, records: Sequence[OutboxRecord]) -> list[int]:
    """Add records to the outbox within the caller's open transaction; returns their ids (see `PublishWatch`)."""
    if not records:
        return []
    ids: list[int] = await conn.fetchval(ENQUEUE, *outbox_arguments(records))
    return ids


@dataclass
class UnitOfWork:
    """One transaction and the events it causes (`unit_of_work`): use `conn` for the state change, `publish` the
    events; they are written to the outbox in the same transaction, just before it commits."""

    conn: DbConnection
    events: list[OutboxRecord]
    committed: bool = False  # set once the transaction committed (even if giving the connection back fails after)

    def publish(self, envelope: Envelope[Any], topic: str, key: bytes) -> None:
        self.events.append(record_for(envelope, topic, key))

    def add(self, records: Iterable[OutboxRecord]) -> None:
        """Records made earlier (e.g. inside the span whose trace they carry on)."""
        self.events.extend(records)


@contextlib.asynccontextmanager
async def unit_of_work(
    pool: asyncpg.Pool, *, relay: OutboxRelay | None = None, publish_wait_s: float = 0.0
) -> AsyncIterator[UnitOfWork]:
    """A state change and the events it causes, committed together (the transactional outbox). With a `relay` and
    `publish_wait_s`, the block's exit also waits, at most that long, until the broker acknowledged the events
    (read-your-writes for another service: docs/architecture.md); on timeout the change stands and is published
    later. An exception rolls back both."""
    with contextlib.ExitStack() as stack:
        published = stack.enter_context(relay.watch()) if relay is not None else None
        async with pool.acquire() as conn:
            async with conn.transaction():
                work = UnitOfWork(conn, [])
                yield work
                ids = await enqueue(conn, work.events)
                if published is not None:
                    published.add(ids)
            work.committed = True
            if work.events:
                committed()
        if published is not None and work.events:
            await published.wait(publish_wait_s)


RELAY_REQUEST_BYTES = 1024 * 1024
"""The largest produce request and per-partition batch of a relay: a whole batch of the outbox in one request."""


def idempotent_producer(bootstrap_servers: str, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,  # forces acks=all; retries never duplicate or reorder within a partition
        # No lingering: the relay queues a whole batch before it waits, and records queued while a request
        # is in flight go together in the next one, so batching comes without the wait.
        linger_ms=0,
        max_request_size=RELAY_REQUEST_BYTES,
        # aiokafka's default (16 KB per partition) split a full relay batch into a queue of requests sent one
        # after another, each waiting for the previous acknowledgement (docs/performance.md, fix 18).
        max_batch_size=RELAY_REQUEST_BYTES,
    )


@dataclass
class _Session:
    """The relay's own connection, the number of slots, and the slots whose locks it holds (until it ends)."""

    conn: PoolConnectionProxy[asyncpg.Record]
    slots: int = 0
    held: list[int] = field(default_factory=list)
    share: int = 0
    counted_at: float = float("-inf")


class OutboxRelay:
    """Publishes the outbox of one database; run one per service instance (the slots' locks share the work)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        idle_poll_s: float | None = None,
    ) -> None:
        self._pool = pool
        self._sender = BatchSender(producer)
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        # The longest pause between two polls: while polls find nothing and nothing wakes the relay, each pause
        # doubles from `poll_interval_s` up to this (none: every poll interval; services: OUTBOX_IDLE_POLL_S).
        self._idle_poll_s = idle_poll_s or poll_interval_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._watches: set[PublishWatch] = set()
        self.published = 0
        self.held: tuple[int, ...] = ()
        """The slots this relay holds now (for tests and the metric)."""
        self.holds_every_slot = False

    async def run(self) -> None:
        """Publish until `stop`: on a connection of its own, which listens for the wake-up and holds the locks of
        the slots this relay took; a lost connection is replaced after a pause."""
        _RELAYS.add(self)
        try:
            while not self._stopping:
                try:
                    async with self._own_session() as session:
                        await session.conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                        await self._publish_until_stopped(session)
                except Exception as exc:  # the connection is gone (or could not be set up): try another after a pause
                    log.warning("outbox relay: its connection failed (%s: %s); reconnecting", type(exc).__name__, exc)
                    await self._sleep_until_woken()
        finally:
            _RELAYS.discard(self)

    def stop(self) -> None:
        """Finish the batch in flight, then return from `run`: cancelling mid-batch would republish it."""
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Look for rows now (this process committed some)."""
        self._wake.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, writer: object) -> None:
        if writer != WRITER:  # this process's own writes woke it already (`committed`)
            self._wake.set()

    @contextlib.contextmanager
    def watch(self) -> Iterator[PublishWatch]:
        """A watch for outbox rows about to be written: `add` their ids before the transaction commits (the relay
        cannot publish them sooner, so it cannot wake the watch too early), then `wait` after the commit."""
        watch = PublishWatch(self._pool)
        self._watches.add(watch)
        try:
            yield watch
        finally:
            self._watches.discard(watch)

    async def _publish_until_stopped(self, session: _Session) -> None:
        """Rounds until `stop`: at once after a full batch, else when woken or after a pause. Every write wakes its
        own process's relay and notifies the others, so the poll only covers a lost wake-up (a notification sent
        while the listener reconnected, slots changing hands between a write and its commit): while polls find
        nothing and nothing wakes the relay, the pause doubles up to `idle_poll_s` (`servicekit.polling`)."""
        polls = IdlePolls(self._poll_interval_s, self._idle_poll_s)
        while not self._stopping:
            published_before = self.published
            full = await self._publish_with_backoff(session)
            if full or self._stopping:
                continue
            if self.published > published_before:
                polls.found()
            await polls.wait(self._wake)

    async def _sleep_until_woken(self, timeout_s: float | None = None) -> bool:
        """Wait for a wake-up, at most `timeout_s` (the poll interval); whether one came."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s or self._poll_interval_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._wake.clear()

    async def _publish_with_backoff(self, session: _Session) -> bool:
        """One round over the slots; whether a slot had a full batch (more may be waiting)."""
        try:
            return await self._publish_round(session)
        except Exception as exc:
            if _gone(session.conn):
                raise  # the locks went with the connection: run() opens another one
            if isinstance(exc, OSError | asyncpg.PostgresError | TimeoutError):
                # Broker or database away: nothing was deleted, so the batch is retried after a pause.
                log.warning("outbox relay: %s: %s; retrying", type(exc).__name__, exc)
            else:
                log.exception("outbox relay: unexpected %s; retrying", type(exc).__name__)
            await asyncio.sleep(self._poll_interval_s)
            return False

    async def publish_batch(self) -> int:
        """Publish and delete one batch of every slot it could take, on a connection of its own that holds the
        slots for this call only; returns how many records went out (none from slots another relay holds)."""
        async with self._own_session() as session:
            await self._balance(session)
            published, _ = await self._publish_timed(session)
            return published

    @contextlib.asynccontextmanager
    async def _own_session(self) -> AsyncIterator[_Session]:
        session = _Session(await self._pool.acquire())
        try:
            session.slots = await session.conn.fetchval(READ_SLOT_COUNT)
            await session.conn.execute(JOIN_RELAYS, RELAY_LOCKS, RUNNING)
            yield session
        finally:
            self._holding(())
            await self._close(session)

    async def _close(self, session: _Session) -> None:
        conn = session.conn
        try:
            if not _gone(conn):
                # Now, for the next relay: the server would release them only once it noticed the closed socket.
                await conn.execute(GIVE_ALL_BACK)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("outbox relay: could not give its locks back (%s); closing its connection", exc)
        # Closed, not handed back as it is: the pool keeps no session state, and this one has a listener (and may
        # hold locks still). The pool opens a new connection when it needs one. A connection the server closed
        # went back to the pool by itself already.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()
        await self._pool.release(conn)

    async def _publish_round(self, session: _Session) -> bool:
        """Balance the slots, then one batch of the held slots together; whether it was full (more may wait)."""
        await self._balance(session)
        _, full = await self._publish_timed(session)
        return full

    async def _balance(self, session: _Session) -> None:
        """Hold this relay's share of the slots: recount the relays running at most once per poll interval, give
        back what is held beyond the share (between batches, so the next holder starts after the deleted rows),
        and try free slots, those of a relay that stopped included, while fewer than the share are held."""
        conn = session.conn
        now = time.monotonic()
        if now - session.counted_at >= self._poll_interval_s:
            relays = int(await conn.fetchval(COUNT_RELAYS, RELAY_LOCKS, RUNNING))
            session.share = ceil(session.slots / max(relays, 1))
            session.counted_at = now
            if len(session.held) > session.share:
                extra = session.held[session.share :]
                await conn.execute(GIVE_SLOTS_BACK, RELAY_LOCKS, extra)
                session.held = session.held[: session.share]
                log.info("outbox relay: gave back slots %s to the %d relays running", extra, relays)
        if len(session.held) < session.share:
            free = [slot for slot in range(session.slots) if slot not in session.held]
            wanted = session.share - len(session.held)
            taken = [row[0] for row in await conn.fetch(TAKE_SLOTS, RELAY_LOCKS, free, wanted)]
            if taken:
                session.held = sorted(session.held + taken)
                log.info("outbox relay: took slots %s (now holds %s of %d)", taken, session.held, session.slots)
        self._holding(session.held, session.slots)

    def _holding(self, slots: Iterable[int], of: int = 0) -> None:
        self.held = tuple(slots)
        self.holds_every_slot = of > 0 and len(self.held) == of
        RELAY_SLOTS_HELD.set(len(self.held))

    async def _publish_timed(self, session: _Session) -> tuple[int, bool]:
        """Publish a batch of the held slots; how many records went out, and whether the batch was full."""
        if not session.held:
            return 0, False
        started = time.perf_counter()
        published, full = await self._publish(session)
        if published:  # an empty poll is not a batch
            RELAY_BATCH_SECONDS.observe(time.perf_counter() - started)
            RELAY_BATCH_RECORDS.observe(published)
        return published, full

    async def _publish(self, session: _Session) -> tuple[int, bool]:
        # Each statement commits on its own: the rows are deleted only after the broker acknowledged every
        # record, so a failed send leaves them to publish again, and no transaction waits on the broker.
        rows = await session.conn.fetch(TAKE_BATCH, session.held, self._batch_size)
        if not rows:
            return 0, False
        await self._send_all(rows)
        ids = [row["id"] for row in rows]
        await session.conn.execute(DELETE_PUBLISHED, [row["ctid"] for row in rows], ids)
        self.published += len(rows)
        for watch in self._watches:
            watch.published(ids)
        return len(rows), len(rows) >= self._batch_size

    async def _send_all(self, rows: list[asyncpg.Record]) -> None:
        await self._sender.send_all(
            (
                row["topic"],
                bytes(row["key"]) if row["key"] is not None else None,
                bytes(row["payload"]),
                [(k, v.encode()) for k, v in json.loads(row["headers"]).items()],
            )
            for row in rows
        )


def _gone(conn: PoolConnectionProxy[asyncpg.Record]) -> bool:
    """Whether the connection closed; one the server closed went back to the pool already, and says so."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


class PublishWatch:
    """Outbox rows one unit of work wrote, and a bounded wait until the broker acknowledged all of them.

    The relay deletes rows only after the broker acknowledged them, so a row gone from the outbox was published.
    The relay of this process wakes the watch the moment it deleted the last of its rows; when another
    instance's relay holds their slot, the watch finds out by looking at the outbox, more rarely as time passes.
    """

    FIRST_CHECK_S = 0.01
    LAST_CHECK_S = 0.25

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._pending: set[int] = set()
        self._done = asyncio.Event()

    def add(self, ids: Iterable[int]) -> None:
        self._pending.update(ids)

    def published(self, ids: Collection[int]) -> None:
        """The relay published and deleted `ids` (called for every batch, whoever's rows they are)."""
        if self._pending and not self._pending.isdisjoint(ids):
            self._pending.difference_update(ids)
            if not self._pending:
                self._done.set()

    async def wait(self, timeout_s: float) -> bool:
        """Whether every row was published within `timeout_s`. On timeout the write stands (it is committed and
        will be published); the caller answers anyway, and the timeout is logged and counted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pause = self.FIRST_CHECK_S
        while self._pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                PUBLISH_WAIT_TIMEOUTS.inc()
                log.warning("outbox: %d record(s) not published after %.1fs", len(self._pending), timeout_s)
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), min(pause, remaining))
            if self._pending:
                await self._check_outbox()
            pause = min(pause * 2, self.LAST_CHECK_S)
        return True

    async def _check_outbox(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(STILL_PENDING, sorted(self._pending))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("outbox: could not check for published records: %s", exc)
            return
        self._pending &= {row["id"] for row in rows}


Outgoing: TypeAlias = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
"""A record to produce: topic, key, value, headers."""


class BatchSender:
    """Produces records in one aiokafka batch per partition, partitioned as `send` would (Kafka's default: the
    key's murmur2 hash): a future per batch instead of per record, about 10 us of CPU per record instead of 17 on
    the benchmark machine."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()

    async def send_all(self, records: Iterable[Outgoing]) -> None:
        """Queue every record, then wait for every acknowledgement: one round trip for them all, while the
        idempotent producer keeps each partition's order (a batch that fills up goes first, the next follows)."""
        batches: dict[TopicPartition, BatchBuilder] = {}
        futures: list[asyncio.Future[Any]] = []
        partitions: dict[str, list[int]] = {}
        for topic, key, value, headers in records:
            if topic not in partitions:
                partitions[topic] = sorted(await self._producer.partitions_for(topic))
            where = TopicPartition(topic, int(self._partitioner(key, partitions[topic], partitions[topic])))
            batch = batches.get(where)
            if batch is None or batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                if batch is not None:
                    futures.append(await self._send(where, batch))
                batch = batches[where] = self._producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a record of {len(value)} bytes for {topic} is larger than a produce batch")
        futures += [await self._send(where, batch) for where, batch in batches.items()]
        await asyncio.gather(*futures)

    async def _send(self, where: TopicPartition, batch: BatchBuilder) -> asyncio.Future[Any]:
        batch.close()  # ours alone: a `send` elsewhere on this producer must not append to it
        future: asyncio.Future[Any] = await self._producer.send_batch(batch, where.topic, partition=where.partition)
        return future


async def pending_count(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM outbox"))
